"""Latency of feed requests while the model is hot-reloaded under load, vs steady state (same run).

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_reload.py [--seconds 16] [--threads 4]
A real `feed serve` (one uvicorn worker) on the default world's bundle; client threads request feeds
continuously while `POST /v1/admin/reload?force=true` reloads (download, hash check, index load) and swaps the
model every 2 s. Requests that overlap a reload are compared with the others.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from feed.bundle import load_bundle  # noqa: E402
from feed.world import WorldParams, generate_world, save_world  # noqa: E402
from training.config import load_config  # noqa: E402
from training.pipeline import run_training  # noqa: E402

PORT, TOKEN = 8766, "bench-token"


def client(base: str, users: list[str], stop: threading.Event, out: list[tuple[float, float, int]]) -> None:
    """Request feeds until stopped; record (start, seconds, status)."""
    with httpx.Client(base_url=base, timeout=30) as http:
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            status = http.get(f"/v1/users/{users[i % len(users)]}/feed", params={"limit": 20}).status_code
            out.append((start, time.perf_counter() - start, status))
            i += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=16)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    save_world(generate_world(WorldParams()), work / "world")
    run_training(work / "world", load_config(environ={}), work / "bundle", track=False, quiet=True)
    users = list(load_bundle(work / "bundle").users.ids[:500])
    env = {**os.environ, "FEED_SERVE_ADMIN_TOKEN": TOKEN, "FEED_SERVE_STORE_URL": ""}
    proc = subprocess.Popen([sys.executable, "-m", "feed.cli", "serve", "--bundle", str(work / "bundle"), "--port",
                             str(PORT), "--no-sample", "--reload-interval", "0", "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{PORT}"
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    stop, records, reloads = threading.Event(), [], []
    threads = [threading.Thread(target=client, args=(base, users, stop, records)) for _ in range(args.threads)]
    for t in threads:
        t.start()
    end = time.perf_counter() + args.seconds
    time.sleep(2)
    while time.perf_counter() < end - 2:
        start = time.perf_counter()
        status = httpx.post(f"{base}/v1/admin/reload", params={"force": "true"},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).json()["status"]
        reloads.append((start, time.perf_counter(), status))
        time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    report(records, reloads)


def report(records: list[tuple[float, float, int]], reloads: list[tuple[float, float, str]]) -> None:
    """p50 / p99 / max of requests overlapping a reload vs the rest."""
    def overlaps(start: float, seconds: float) -> bool:
        return any(start < r_end and start + seconds > r_start for r_start, r_end, _ in reloads)

    groups = {"during a reload": [], "steady": []}
    for start, seconds, status in records:
        groups["during a reload" if overlaps(start, seconds) else "steady"].append((seconds, status))
    reload_ms = [1000 * (e - s) for s, e, _ in reloads]
    print(f"{len(reloads)} reloads ({', '.join(sorted({r[2] for r in reloads}))}), each {np.median(reload_ms):.0f} ms "
          f"(median) from request to swap")
    print("| requests | n | failed | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|")
    for name, rows in groups.items():
        ms = np.array([s for s, _ in rows]) * 1000
        failed = sum(status != 200 for _, status in rows)
        print(f"| {name} | {len(rows):,} | {failed} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} | "
              f"{ms.max():.1f} |")


if __name__ == "__main__":
    main()
