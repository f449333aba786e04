"""Choose each relation's FAISS index at catalog scale: recall@100 against exact search, and latency warm and cold.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_relation_index.py [--queries 1000] [--k 100] [--more]

The 1M-user × 1M-video bundle of `bench_feed_scale.py` (built and cached by it): 1,000,000 video vectors,
74,960 creator vectors and 375,000 product vectors (each the mean of its videos' ALS vectors), queried with the
vectors of 1,000 random users with interactions. One index type for every relation is not one quality: the same
`IVF1024,Flat` nprobe=16 that recalls 0.98 of the videos' top 100 recalls far less of the creators' (75 vectors
per list, and the lists a user needs are spread wider). Every candidate is built through `VectorIndex.build` and
searched through `VectorIndex.nearest`, as training and serving do. Latency: one query at a time at one FAISS
thread, k = the feed's quota (200 videos, 60 creators, 60 products); "warm" right after the previous query,
"cold" after writing 32 MB, as a feed's other work and the HTTP stack evict the caches between two searches of
one index in a server. Medians over 300 queries each. `nearest` scans `IVF…,Flat` indexes with its own kernel
(`feed.kernels.ivf`, marked "kernel"); the FAISS columns time FAISS's own search of the same index for the same
queries, taking turns with it query by query. The chosen configuration is the fastest cold one with
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

# 4-bit fast-scan PQ (11 sub-quantizers of 3 of the 33 coordinates), re-ranked exactly (RFlat) from 4× k
FAST_SCAN = "PQ11x4fs,RFlat"
CANDIDATES = {
    "video": [("IVF1024,Flat", "nprobe=16"), ("IVF1024,Flat", "nprobe=32"),
              (f"IVF1024,{FAST_SCAN}", "nprobe=16,k_factor_rf=4")],
    "creator": [("Flat", ""), ("IVF1024,Flat", "nprobe=16"), ("IVF256,Flat", "nprobe=32"), ("IVF256,Flat", "nprobe=64"),
                ("IVF128,Flat", "nprobe=16"), ("IVF128,Flat", "nprobe=32"), ("IVF64,Flat", "nprobe=16"),
                (f"IVF256,{FAST_SCAN}", "nprobe=64,k_factor_rf=4")],
    "product": [("IVF1024,Flat", "nprobe=16"), ("IVF256,Flat", "nprobe=24"), ("IVF128,Flat", "nprobe=8"),
                ("IVF128,Flat", "nprobe=12"), (f"IVF128,{FAST_SCAN}", "nprobe=12,k_factor_rf=4")],
}
# --more: finer steps around the chosen ones (more lists, more probes); the IVF4096 builds take ~45 s each
MORE = {
    "video": [("IVF2048,Flat", "nprobe=24"), ("IVF4096,Flat", "nprobe=32"), ("IVF4096,Flat", "nprobe=48")],
    "creator": [("IVF512,Flat", "nprobe=64"), ("IVF512,Flat", "nprobe=96"), ("IVF1024,Flat", "nprobe=96"),
                ("IVF1024,Flat", "nprobe=128")],
    "product": [("IVF1024,Flat", "nprobe=24"), ("IVF1024,Flat", "nprobe=32"), ("IVF512,Flat", "nprobe=16"),
                ("IVF512,Flat", "nprobe=24"), ("IVF2048,Flat", "nprobe=48")],
}
QUOTA = {"video": 200, "creator": 60, "product": 60}


def latency_us(index: VectorIndex, queries: np.ndarray, k: int, sweep: np.ndarray | None) -> tuple[float, float]:
    """Median µs of one `nearest` call and of FAISS's own search of the same index for the same (augmented, unit)
    query, both for each query, which one goes first alternating (the second finds the lists the first read in
    cache); the caches evicted before each call when `sweep` is given."""
    ours, theirs = [], []
    for i, vector in enumerate(queries):
        query = np.zeros(index.index.d, dtype=np.float32)
        query[:-1] = vector
        query /= max(float(np.linalg.norm(query)), 1e-30)
        calls = [(ours, lambda: index.nearest(vector, k)),
                 (theirs, lambda: index.index.search(query[None], min(k, index.ntotal)))]
        for times, search in calls if i % 2 == 0 else calls[::-1]:
            if sweep is not None:
                sweep += 1.0  # 32 MB written: what a feed's other work does to the caches
            start = time.perf_counter()
            search()
            times.append(time.perf_counter() - start)
    return float(np.median(ours) * 1e6), float(np.median(theirs) * 1e6)


def measure(relation: str, items: np.ndarray, queries: np.ndarray, k: int, sweep: np.ndarray,
            more: bool = False) -> list[dict]:
    """Every candidate index of one relation (and those of MORE with `more`): recall@k against exact, latency
    warm and cold, build seconds."""
    exact = exact_top_k(queries, items, k)
    rows = []
    for factory, params in CANDIDATES[relation] + (MORE[relation] if more else []):
        faiss.omp_set_num_threads(faiss.omp_get_max_threads())
        start = time.perf_counter()
        index = VectorIndex.build(items, factory, params)
        build = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        found = np.stack([np.pad(index.nearest(q, k), (0, k), constant_values=-1)[:k] for q in queries])
        warm, faiss_warm = latency_us(index, queries[:300], QUOTA[relation], None)
        cold, faiss_cold = latency_us(index, queries[300:600], QUOTA[relation], sweep)
        rows.append({"relation": relation, "factory": factory, "params": params, "recall": recall_at_k(found, exact),
                     "warm": warm, "cold": cold, "faiss_warm": faiss_warm, "faiss_cold": faiss_cold,
                     "compiled": index.compiled, "build": build})
    return rows


def main() -> None:
    from bench_feed_scale import build_bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--cache", type=Path, default=Path("data/generated/scale"))
    parser.add_argument("--more", action="store_true", help="also finer steps around the chosen configurations")
    args = parser.parse_args()
    bundle = load_bundle(build_bundle(args.cache))
    rng = np.random.default_rng(0)
    users = rng.choice(len(bundle.users), max(args.queries, 600), replace=False)
    sweep = np.zeros(8_000_000, dtype=np.float32)
    rows = [row for name, rel in bundle.relations.items()
            for row in measure(name, rel.item_factors, rel.user_factors[users], args.k, sweep, args.more)]
    print_table(rows, args)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """One row per candidate; the chosen one per relation in bold."""
    table = Table(title=f"each relation's index: recall@{args.k} vs exact ({args.queries} users), 1 thread, "
                        f"k = the feed's quota, medians")
    for column in ("relation", "factory", "search params", f"recall@{args.k}", "warm µs", "cold µs",
                   "FAISS warm µs", "FAISS cold µs", "cold / FAISS", "build s"):
        table.add_column(column, justify="right")
    for relation in dict.fromkeys(r["relation"] for r in rows):
        ok = [r for r in rows if r["relation"] == relation and r["recall"] >= args.target]
        best = min(ok, key=lambda r: r["cold"]) if ok else None
        for r in (r for r in rows if r["relation"] == relation):
            style = "bold" if r is best else None
            mark = " (kernel)" if r["compiled"] else ""
            table.add_row(relation, r["factory"], r["params"], f"{r['recall']:.4f}", f"{r['warm']:.1f}{mark}",
                          f"{r['cold']:.1f}{mark}", f"{r['faiss_warm']:.1f}", f"{r['faiss_cold']:.1f}",
                          f"{r['cold'] / r['faiss_cold']:.2f}×", f"{r['build']:.1f}", style=style)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
