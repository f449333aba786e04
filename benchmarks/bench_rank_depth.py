"""How deep the ranker must score: the whole-feed replay of `feed evaluate --feed` with `rank_depth` 0 (every
candidate), 400, 300, 250 and 200, on one bundle fitted once, the same held-out users and seed for each.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_rank_depth.py --data data/generated/w20k [--config F]  # ~12 min
(the world of BENCHMARKS "The whole feed": feed generate --out data/generated/w20k --users 20000 --creators 1200
--products 6000 --videos 16000 --seed 1). One row per depth: the metrics of `training.feed_eval.page_metrics`
and the share of the all-candidates pages' videos that the depth's pages also show.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from feed.dataset import build_catalog, time_split
from feed.io import load_dataset
from feed.service import FeedConfig, FeedService, UserSignals
from feed.stats import epoch_ms
from training.config import load_config
from training.pipeline import fit_bundle
from training.feed_eval import follows_at, held_out_targets, page_metrics, replay
from training.ranker import follows_before

DEPTHS = (0, 400, 300, 250, 200)
SHOWN = ("purchase_recall@20", "product_purchase_recall@20", "gmv@20", "share_recall@20", "engaged_recall@20",
         "creator_coverage", "intra_list_diversity", "categories_per_page", "same_videos_as_all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (feed generate / feed import)")
    parser.add_argument("--config", type=Path, help="training config (defaults otherwise)")
    args = parser.parse_args()
    dataset, config = load_dataset(args.data), load_config(args.config)
    catalog = build_catalog(dataset)
    split = time_split(dataset.events, config.split.test_fraction)
    bundle, _ = fit_bundle(split.train, catalog, config, True, follows_before(dataset.follows, split.cutoff))
    bundle.manifest["value_formula"] = config.ranker.value.model_dump(mode="json")
    targets = held_out_targets(split.test, catalog, None, config.seed)
    follows = follows_at(dataset.follows, split.cutoff)
    now_ms = float(epoch_ms(pd.Series([split.cutoff]))[0])
    table = Table(title=f"whole-feed replay by rank_depth, first page of {len(targets.users):,} users")
    for column in ("metric", *(str(d) if d else "all (0)" for d in DEPTHS)):
        table.add_column(column, justify="right")
    results, base_pages = [], None
    for depth in DEPTHS:
        service = FeedService(bundle, FeedConfig(rank_depth=depth),
                              signals=UserSignals(follows=lambda user: follows.get(user, [])))
        pages = replay(service, targets.users, 20, config.seed, now_ms, True, f"rank_depth={depth}")
        base_pages = pages if base_pages is None else base_pages
        same = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(pages, base_pages, strict=True)) / max(
            sum(len(a) for a in base_pages), 1)
        results.append({**page_metrics(pages, targets, service, 20), "same_videos_as_all": same})
    for metric in SHOWN:
        table.add_row(metric, *(f"{r[metric]:.4f}" for r in results))
    Console().print(table)


if __name__ == "__main__":
    main()
