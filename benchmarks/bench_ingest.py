"""Ingestion throughput (acknowledged = committed: SQLite WAL + synchronous=FULL, PostgreSQL commit) and feed
latency with and without the real-time refresh. Prints tables; medians of repeats.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_ingest.py [--postgres URL] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from feed.bundle import load_bundle  # noqa: E402
from feed.store.store import EventStore  # noqa: E402
from feed.world import WorldParams, generate_world, save_world  # noqa: E402
from serving.ingest import events_frame, parse_batch  # noqa: E402
from serving.model_source import load_model  # noqa: E402
from serving.settings import ServingSettings  # noqa: E402
from training.config import load_config  # noqa: E402
from training.pipeline import run_training  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def events(n: int, start: int, videos: list[str]) -> list[dict]:
    """n distinct view events as the app would post them."""
    return [{"event_id": f"bench-{start + i}", "ts": 1_795_300_000_000 + start + i, "user_id": f"u{(start + i) % 997}",
             "video_id": videos[(start + i) % len(videos)], "event": "view", "watch_ms": 4000} for i in range(n)]


def postgres_schema(url: str) -> str | None:
    """A fresh schema's URL, or None when PostgreSQL is unreachable."""
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
        name = f"feed_bench_{uuid.uuid4().hex[:8]}"
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        return sa.make_url(url).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(False)
    except sa.exc.OperationalError:
        return None


def direct_rate(url: str, size: int, seconds: float, videos: list[str]) -> float:
    """Events/s of EventStore.insert_events with batches of `size` (median over 1-second windows)."""
    store = EventStore(url)
    store.upgrade()
    rates, start, sent = [], 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        window, count = time.monotonic(), 0
        while time.monotonic() - window < 1.0:
            store.insert_events(events_frame(parse_batch(events(size, start + sent, videos))))
            sent, count = sent + size, count + size
        rates.append(count / (time.monotonic() - window))
    store.close()
    return statistics.median(rates)


def http_rate(base: str, size: int, seconds: float, videos: list[str], offset: int) -> float:
    """Events/s acknowledged by POST /v1/events with batches of `size`, one client (median of 1-s windows)."""
    payloads = [events(size, offset + k * size, videos) for k in range(int(seconds * 60000 / size) + 1)]
    rates, k = [], 0
    with httpx.Client(base_url=base, timeout=30) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and k < len(payloads):
            window, count = time.monotonic(), 0
            while time.monotonic() - window < 1.0 and k < len(payloads):
                assert client.post("/v1/events", json=payloads[k]).status_code == 200
                count, k = count + size, k + 1
            rates.append(count / (time.monotonic() - window))
    return statistics.median(rates)


def serve(bundle: Path, url: str, port: int) -> subprocess.Popen:
    """`feed serve` on a port, waited for."""
    env = {**os.environ, "FEED_SERVE_STORE_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "feed.cli", "serve", "--bundle", str(bundle), "--port", str(port),
                             "--no-sample", "--reload-interval", "0", "--log-level", "warning"], env=env)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def feed_latency(bundle: Path, url: str, repeat: int = 5) -> dict[str, float]:
    """µs per FeedService.feed for users with new events: no live state, live (cache miss), live (cache hit)."""
    store = EventStore(url)
    plain = load_model(ServingSettings(bundle=bundle, store_url=""), None).service
    live = load_model(ServingSettings(bundle=bundle, store_url=url), store).service
    users = [f"u{i}" for i in range(200)]  # they all have events from the ingestion runs
    known = list(load_bundle(bundle).users.ids[:200])

    def timed(service, ids) -> float:
        return statistics.median(_time(lambda: [service.feed(u, 20) for u in ids]) for _ in range(repeat)) / len(ids)

    result = {"no real time, known users": timed(plain, known)}
    result["real time, cache miss (fold-in)"] = _time(lambda: [live.feed(u, 20) for u in users]) / len(users)
    result["real time, cache hit"] = timed(live, users)
    store.close()
    return {k: v * 1e6 for k, v in result.items()}


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    save_world(generate_world(WorldParams()), work / "world")
    run_training(work / "world", load_config(environ={}), work / "bundle", track=False, quiet=True)
    videos = list(load_bundle(work / "bundle").catalog.videos.ids[:2000])
    backends = {"SQLite": f"sqlite:///{work / 'direct.db'}", "PostgreSQL": postgres_schema(args.postgres)}
    print("| store | batch | EventStore.insert_events events/s | POST /v1/events events/s (1 client) | HTTP / direct |")
    print("|---|---:|---:|---:|---:|")
    offset = 10**9
    for name, url in backends.items():
        if url is None:
            print(f"| {name} | — | unreachable | | |")
            continue
        http_url = f"sqlite:///{work / 'http.db'}" if name == "SQLite" else postgres_schema(args.postgres)
        proc = serve(work / "bundle", http_url, 8765)
        for size in (100, 1000):
            direct = direct_rate(url, size, args.seconds, videos)
            http = http_rate("http://127.0.0.1:8765", size, args.seconds, videos, offset)
            offset += 10**7
            print(f"| {name} | {size} | {direct:,.0f} | {http:,.0f} | {http / direct:.2f} |")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        if name == "SQLite":
            latency_url = http_url
    print("\n| feed (limit 20, default world, in process) | µs per request (median) |\n|---|---:|")
    for label, micros in feed_latency(work / "bundle", latency_url).items():
        print(f"| {label} | {micros:,.0f} |")


if __name__ == "__main__":
    main()
