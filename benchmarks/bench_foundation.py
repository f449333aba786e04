"""Foundation numbers for BENCHMARKS.md: ALS through the project vs `implicit` directly (same matrix, same run),
held-out quality of ALS vs popularity (and an oracle from the ground truth) on the default world, and feed
latency vs a bare FAISS search. Medians over repeats; prints tables.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_foundation.py [--repeat 5] [--world DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from timing import median_seconds  # benchmarks/timing.py (scripts run from this folder)  # noqa: E402
from feed.bundle import load_bundle  # noqa: E402
from feed.dataset import build_catalog, build_interactions, holdout_positives, time_split  # noqa: E402
from feed.io import load_dataset  # noqa: E402
from feed.metrics import evaluate  # noqa: E402
from feed.models.als import ALSRecommender  # noqa: E402
from feed.models.base import top_n  # noqa: E402
from feed.service import FeedService  # noqa: E402
from feed.world import Truth, WorldParams, generate_world, save_world  # noqa: E402
from training.config import load_config  # noqa: E402
from training.pipeline import evaluate_holdout, run_training  # noqa: E402


def bench_als(matrix, config, repeat: int) -> tuple[float, float]:
    """Median fit seconds through ALSRecommender and through implicit's class used directly."""
    from implicit.cpu.als import AlternatingLeastSquares

    params = config.als.model_dump()

    def direct() -> None:
        with threadpool_limits(1, "blas"):
            AlternatingLeastSquares(**params, random_state=0).fit(matrix, show_progress=False)

    ours = median_seconds(lambda: ALSRecommender(**params, random_state=0).fit(matrix), repeat)
    return ours, median_seconds(direct, repeat)


def oracle_metrics(world_dir: Path, events: pd.DataFrame, config) -> dict[str, float]:
    """Recall/NDCG of ranking by true affinity, on the same split and positives as the models."""
    truth = Truth.load(world_dir)
    dataset = load_dataset(world_dir)
    catalog = build_catalog(dataset)
    split = time_split(events, config.split.test_fraction)
    train = build_interactions(split.train, catalog, config.weights, config.full_watch_ratio)
    test = holdout_positives(split.test, train, "video", config.weights, config.eval.min_weight)
    columns = catalog.videos.rows(truth.video_ids)  # truth order -> catalog rows

    class Oracle:
        def recommend(self, rows, user_items, N=10, filter_already_liked_items=True):
            truth_rows = pd.Index(truth.user_ids).get_indexer(train.users.ids[rows])
            scores = np.full((len(rows), len(catalog.videos)), -np.inf, dtype=np.float32)
            scores[:, columns] = truth.affinity(truth_rows)
            return top_n(scores, N, user_items)

    return evaluate(Oracle(), train.matrices["video"], test, config.eval.ks)


def bench_feed(bundle_dir: Path, repeat: int) -> tuple[float, float]:
    """Median microseconds per feed (limit 20) and per bare FAISS top-200 search for the same users."""
    service = FeedService(load_bundle(bundle_dir))
    users = service.bundle.users.ids[:: max(1, len(service.bundle.users) // 500)]
    video = service.bundle.relations["video"]
    rows = service.bundle.users.rows(users)
    per_feed = median_seconds(lambda: [service.feed(u, 20) for u in users], repeat) / len(users)
    per_search = median_seconds(lambda: [video.index.index.search(
        np.hstack([video.user_factors[r:r + 1], np.zeros((1, 1), np.float32)]), 200) for r in rows], repeat)
    return per_feed * 1e6, per_search / len(rows) * 1e6


def main() -> None:
    """Print the three tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--world", type=Path, help="an existing world folder (default: generate the default world)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    world_dir = args.world or tmp / "world"
    if args.world is None:
        save_world(generate_world(WorldParams()), world_dir)
    config = load_config(overrides={"retriever": "als"}, environ={})  # this benchmark measures ALS (two-tower: bench_retriever.py)
    dataset = load_dataset(world_dir)
    catalog = build_catalog(dataset)
    print(f"world: {world_dir} — {len(dataset.events):,} events; config {config.digest()} "
          f"(ALS factors={config.als.factors}, iterations={config.als.iterations}); repeat={args.repeat}\n")

    matrix = build_interactions(dataset.events, catalog, config.weights).matrices["video"]
    big = generate_world(WorldParams(users=60000, creators=3000, products=15000, videos=40000, days=30))
    big_matrix = build_interactions(big.dataset.events, build_catalog(big.dataset), config.weights).matrices["video"]
    print("ALS fit, seconds (median)        nnz        project   implicit direct   ratio")
    for name, m in (("default world, video", matrix), ("~10M-event world, video", big_matrix)):
        ours, direct = bench_als(m, config, args.repeat)
        print(f"{name:28s} {m.nnz:>10,}   {ours:8.3f}   {direct:15.3f}   {ours / direct:5.2f}×")
    del big, big_matrix

    start = time.perf_counter()
    run_training(world_dir, config, tmp / "bundle", track=False, quiet=True)
    print(f"\nwhole `feed train` pipeline without MLflow (load, evaluate, refit 3 relations, bundle): "
          f"{time.perf_counter() - start:.1f} s")

    metrics, _, _ = evaluate_holdout(dataset.events, catalog, config, progress=False)
    oracle = oracle_metrics(world_dir, dataset.events, config)
    print("\nheld-out quality (last 20% of days, full ranking, training items masked)")
    print("relation   model        recall@20   ndcg@20   recall@20 / popularity   test users")
    for relation in ("video", "creator", "product"):
        pop = metrics[f"{relation}.popularity.recall@20"]
        for model in ("als", "popularity"):
            r, n = metrics[f"{relation}.{model}.recall@20"], metrics[f"{relation}.{model}.ndcg@20"]
            users = int(metrics[f"{relation}.{model}.n_test_users"])
            print(f"{relation:10s} {model:12s} {r:9.4f}   {n:7.4f}   {r / pop:22.2f}×   {users:10,}")
    r, n = oracle["recall@20"], oracle["ndcg@20"]
    print(f"{'video':10s} {'oracle':12s} {r:9.4f}   {n:7.4f}   "
          f"{r / metrics['video.popularity.recall@20']:22.2f}×   {int(oracle['n_test_users']):10,}")

    feed_us, search_us = bench_feed(tmp / "bundle", args.repeat)
    print("\nfeed latency, in-process, µs per request (median of repeats over ~500 users)")
    print(f"FeedService.feed(limit=20), 3 FAISS searches + fusion + filters: {feed_us:8.0f}")
    print(f"bare faiss index.search(top 200) on the video index:            {search_us:8.0f}")
    print(f"ratio:                                                          {feed_us / search_us:8.1f}×")


if __name__ == "__main__":
    main()
