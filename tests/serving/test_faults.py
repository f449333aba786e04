"""Faults under load, on a real `feed serve` process and PostgreSQL behind a TCP proxy we can cut:

- the store becomes unreachable: feeds keep being served from the model, event posts get 503 with Retry-After,
  and nothing is acknowledged that was not stored; the store comes back: the service recovers by itself;
- a model reload during load fails no request;
- SIGTERM: requests in flight finish (no connection is dropped mid-response), and the process exits cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from contextlib import suppress

import httpx
import pytest
import sqlalchemy as sa

from feed.bundle import load_bundle
from feed.store.store import EventStore
from tests.conftest import free_port
from tests.serving.test_durability import Server

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": "Bearer admin-token-for-the-fault-test"}


class Proxy:
    """A loopback TCP proxy to PostgreSQL that can refuse and drop every connection, then accept again."""

    def __init__(self, target_port: int) -> None:
        self.port, self.target = free_port(), target_port
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)

    def down(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)

    def stop(self) -> None:
        self.down()
        pending = asyncio.run_coroutine_threadsafe(self._cancel_pipes(), self.loop)
        pending.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _cancel_pipes(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()  # like a dead network: no goodbye
        self.writers.clear()

    async def _pipe(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            db_r, db_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.transport.abort()
            return
        self.writers |= {client_w, db_w}
        await asyncio.gather(self._copy(client_r, db_w), self._copy(db_r, client_w))

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self.writers.discard(writer)


class Load(threading.Thread):
    """Feeds and event posts in a loop until stopped; records every outcome."""

    def __init__(self, base: str, users: list[str], videos: list[str], name: str) -> None:
        super().__init__(daemon=True)
        self.base, self.users, self.videos, self.name = base, users, videos, name
        self.feeds: Counter = Counter()
        self.posts: Counter = Counter()
        self.acknowledged: list[str] = []
        self.retry_after: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            i = 0
            while not self.stopping.is_set():
                user = self.users[i % len(self.users)]
                self.feeds[self._get(client, f"/v1/users/{user}/feed")] += 1
                event_id = f"{self.name}-{i}"
                response = self._post(client, event_id, user, self.videos[i % len(self.videos)])
                self.posts[response] += 1
                i += 1

    def _get(self, client: httpx.Client, path: str) -> int | str:
        try:
            return client.get(path, params={"limit": 10}).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def _post(self, client: httpx.Client, event_id: str, user: str, video: str) -> int | str:
        event = {"event_id": event_id, "ts": int(time.time() * 1000), "user_id": user, "video_id": video,
                 "event": "view", "watch_ms": 1000}
        try:
            response = client.post("/v1/events", json=[event])
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if response.status_code == 200:
            self.acknowledged.append(event_id)
        elif response.status_code == 503:
            self.retry_after.add(response.headers.get("Retry-After", ""))
        return response.status_code


@pytest.fixture
def world(small_bundle_dir):
    bundle = load_bundle(small_bundle_dir)
    return list(bundle.manifest["sample_user_ids"])[:20], list(bundle.catalog.videos.ids[:50])


@pytest.fixture
def proxied(small_bundle_dir, postgres_schemas, tmp_path):
    url = postgres_schemas()
    target = sa.make_url(url).port or 5432
    proxy = Proxy(target)
    proxy.up()
    server = Server(small_bundle_dir, url.replace(f":{target}/", f":{proxy.port}/"), free_port(),
                    tmp_path / "server.log")
    server.env["FEED_SERVE_ADMIN_TOKEN"] = ADMIN["Authorization"].split()[1]
    server.start()
    yield server, proxy, url
    server.stop()
    proxy.stop()


def test_a_store_outage_serves_feeds_refuses_events_and_recovers(proxied, world):
    server, proxy, url = proxied
    load = Load(server.base, *world, name="outage")
    load.start()
    time.sleep(2)
    proxy.down()
    time.sleep(4)
    during = Counter(load.feeds), Counter(load.posts)
    proxy.up()
    deadline = time.monotonic() + 30
    while load.posts[200] <= during[1][200] + 5 and time.monotonic() < deadline:
        time.sleep(0.2)  # the service reconnects by itself: no restart, no request to help it
    load.stopping.set()
    load.join(30)
    assert load.posts[503] > 0 and load.retry_after == {"1"}  # the outage was seen and answered properly
    assert set(load.feeds) == {200}, load.feeds  # feeds never failed
    assert load.posts[200] > during[1][200] + 5, "event posts did not recover after the store came back"
    assert set(load.posts) <= {200, 503}, load.posts
    store = EventStore(url)
    stored = set(store.events()["event_id"])
    store.close()
    assert set(load.acknowledged) <= stored  # every acknowledged event is stored


def test_a_reload_during_load_fails_no_request(proxied, world):
    server, _, _ = proxied
    loads = [Load(server.base, *world, name=f"reload{i}") for i in range(2)]
    for load in loads:
        load.start()
    for _ in range(3):
        time.sleep(0.5)
        response = httpx.post(f"{server.base}/v1/admin/reload", params={"force": "true"}, headers=ADMIN, timeout=60)
        assert response.status_code == 200 and response.json()["status"] == "reloaded", response.text
    for load in loads:
        load.stopping.set()
        load.join(30)
    assert all(set(load.feeds) == {200} and set(load.posts) == {200} for load in loads), \
        [(load.feeds, load.posts) for load in loads]


def test_sigterm_lets_requests_in_flight_finish(proxied, world):
    server, _, url = proxied
    users, videos = world
    results: dict[int, int | str] = {}

    def post_batch(n: int) -> None:  # 1,000 events: long enough to be in flight when SIGTERM arrives
        events = [{"event_id": f"term-{n}-{i}", "ts": int(time.time() * 1000), "user_id": users[i % len(users)],
                   "video_id": videos[i % len(videos)], "event": "view", "watch_ms": 1000} for i in range(1000)]
        try:
            results[n] = httpx.post(f"{server.base}/v1/events", json=events, timeout=60).status_code
        except httpx.HTTPError as exc:
            results[n] = type(exc).__name__

    threads = [threading.Thread(target=post_batch, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    assert server.proc.wait(timeout=30) == 0  # a graceful stop is a normal exit
    assert list(results.values()) == [200] * 4, results
    store = EventStore(url)
    assert store.count("events") == 4000  # every acknowledged batch is stored, whole
    store.close()
