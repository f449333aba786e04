"""Choose each relation's FAISS index at catalog scale: recall@100 against exact search, and latency warm and cold.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_relation_index.py [--queries 1000] [--k 100]

The 1M-user × 1M-video bundle of `bench_feed_scale.py` (built and cached by it): 1,000,000 video vectors,
74,960 creator vectors and 375,000 product vectors (each the mean of its videos' ALS vectors), queried with the
vectors of 1,000 random users with interactions. One index type for every relation is not one quality: the same
`IVF1024,Flat` nprobe=16 that recalls 0.98 of the videos' top 100 recalls far less of the creators' (75 vectors
per list, and the lists a user needs are spread wider). Every candidate is built through `VectorIndex.build` and
searched through `VectorIndex.nearest`, as training and serving do. Latency: one query at a time at one FAISS
thread, k = the feed's quota (200 videos, 60 creators, 60 products); "warm" right after the previous query,
"cold" after writing 32 MB, as a feed's other work and the HTTP stack evict the caches between two searches of
one index in a server. Medians over 300 queries each. The chosen configuration is the fastest cold one with
recall@100 ≥ --target; bench_feed_scale.py serves it (RELATION_INDEX).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from feed.bundle import load_bundle  # noqa: E402
from feed.index import VectorIndex, exact_top_k, recall_at_k  # noqa: E402

CANDIDATES = {
    "video": [("IVF1024,Flat", "nprobe=16"), ("IVF1024,Flat", "nprobe=32")],
    "creator": [("Flat", ""), ("IVF1024,Flat", "nprobe=16"), ("IVF256,Flat", "nprobe=32"), ("IVF256,Flat", "nprobe=64"),
                ("IVF128,Flat", "nprobe=16"), ("IVF128,Flat", "nprobe=32"), ("IVF64,Flat", "nprobe=16")],
    "product": [("IVF1024,Flat", "nprobe=16"), ("IVF256,Flat", "nprobe=24"), ("IVF128,Flat", "nprobe=8"),
                ("IVF128,Flat", "nprobe=12")],
}
QUOTA = {"video": 200, "creator": 60, "product": 60}


def latency_us(index: VectorIndex, queries: np.ndarray, k: int, sweep: np.ndarray | None) -> float:
    """Median µs of one `nearest` call, the caches evicted before each when `sweep` is given."""
    times = []
    for vector in queries:
        if sweep is not None:
            sweep += 1.0  # 32 MB written: what a feed's other work does to the caches
        start = time.perf_counter()
        index.nearest(vector, k)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def measure(relation: str, items: np.ndarray, queries: np.ndarray, k: int, sweep: np.ndarray) -> list[dict]:
    """Every candidate index of one relation: recall@k against exact, latency warm and cold, build seconds."""
    exact = exact_top_k(queries, items, k)
    rows = []
    for factory, params in CANDIDATES[relation]:
        faiss.omp_set_num_threads(faiss.omp_get_max_threads())
        start = time.perf_counter()
        index = VectorIndex.build(items, factory, params)
        build = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        found = np.stack([np.pad(index.nearest(q, k), (0, k), constant_values=-1)[:k] for q in queries])
        rows.append({"relation": relation, "factory": factory, "params": params, "recall": recall_at_k(found, exact),
                     "warm": latency_us(index, queries[:300], QUOTA[relation], None),
                     "cold": latency_us(index, queries[300:600], QUOTA[relation], sweep), "build": build})
    return rows


def main() -> None:
    from bench_feed_scale import build_bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--cache", type=Path, default=Path("data/generated/scale"))
    args = parser.parse_args()
    bundle = load_bundle(build_bundle(args.cache))
    rng = np.random.default_rng(0)
    users = rng.choice(len(bundle.users), max(args.queries, 600), replace=False)
    sweep = np.zeros(8_000_000, dtype=np.float32)
    rows = [row for name, rel in bundle.relations.items()
            for row in measure(name, rel.item_factors, rel.user_factors[users], args.k, sweep)]
    print_table(rows, args)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """One row per candidate; the chosen one per relation in bold."""
    table = Table(title=f"each relation's index: recall@{args.k} vs exact ({args.queries} users), 1 thread, "
                        f"k = the feed's quota, medians")
    for column in ("relation", "factory", "search params", f"recall@{args.k}", "warm µs", "cold µs", "build s"):
        table.add_column(column, justify="right")
    for relation in dict.fromkeys(r["relation"] for r in rows):
        ok = [r for r in rows if r["relation"] == relation and r["recall"] >= args.target]
        best = min(ok, key=lambda r: r["cold"]) if ok else None
        for r in (r for r in rows if r["relation"] == relation):
            style = "bold" if r is best else None
            table.add_row(relation, r["factory"], r["params"], f"{r['recall']:.4f}", f"{r['warm']:.1f}",
                          f"{r['cold']:.1f}", f"{r['build']:.1f}", style=style)
    Console().print(table)


if __name__ == "__main__":
    main()
