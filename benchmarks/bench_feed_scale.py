"""Feed throughput and latency at catalog scale (1M videos, 1M users) against a bare one-search endpoint.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_feed_scale.py [--seconds 10] [--rounds 3] [--connections 8]

1. The model: the cached 1M-user × 1M-video world and its ALS video factors (`benchmarks/scale_model.py`);
   creator and product vectors are the means of their videos' vectors; stats (trends, priors, segments, user
   context) are computed from the world's events; each relation has the index `bench_relation_index.py` chose
   (RELATION_INDEX: recall@100 ≥ 0.95 on each); each video's 40 nearest videos are stored as training stores
   them (`index.neighbours`); the ranker has the product's shape with seeded random weights (latency does not
   depend on the weights). The bundle is written once under data/generated/scale/.
2. Two uvicorn servers, one worker each: `feed serve --bundle` (the whole pipeline: 3 FAISS searches, 8 sources,
   features, ranker, value, caps, MMR, slots, cursor) and a bare app that looks the user's vector up, does one
   FAISS search and returns 20 ids, twice: as a plain `def` (FastAPI runs it in its thread pool, the usual way for
   a blocking call) and as an `async def` on the event loop (no thread hand-off, as the feed route ranks).
3. A load generator on loopback (wrk when installed, else a Python client) with N connections for a bounded time,
   random users among those with vectors plus 10 % unknown ones. The endpoints take turns, round after round (the
   machine's speed drifts), each after a 3 s warm-up; the table gives the medians over the rounds of requests/s and
   p50/p90/p99 latency, and the medians of each round's feed/bare ratios. Each server's CPU time over each window
   (user + system, all its threads, from /proc) gives its CPU µs per request and the cores it kept busy: the feed
   ranks on its event loop (one core at most), the `def` bare endpoint searches in FastAPI's thread pool (FAISS
   releases the GIL, so it can use a little of the second core).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from feed.bundle import Bundle, RelationModel, write_bundle  # noqa: E402
from feed.dataset import IdMap  # noqa: E402
from feed.features import FEATURES  # noqa: E402
from feed.index import VectorIndex  # noqa: E402
from feed.ranker import HEADS, Ranker, ValueFormula  # noqa: E402
from feed.stats import StatsConfig, compute_stats  # noqa: E402
from training.config import IndexConfig  # noqa: E402

console = Console(stderr=True)
LUA = """
local users = {}
for line in io.lines(os.getenv("BENCH_USERS")) do users[#users + 1] = line end
local template = os.getenv("BENCH_PATH")
math.randomseed(7)
request = function()
  return wrk.format("GET", string.format(template, users[math.random(#users)]))
end
"""


def mean_vectors(owner: np.ndarray, n_owners: int, vectors: np.ndarray) -> np.ndarray:
    """(n_owners, dim) mean of the vectors of each owner's rows (zeros for owners without any)."""
    keep = owner >= 0
    sums = np.zeros((n_owners, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owner[keep], vectors[keep])
    counts = np.bincount(owner[keep], minlength=n_owners)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def relation(users: np.ndarray, items: np.ndarray, factory: str, params: str, neighbours: int = 0) -> RelationModel:
    """One relation with its index (and each item's nearest items, as training stores them for videos); no
    training history (the benchmark serves without a store)."""
    start = time.perf_counter()
    index = VectorIndex.build(items, factory, params)
    console.print(f"  index {factory} over {len(items):,} vectors in {time.perf_counter() - start:.1f}s")
    start = time.perf_counter()
    near = index.neighbours(items, neighbours) if neighbours else None
    if neighbours:
        console.print(f"  {neighbours} nearest items of each of them in {time.perf_counter() - start:.1f}s")
    return RelationModel(users, items, index, sp.csr_matrix((len(users), len(items)), dtype=np.float32),
                         neighbours=near)


def random_ranker(seed: int = 0, hidden: int = 32) -> Ranker:
    """The product's ranker shape with seeded weights."""
    rng = np.random.default_rng(seed)
    f = len(FEATURES)
    return Ranker(FEATURES, np.zeros(f, np.float32), np.ones(f, np.float32),
                  (rng.normal(size=(f, hidden)) / np.sqrt(f)).astype(np.float32), np.zeros(hidden, np.float32),
                  (rng.normal(size=(hidden, len(HEADS))) / np.sqrt(hidden)).astype(np.float32),
                  np.array([-1.0, -4.0, -5.0], np.float32))


# each relation's index, chosen by benchmarks/bench_relation_index.py (recall@100 >= 0.95, fastest cold)
RELATION_INDEX = {"video": ("IVF1024,Flat", "nprobe=16"), "creator": ("IVF256,Flat", "nprobe=64"),
                  "product": ("IVF128,Flat", "nprobe=12")}


def build_bundle(folder: Path, indexes: dict[str, tuple[str, str]] | None = None) -> Path:
    """The 1M × 1M bundle (cached by index choice)."""
    from scale_model import scale_factors

    indexes = indexes or RELATION_INDEX
    key = "-".join(f"{f.replace(',', '_')}{p.replace('=', '')}" for f, p in indexes.values())
    target = folder / f"bundle-{key}-n{IndexConfig().neighbours}"
    if (target / "manifest.json").is_file():
        return target
    scale = scale_factors()
    catalog = scale.catalog()
    console.print(f"building the bundle: {len(scale.user_ids):,} users with vectors, {len(catalog.videos):,} videos")
    video_users, videos = scale.user_factors, scale.item_factors
    relations = {
        "video": relation(video_users, videos, *indexes["video"], IndexConfig().neighbours),
        "creator": relation(video_users, mean_vectors(catalog.video_creator, len(catalog.creators), videos),
                            *indexes["creator"]),
        "product": relation(video_users, mean_vectors(catalog.video_product, len(catalog.products), videos),
                            *indexes["product"]),
    }
    users = IdMap(scale.user_ids.astype(object))
    events = pd.read_parquet(scale.world_dir / "events.parquet", filters=[("event", "!=", "impression")])
    stats = compute_stats(events, catalog, users, video_users, StatsConfig())
    empty = sp.csr_matrix((len(users), len(catalog.videos)), dtype=np.float32)
    bundle = Bundle(users, catalog, stats.video_counts["views"], relations, empty,
                    sp.csr_matrix((len(users), len(catalog.products)), dtype=np.float32), stats=stats,
                    ranker=random_ranker())
    write_bundle(bundle, target, {"value_formula": ValueFormula().to_dict(), "sample_user_ids": [],
                                  "benchmark": "bench_feed_scale"})
    return target


def bare_app():  # noqa: ANN201 - uvicorn factory
    """One FAISS search of the user's video vector, 20 ids back: the floor the feed is compared with."""
    from fastapi import FastAPI

    from feed.bundle import load_bundle

    bundle = load_bundle(Path(os.environ["BENCH_BUNDLE"]))
    import faiss

    faiss.omp_set_num_threads(1)
    users, video = bundle.users, bundle.relations["video"]
    ids = bundle.catalog.videos.ids
    app = FastAPI()

    def nearest(user_id: str) -> dict:
        row = users.row(user_id)
        rows, _ = video.index.search(video.user_factors[max(row, 0)], 20)
        return {"user_id": user_id, "video_ids": [str(v) for v in ids[rows[0]]]}

    @app.get("/bare/{user_id}")
    def bare(user_id: str) -> dict:
        """FastAPI's way for a blocking call: a plain def, run in the thread pool."""
        faiss.omp_set_num_threads(1)  # OpenMP settings are per thread: no oversubscription
        return nearest(user_id)

    @app.get("/bare-async/{user_id}")
    async def bare_async(user_id: str) -> dict:
        """The same on the event loop (no thread hand-off), as the feed route ranks."""
        return nearest(user_id)

    return app


def start(command: list[str], env: dict[str, str], port: int, ready: str) -> subprocess.Popen:
    """Start a server and wait until `ready` answers 200."""
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become ready in 10 minutes")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM and wait."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def load(port: int, path: str, users_file: Path, seconds: int, connections: int,
         pid: int | None = None) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from wrk, or from the Python client without wrk; with the server's
    `pid`, also its CPU µs per request and the cores it used (user + system time of all its threads over the
    window, divided by the requests served and by the window)."""
    began, cpu = time.perf_counter(), cpu_seconds(pid) if pid else 0.0
    numbers = _wrk(port, path, users_file, seconds, connections) if shutil.which("wrk") else \
        python_load(port, path, users_file, seconds, connections)
    if pid:
        used, wall = cpu_seconds(pid) - cpu, time.perf_counter() - began
        numbers.update(cpu_us=used / max(numbers["requests"], 1) * 1e6, cores=used / wall)
    return numbers


def _wrk(port: int, path: str, users_file: Path, seconds: int, connections: int) -> dict[str, float]:
    """wrk's requests/s, requests served, latency percentiles (ms) and non-2xx answers."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    env = {**os.environ, "BENCH_USERS": str(users_file), "BENCH_PATH": path}
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
               script.name, f"http://127.0.0.1:{port}"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    rps, served = wrk_counts(out)
    return {"rps": rps, "requests": served, "p50": _wrk_ms(out, "50%"), "p90": _wrk_ms(out, "90%"),
            "p99": _wrk_ms(out, "99%"),
            "errors": float(sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out)))}


def wrk_counts(out: str) -> tuple[float, float]:
    """wrk's requests/s and the number of requests it completed, from its report."""
    return (float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            float(re.search(r"(\d+) requests in", out).group(1)))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process (all its threads) so far, from /proc; NaN without /proc (not
    Linux): the CPU columns then read nan."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.is_file():
        return float("nan")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def _wrk_ms(out: str, percentile: str) -> float:
    """A latency percentile of wrk's --latency table in milliseconds."""
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def python_load(port: int, path: str, users_file: Path, seconds: int, connections: int) -> dict[str, float]:
    """A threaded httpx client (it competes with the server for the 2 cores: prefer wrk)."""
    import threading

    users = users_file.read_text().split()
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            while time.monotonic() < stop_at:
                begin = time.perf_counter()
                http.get(path % users[rng.integers(len(users))])
                latencies.append(time.perf_counter() - begin)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = np.array(latencies) * 1000
    return {"rps": len(ms) / seconds, "requests": float(len(ms)), "p50": float(np.percentile(ms, 50)),
            "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)), "errors": 0.0}


ENDPOINTS = ("feed", "bare", "bare-async")
LABELS = {"feed": "feed (whole pipeline)", "bare": "bare: one FAISS search (def, thread pool)",
          "bare-async": "bare: one FAISS search (async def, on the loop)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per endpoint and round")
    parser.add_argument("--rounds", type=int, default=3, help="the endpoints take turns this many times")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("data/generated/scale"))
    parser.add_argument("--build-only", action="store_true", help="build (and cache) the bundle, then stop")
    args = parser.parse_args()
    bundle_dir = build_bundle(args.cache)
    if args.build_only:
        return
    users_file = write_users(bundle_dir)
    servers = start_servers(bundle_dir)
    try:
        rounds = measure(servers, users_file, args)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    print_table(rounds, args)


def write_users(bundle_dir: Path) -> Path:
    """20,000 random users with vectors and 2,000 unknown ones, one per line (what the load generator asks for)."""
    users = pd.read_parquet(bundle_dir / "users.parquet")["user_id"].to_numpy()
    rng = np.random.default_rng(0)
    sample = [*rng.choice(users, 20_000, replace=False), *(f"nobody-{i}" for i in range(2_000))]
    users_file = bundle_dir.parent / "bench_users.txt"
    users_file.write_text("\n".join(map(str, sample)))
    return users_file


def start_servers(bundle_dir: Path) -> dict[str, tuple[subprocess.Popen, str]]:
    """Both servers (the feed service and the bare app), each one uvicorn worker; endpoint -> (process, url)."""
    feed_cmd = [str(Path(sys.executable).with_name("feed")), "serve", "--bundle", str(bundle_dir), "--store", "",
                "--reload-interval", "0", "--port", "8771", "--no-sample", "--log-level", "warning"]
    bare_cmd = [sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(Path(__file__).parent),
                "bench_feed_scale:bare_app", "--port", "8772", "--log-level", "warning", "--no-access-log"]
    began = time.perf_counter()
    feed = start(feed_cmd, {}, 8771, "/readyz")
    bare = start(bare_cmd, {"BENCH_BUNDLE": str(bundle_dir)}, 8772, "/docs")
    console.print(f"servers ready in {time.perf_counter() - began:.1f}s")
    return {"feed": (feed, "8771:/v1/users/%s/feed?limit=20"), "bare": (bare, "8772:/bare/%s"),
            "bare-async": (bare, "8772:/bare-async/%s")}


def measure(servers: dict[str, tuple[subprocess.Popen, str]], users_file: Path,
            args: argparse.Namespace) -> list[dict[str, dict[str, float]]]:
    """Each round loads every endpoint in turn (after a 3 s warm-up each): round -> endpoint -> numbers."""
    rounds = []
    for r in range(args.rounds):
        results = {}
        for name in ENDPOINTS:
            port, path = servers[name][1].split(":", 1)
            load(int(port), path, users_file, 3, args.connections)
            pid = servers[name][0].pid
            results[name] = load(int(port), path, users_file, args.seconds, args.connections, pid)
            console.print(f"  round {r + 1}: {name} {results[name]['rps']:,.0f} requests/s, "
                          f"p99 {results[name]['p99']:.1f} ms, {results[name]['cpu_us']:,.0f} CPU µs/request, "
                          f"{results[name]['cores']:.2f} cores")
        rounds.append(results)
    return rounds


def print_table(rounds: list[dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    """Medians over the rounds per endpoint, and the medians of each round's feed/bare ratios."""
    table = Table(title=f"1M videos × 1M users, {args.connections} connections, {args.rounds} rounds of "
                        f"{args.seconds}s per endpoint, indexes {RELATION_INDEX}, one uvicorn worker "
                        f"each (medians over the rounds)")
    for column in ("endpoint", "requests/s", "p50 ms", "p90 ms", "p99 ms", "server CPU µs/request", "server cores",
                   "non-2xx"):
        table.add_column(column, justify="right")
    median = (lambda name, key: float(np.median([r[name][key] for r in rounds])))
    for name in ENDPOINTS:
        table.add_row(LABELS[name], f"{median(name, 'rps'):,.0f}", f"{median(name, 'p50'):.2f}",
                      f"{median(name, 'p90'):.2f}", f"{median(name, 'p99'):.2f}", f"{median(name, 'cpu_us'):,.0f}",
                      f"{median(name, 'cores'):.2f}", f"{sum(r[name]['errors'] for r in rounds):.0f}")
    for bare in ("bare", "bare-async"):
        ratio = (lambda key: float(np.median([r["feed"][key] / r[bare][key] for r in rounds])))
        table.add_row(f"feed / {bare}", f"{ratio('rps'):.2f}×", f"{ratio('p50'):.2f}×", f"{ratio('p90'):.2f}×",
                      f"{ratio('p99'):.2f}×", f"{ratio('cpu_us'):.2f}×", "", "")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
