"""Mixed load and soak against two `feed serve` replicas sharing one PostgreSQL store (traffic on loopback only).

Traffic: feeds (70 %), event batches of 10 views/shares/purchases (20 %), creator stats (10 %), from --clients
concurrent asyncio clients spread over both replicas, for --seconds. Prints requests/s and p50/p99 per route, the
error count, and each replica's memory (RSS) after the warm-up and at the end: a soak passes when no replica grows
by more than 10 %.

Usage: python benchmarks/bench_load.py [--seconds 60] [--clients 8] [--users 5000] [--sample 60] [--postgres URL]
       python benchmarks/bench_load.py --seconds 600   # the 10-minute soak
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

ADMIN = "admin-token-for-the-load-benchmark"
FEED = [sys.executable, "-m", "feed.cli"]


def prepare(work: Path, users: int) -> Path:
    """Generate a world and train a bundle (no MLflow); returns the bundle folder."""
    scale = dict(users=users, creators=max(users // 20, 10), products=max(users // 4, 20), videos=users)
    args = [f"--{k}={v}" for k, v in scale.items()]
    subprocess.run([*FEED, "generate", "--out", str(work / "world"), *args, "--days", "21"], check=True,
                   capture_output=True)
    subprocess.run([*FEED, "train", "--data", str(work / "world"), "--out", str(work / "bundle"), "--no-track"],
                   check=True, capture_output=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    return work / "bundle"


def schema_url(postgres: str) -> str:
    """A new, empty schema on the PostgreSQL server."""
    name = f"bench_load_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(postgres)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    engine.dispose()
    return sa.make_url(postgres).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
        hide_password=False)


def start_replicas(bundle: Path, url: str, work: Path, n: int = 2) -> list[tuple[subprocess.Popen, str]]:
    """n `feed serve` processes on free ports; waits until each is ready."""
    env = {**os.environ, "FEED_SERVE_STORE_URL": url, "FEED_SERVE_ADMIN_TOKEN": ADMIN, "OPENBLAS_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}  # see BENCHMARKS: glibc arenas per thread
    replicas = []
    for i in range(n):
        port = _free_port()
        log = (work / f"replica{i}.log").open("w")
        proc = subprocess.Popen([*FEED, "serve", "--bundle", str(bundle), "--port", str(port), "--no-sample",
                                 "--reload-interval", "0", "--log-level", "warning"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        replicas.append((proc, f"http://127.0.0.1:{port}"))
        _wait_ready(f"http://127.0.0.1:{port}", proc)
        if i == 0:
            subprocess.run([*FEED, "db", "load", "--store", url, "--data", str(bundle.parent / "world")],
                           check=True, capture_output=True)  # the catalog, so that stats and purchases resolve
    return replicas


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"replica at {base} exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit(f"replica at {base} not ready")


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Traffic:
    """The mixed requests, their latencies per route and their failures."""

    def __init__(self, bases: list[str], users: list[str], videos: list[str], creators: list[str]) -> None:
        self.bases, self.users, self.videos, self.creators = bases, users, videos, creators
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)

    async def client(self, index: int, until: float) -> None:
        """One connection's loop of requests until `until`."""
        rng = random.Random(index)
        async with httpx.AsyncClient(base_url=self.bases[index % len(self.bases)], timeout=30) as http:
            while time.monotonic() < until:
                route, call = self._pick(rng)
                start = time.perf_counter()
                try:
                    response = await call(http)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latency[route].append(time.perf_counter() - start)
                self.errors[route] += not ok

    def _pick(self, rng: random.Random):
        """(route name, request coroutine factory) by the traffic mix."""
        draw = rng.random()
        if draw < 0.7:
            user = rng.choice(self.users)
            return "GET feed", lambda h: h.get(f"/v1/users/{user}/feed", params={"limit": 20})
        if draw < 0.9:
            return "POST events (10)", lambda h: h.post("/v1/events", json=self._batch(rng))
        creator = rng.choice(self.creators)
        return "GET creator stats", lambda h: h.get(f"/v1/creators/{creator}/stats",
                                                    headers={"Authorization": f"Bearer {ADMIN}"})

    def _batch(self, rng: random.Random) -> list[dict]:
        """10 events: mostly views, some shares and purchases."""
        now, events = int(time.time() * 1000), []
        for _ in range(10):
            kind = rng.choices(["view", "share", "purchase"], [0.85, 0.1, 0.05])[0]
            event = {"ts": now, "user_id": rng.choice(self.users), "video_id": rng.choice(self.videos),
                     "event": kind, "event_id": uuid.uuid4().hex}
            if kind == "view":
                event["watch_ms"] = rng.randint(500, 60_000)
            elif kind == "share":
                event["share_id"] = uuid.uuid4().hex
            else:
                event.update(order_id=uuid.uuid4().hex, amount=round(rng.uniform(5, 100), 2))
            events.append(event)
        return events


async def visit_every_user(traffic: Traffic, clients: int, base: str) -> None:
    """One feed per user of the pool from one replica, so that its per-user caches are full."""
    queue = list(traffic.users)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            while queue:
                await http.get(f"/v1/users/{queue.pop()}/feed", params={"limit": 20})

    await asyncio.gather(*(worker() for _ in range(clients)))


async def run_load(traffic: Traffic, clients: int, seconds: float) -> None:
    """All clients for `seconds`."""
    until = time.monotonic() + seconds
    await asyncio.gather(*(traffic.client(i, until) for i in range(clients)))


def report(traffic: Traffic, seconds: float, memory: list[tuple[float, float]], args: argparse.Namespace) -> None:
    """Print the per-route table and the memory table."""
    table = Table(title=f"Mixed load: 2 replicas on PostgreSQL, {args.clients} clients, {seconds:.0f} s")
    for column in ("route", "requests/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right")
    for route, times in sorted(traffic.latency.items()):
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        table.add_row(route, f"{len(times) / seconds:.0f}", f"{statistics.median(ordered) * 1000:.1f}",
                      f"{p99 * 1000:.1f}", str(traffic.errors[route]))
    console = Console()
    console.print(table)
    for i, (start, end) in enumerate(memory):
        growth = (end - start) / start
        verdict = "ok" if growth <= 0.10 else "GREW > 10 %"
        console.print(f"replica {i}: RSS {start:.0f} MiB after warm-up → {end:.0f} MiB at the end "
                      f"({growth:+.1%}) {verdict}")


def print_samples(samples: list[list[float]], every: float) -> None:
    """RSS of each replica over the run: a leak keeps climbing, a cache or allocator settles."""
    table = Table(title="RSS (MiB) during the run")
    table.add_column("seconds", justify="right")
    for i in range(len(samples[0])):
        table.add_column(f"replica {i}", justify="right")
    for k, row in enumerate(samples):
        table.add_row(f"{k * every:.0f}", *[f"{v:.0f}" for v in row])
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--pool", type=int, default=2000, help="Users the clients act as.")
    parser.add_argument("--sample", type=float, default=60, help="Seconds between RSS samples during the run.")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = prepare(work, args.users)
        replicas = start_replicas(bundle, schema_url(args.postgres), work)
        try:
            import pandas as pd

            videos = pd.read_parquet(work / "world" / "videos.parquet")
            users = pd.read_parquet(work / "world" / "events.parquet", columns=["user_id"])["user_id"].unique()
            traffic = Traffic([b for _, b in replicas], list(users[:args.pool]), list(videos["video_id"]),
                              list(videos["creator_id"].unique()))
            for base in traffic.bases:  # caches full before memory is measured: growth then means a leak
                asyncio.run(visit_every_user(traffic, args.clients, base))
            asyncio.run(run_load(traffic, args.clients, args.warmup))
            traffic.latency.clear()
            traffic.errors.clear()
            start = [rss_mib(p.pid) for p, _ in replicas]
            samples = [start]
            for _ in range(max(1, round(args.seconds / args.sample))):  # RSS after every --sample seconds
                asyncio.run(run_load(traffic, args.clients, args.seconds / max(1, round(args.seconds / args.sample))))
                samples.append([rss_mib(p.pid) for p, _ in replicas])
            end = samples[-1]
            report(traffic, args.seconds, list(zip(start, end, strict=True)), args)
            print_samples(samples, args.seconds / (len(samples) - 1))
        finally:
            for proc, _ in replicas:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
