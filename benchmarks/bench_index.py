"""Choose the FAISS index over the video vectors: recall@K against exact search, build time, memory, latency.

Item vectors are the ALS video factors of a synthetic 1M-user × 1M-video world and the queries are the factors
of users with at least one interaction (benchmarks/scale_model.py; generated once, ~7 minutes, then cached):
recall of an ANN index on matrix-factorization vectors says nothing when measured on random vectors.
Every index is built through `feed.index.VectorIndex.build(item_factors, factory, search_params)` as training
builds it (inner product → L2 transform included), and searched through `VectorIndex.search` as serving does.

Columns: recall@K = mean share of the exact top-K (inner product, `feed.index.exact_top_k`) that the index
returned; build = train + add at --build-threads; memory = size of the serialized index (what `write` puts on
disk, about what it holds in RAM); 1-query latency = one `VectorIndex.search` call per query at 1 FAISS
thread (median and p99 over the queries) next to the bare `index.search` on the same padded query (the
wrapper's cost); batch = all queries in one call at --batch-threads.

Inputs: "as is" is the product's path. "unit inputs" is a prototype of a fix, run through the same
`VectorIndex` unchanged: items divided by their largest norm M before `build`, queries divided by their own
norm before `search` (neither changes any query's ranking). Why: as is, the index compares float32 distances
‖q‖² + M² − 2q·x; on these ALS vectors M² = 256 (one very popular video) while ‖q‖ ~ 0.01, so scores near
rank 100 differ by ~3 float32 steps of that distance and even `Flat` misorders them (recall 0.983), while
k-means and HNSW lose the structure entirely. With unit inputs the distance is 2 − 2q·x/(‖q‖M), whose steps are
~1000× finer than the score gaps. Measured at 1M on this 2-core machine (busy): as is, no ANN index reaches 0.95
(best IVF1024 nprobe=256 0.937, HNSW32 ef=256 0.78, SQ8 ≤ 0.23); with unit inputs IVF1024,Flat nprobe=16
reaches 0.980 at ~0.1-0.15 ms per query vs ~45-50 ms for Flat.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_index.py [--items 1000000] [--queries 1000] [--k 100]
       [--factories Flat HNSW32 "IVF4096,Flat" ...] [--target 0.95]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from scale_model import scale_factors  # benchmarks/scale_model.py (scripts run from this folder)  # noqa: E402
from feed.index import VectorIndex, exact_top_k, recall_at_k  # noqa: E402

# 128 and 256 too: on ALS vectors at K=100, IVF needs more probes than the usual 8-64 (see the table).
NPROBES = ("nprobe=8", "nprobe=16", "nprobe=32", "nprobe=64", "nprobe=128", "nprobe=256")
CANDIDATES: dict[str, tuple[str, ...]] = {  # factory string -> search_params strings tried on one build
    "Flat": ("",),
    "HNSW32": ("efSearch=64", "efSearch=128", "efSearch=256"),
    "IVF1024,Flat": NPROBES,
    "IVF4096,Flat": NPROBES,
    "IVF4096,SQ8": NPROBES,
    "HNSW32,SQ8": ("efSearch=128", "efSearch=256"),
}
# FAISS 1.15 defaults this to 128,000 queries: below it a batched exact search runs query by query without
# BLAS (FAISS issue #4925; DESIGN.md measured 13× at d=64). 20 was the old default. Here (d=32, K=100) the
# 1000-query reference took 9.7-15 s with it and 17 s without: top-K selection, not BLAS, dominates.
BLAS_THRESHOLD = 20
TRANSFORMS = {"product": "as is", "unit": "unit inputs"}
WARMUP = 10


@dataclass
class Row:
    """One (factory, search_params) measurement."""

    factory: str
    params: str
    transform: str
    recall: float
    build_s: float
    bytes: int
    p50_ms: float
    p99_ms: float
    direct_p50_ms: float
    batch_qps: float


def single_query_ms(search, queries: np.ndarray) -> np.ndarray:
    """Wall milliseconds of search(one (1, d) query) for each query, after a short warm-up; (n_queries,)."""
    for q in queries[:WARMUP]:
        search(q[None])
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        start = time.perf_counter()
        search(q[None])
        times[i] = time.perf_counter() - start
    return times * 1e3


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero); ranking by inner product per query is unchanged."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


def measure(search, bare: object, queries: np.ndarray, exact: np.ndarray, k: int, batch_threads: int) -> dict:
    """Recall, single-query latency (1 thread, ours and bare FAISS) and batch throughput of one search function."""
    faiss.omp_set_num_threads(batch_threads)
    start = time.perf_counter()
    rows = search(queries, k)  # (n_queries, k)
    batch_s = time.perf_counter() - start
    faiss.omp_set_num_threads(1)
    ours = single_query_ms(lambda q: search(q, k), queries)
    bare_ms = single_query_ms(lambda q: bare.search(q, k), bare_inputs(queries, search))
    return {"recall": recall_at_k(rows, exact), "p50_ms": float(np.median(ours)),
            "p99_ms": float(np.percentile(ours, 99)), "direct_p50_ms": float(np.median(bare_ms)),
            "batch_qps": len(queries) / batch_s}


def bare_inputs(queries: np.ndarray, search) -> np.ndarray:
    """The padded (n, dim + 1) queries that `search` hands to the FAISS index."""
    inputs = unit_rows(queries) if getattr(search, "unit", False) else queries
    return np.hstack([inputs, np.zeros((len(inputs), 1), np.float32)])


def searcher(index: VectorIndex, transform: str):
    """search(queries, k) -> rows: VectorIndex.search as is, or on unit-norm queries for the 'unit' prototype."""
    if transform == "product":
        return lambda q, k: index.search(q, k)[0]

    def search(q: np.ndarray, k: int) -> np.ndarray:
        return index.search(unit_rows(np.atleast_2d(q)), k)[0]

    search.unit = True
    return search


def bench_factory(factory: str, transform: str, items: np.ndarray, queries: np.ndarray, exact: np.ndarray,
                  args, console: Console) -> list[Row]:
    """Build one factory once through VectorIndex.build, then measure every search_params on it."""
    faiss.omp_set_num_threads(args.build_threads)
    start = time.perf_counter()
    # the 'unit' prototype scales the items to a largest norm of 1 (inside the timed build)
    data = items / np.sqrt(np.einsum("ij,ij->i", items, items).max()) if transform == "unit" else items
    built = VectorIndex.build(data, factory)
    build_s = time.perf_counter() - start
    size = int(faiss.serialize_index(built.index).nbytes)
    console.print(f"  {factory} ({TRANSFORMS[transform]}): built in {build_s:.1f}s, {size / 2**20:.0f} MiB")
    rows = []
    for params in CANDIDATES[factory]:
        index = VectorIndex(built.index, built.max_sq_norm, factory, params)  # as VectorIndex.read applies them
        result = measure(searcher(index, transform), built.index, queries, exact, args.k, args.batch_threads)
        rows.append(Row(factory, params, transform, build_s=build_s, bytes=size, **result))
        console.print(f"    {params or '-'}: recall {result['recall']:.4f}, p50 {result['p50_ms']:.2f} ms")
    del built, index
    gc.collect()
    return rows


def sample_queries(model, n: int, seed: int) -> np.ndarray:
    """Factors of n random users with at least one interaction; (n, factors)."""
    active = model.active_users()
    rng = np.random.default_rng(seed)
    rows = rng.choice(active, size=min(n, len(active)), replace=False)
    return np.ascontiguousarray(model.user_factors[np.sort(rows)])


def exact_reference(queries: np.ndarray, items: np.ndarray, k: int,
                    threads: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact top-k rows by inner product (batched, BLAS path), the top-(k+1) scores and the seconds it took."""
    faiss.omp_set_num_threads(threads)
    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    start = time.perf_counter()
    exact = exact_top_k(queries, items, k)  # (n_queries, k)
    seconds = time.perf_counter() - start
    flat = faiss.IndexFlatIP(items.shape[1])
    flat.add(items)
    scores, _ = flat.search(queries, k + 1)  # (n_queries, k + 1), for the precision note only
    return exact, scores, seconds


def print_table(console: Console, rows: list[Row], title: str, target: float) -> None:
    """One line per (factory, search_params); rows meeting the recall target in green."""
    table = Table(title=title)
    for column in ("factory", "inputs", "search_params", "recall@K", "build s", "index MiB", "1-query p50 ms",
                   "p99 ms", "bare faiss p50 ms", "batch q/s"):
        table.add_column(column, justify="left" if column in ("factory", "inputs", "search_params") else "right")
    for r in rows:
        style = "green" if r.recall >= target else None
        table.add_row(r.factory, TRANSFORMS[r.transform], r.params or "-", f"{r.recall:.4f}", f"{r.build_s:.1f}",
                      f"{r.bytes / 2**20:.0f}",
                      f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}", f"{r.direct_p50_ms:.3f}", f"{r.batch_qps:,.0f}",
                      style=style)
    console.print(table)


def recommend(console: Console, rows: list[Row], target: float, k: int) -> None:
    """Per kind of inputs, the factory and search_params with the lowest 1-query median meeting the target."""
    for transform, label in TRANSFORMS.items():
        mine = [r for r in rows if r.transform == transform]
        ok = [r for r in mine if r.recall >= target]
        if not mine:
            continue
        if not ok:
            console.print(f"[red]{label}: no candidate reached recall@{k} ≥ {target}[/]")
            continue
        best = min(ok, key=lambda r: r.p50_ms)
        flat = next((r for r in mine if r.factory == "Flat"), None)
        speedup = f", {flat.p50_ms / best.p50_ms:.0f}× faster than Flat" if flat and best is not flat else ""
        console.print(f"[bold]{label}[/]: factory {best.factory!r}, search_params {best.params!r} — "
                      f"recall@{k} {best.recall:.4f} ≥ {target}, single query {best.p50_ms:.2f} ms median"
                      f"{speedup}; build {best.build_s:.0f}s, {best.bytes / 2**20:.0f} MiB")


def precision_note(queries: np.ndarray, items: np.ndarray, scores: np.ndarray, k: int) -> str:
    """Why float32 L2 distances can blur a top-k: the scores at rank k next to the float32 step of the distances."""
    m2 = float(np.einsum("ij,ij->i", items, items).max())
    q_norm = float(np.median(np.linalg.norm(queries, axis=1)))
    gap = float(np.median(scores[:, k - 1] - scores[:, k]))  # score(rank k) - score(rank k+1)
    step = float(np.spacing(np.float32(m2 + q_norm**2)))
    return (f"largest item ‖x‖² M² = {m2:.1f}, median ‖q‖ = {q_norm:.2g}; median score at rank {k} "
            f"{np.median(scores[:, k - 1]):.2g}, gap to rank {k + 1} {gap:.2g} = {2 * gap / step:.1f} float32 steps of "
            f"the transformed distance ‖q‖² + M² − 2q·x (step {step:.1g})")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000, help="videos in the world (and so in the index)")
    parser.add_argument("--users", type=int, default=None, help="users in the world (default: --items)")
    parser.add_argument("--days", type=int, default=7, help="simulated days of the world (see scale_model.py)")
    parser.add_argument("--queries", type=int, default=1000, help="users sampled as queries")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.95, help="recall@K a recommendation must reach")
    parser.add_argument("--factories", nargs="+", default=list(CANDIDATES), metavar="FACTORY",
                        help=f"subset of {list(CANDIDATES)} (each quoted, space-separated)")
    parser.add_argument("--transforms", nargs="+", default=list(TRANSFORMS), choices=list(TRANSFORMS),
                        help="product: VectorIndex as training builds it; unit: the same on items scaled to "
                             "largest norm 1 and unit-norm queries (a prototype fix, see the docstring)")
    parser.add_argument("--build-threads", type=int, default=faiss.omp_get_max_threads())
    parser.add_argument("--batch-threads", type=int, default=faiss.omp_get_max_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    unknown = set(args.factories) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown factories {sorted(unknown)}; choose among {list(CANDIDATES)}")
    return args


def main() -> None:
    """Load (or make) the factors, compute the exact reference, measure every candidate and recommend one."""
    args = parse_args()
    console = Console(width=max(Console().width, 150))  # the table is wider than a default pipe
    model = scale_factors(args.users or args.items, args.items, days=args.days)
    items = np.ascontiguousarray(model.item_factors)  # (n_videos, factors)
    queries = sample_queries(model, args.queries, args.seed)
    exact, scores, exact_s = exact_reference(queries, items, args.k, args.batch_threads)
    zero = int((~items.any(axis=1)).sum())
    console.print(f"{len(items):,} video vectors of dim {items.shape[1]} ({zero:,} all-zero: never viewed), "
                  f"{len(queries):,} queries from {len(model.active_users()):,} active users, K={args.k}; "
                  f"exact reference {exact_s:.1f}s; faiss {faiss.__version__}")
    console.print(precision_note(queries, items, scores, args.k))
    rows = [row for factory in args.factories for transform in args.transforms
            for row in bench_factory(factory, transform, items, queries, exact, args, console)]
    title = (f"{len(items):,} ALS video vectors (d={items.shape[1]}), {len(queries)} user queries, K={args.k}; "
             f"build {args.build_threads} threads, 1-query at 1 thread, batch {args.batch_threads} threads")
    print_table(console, rows, title, args.target)
    console.print(f"Lowest single-query median with recall@{args.k} ≥ {args.target}:")
    recommend(console, rows, args.target, args.k)


if __name__ == "__main__":
    main()
