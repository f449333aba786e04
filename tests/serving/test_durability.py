"""Nothing acknowledged is lost: SIGKILL the server mid-stream, restart it, and every acknowledged event is in
the store exactly once after the client's retries (SQLite with WAL + synchronous=FULL, and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from feed.store.store import EventStore
from tests.conftest import free_port

pytestmark = pytest.mark.slow
BATCH = 100


class Server:
    """`feed serve` in a subprocess on a fixed port, restartable."""

    def __init__(self, bundle: Path, store_url: str, port: int, log: Path) -> None:
        self.args = [sys.executable, "-m", "feed.cli", "serve", "--bundle", str(bundle), "--port", str(port),
                     "--no-sample", "--reload-interval", "0", "--log-level", "warning"]
        self.env = {**os.environ, "FEED_SERVE_STORE_URL": store_url}
        self.base, self.log, self.proc = f"http://127.0.0.1:{port}", log, None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(self.log.read_text()[-3000:])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=30)


def batch(number: int) -> list[dict]:
    return [{"event_id": f"b{number}-{i}", "ts": 1_795_300_000_000 + number * BATCH + i, "user_id": f"u{i % 17}",
             "video_id": f"v{i % 50}", "event": "view", "watch_ms": 500} for i in range(BATCH)]


class Client(threading.Thread):
    """Posts numbered batches in order, retrying each until acknowledged; records what was acknowledged."""

    def __init__(self, base: str, batches: int) -> None:
        super().__init__(daemon=True)
        self.base, self.batches = base, batches
        self.acknowledged: list[int] = []
        self.failures = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            for number in range(self.batches):
                while True:
                    try:
                        response = client.post("/v1/events", json=batch(number))
                        if response.status_code == 200:
                            self.acknowledged.append(number)
                            break
                    except httpx.TransportError:
                        pass
                    self.failures += 1
                    time.sleep(0.05)


def test_sigkill_mid_stream_loses_no_acknowledged_event(small_bundle_dir, store_url, tmp_path):
    server = Server(small_bundle_dir, store_url, free_port(), tmp_path / "serve.log")
    server.start()
    client = Client(server.base, batches=60)
    try:
        client.start()
        while len(client.acknowledged) < 15:
            time.sleep(0.01)
        server.kill()  # mid-stream: the batch in flight may or may not have been committed
        killed_at = len(client.acknowledged)
        time.sleep(0.5)
        server.start()
        client.join(timeout=120)
        assert not client.is_alive() and client.failures > 0 and killed_at < 60
    finally:
        server.stop()
    assert client.acknowledged == list(range(60))
    store = EventStore(store_url)
    stored = store.events()
    store.close()
    expected = {f"b{n}-{i}" for n in client.acknowledged for i in range(BATCH)}
    assert len(stored) == len(expected) == stored["event_id"].nunique()
    assert set(stored["event_id"]) == expected
