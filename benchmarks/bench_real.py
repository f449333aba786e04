"""Quality on real public data, every model and baseline in the same run on the same split, next to the
published numbers of ../shared/datasets/README.md; plus evaluation time at 30k users × 40k items.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_real.py [--trials 15] [--datasets ml-100k,lastfm,beibei]

Protocols:
- ml-100k: ratings ≥ 4 are positives (views); per-user random split 0.8/0.1/0.1 (seed 0); K=10,20.
- lastfm: RecBole's protocol: per-user random 0.8/0.1/0.1 (seed 0), full ranking, K=10.
- beibei: the given GHCF split: train = train.txt purchases + cart.txt, test = test.txt purchases; only training
  purchases are masked (carts are signal, not history to hide); HR@10 / NDCG@10; the "own cart first" rule
  shows the leak (62 % of held-out purchases are already in the user's cart).
"Tuned" ALS: `feed tune` (Optuna TPE, factors/regularization/alpha) on the split's validation side (for Beibei,
the last purchase of each user in train.txt, via leave-last-out), then evaluated once on the test side.
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
import scipy.sparse as sp  # noqa: E402

from feed.dataset import build_catalog  # noqa: E402
from feed.importers import import_adjacency, import_lastfm, import_movielens  # noqa: E402
from feed.metrics import evaluate  # noqa: E402
from feed.models.als import ALSRecommender  # noqa: E402
from feed.schema import Dataset  # noqa: E402
from feed.splits import Split, parse_split, split_given, split_leave_last_out  # noqa: E402
from training.config import load_config  # noqa: E402
from training.evaluate import run_evaluation  # noqa: E402
from training.tune import tune  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PUBLISHED = {"lastfm": {"BPR": (0.1761, 0.1674), "NGCF": (0.1960, 0.1898), "LightGCN": (0.2064, 0.1972)},
             "beibei": {"own-cart rule (README)": (0.466, None), "most-popular (README)": (0.032, None)}}


def load(name: str) -> tuple[Split, Dataset, list[str], list[str], str]:
    """Split, dataset, models, mask events and the metric family for one protocol."""
    if name == "ml-100k":
        data = import_movielens(DATASETS / "ml-100k", min_rating=4)
        return parse_split("random:0.8,0.1,0.1")(data.events), data, [], [], "recall"
    if name == "lastfm":
        data = import_lastfm(DATASETS / "lastfm-hetrec2k")
        return parse_split("random:0.8,0.1,0.1")(data.events), data, [], [], "recall"
    folder = DATASETS / "beibei"
    train = import_adjacency({"purchase": folder / "train.txt", "cart": folder / "cart.txt"})
    test = import_adjacency({"purchase": folder / "test.txt"}, ts="2020-01-02T00:00:00Z")
    test.events["event_id"] = "t" + test.events["event_id"].astype(str)
    data = Dataset(events=pd.concat([train.events, test.events], ignore_index=True))
    return split_given(train.events, test.events), data, ["own-cart"], ["purchase"], "hit_rate"


def tuned_config(split: Split, data: Dataset, base, trials: int, mask: list[str]):
    """Best ALS hyperparameters on the validation side (Beibei: each user's last training purchase)."""
    if split.valid is None:  # Beibei: carve validation from the training purchases
        inner = split_leave_last_out(split.train, target="purchase")
        split = Split(inner.train, inner.test, inner.test, "validation: last training purchase per user")
    return tune(split, build_catalog(data), base, trials, "ndcg@10", tune_weights=False).best_config


def run(name: str, trials: int) -> None:
    """Evaluate every model on one dataset and print the rows."""
    split, data, extra, mask, family = load(name)
    catalog = build_catalog(data)
    base = load_config(overrides={"eval": {"ks": [10, 20], "weights": {"view": 1.0, "cart": 0.0, "purchase": 1.0,
                                                                        "refund": 0.0}}}, environ={})
    start = time.perf_counter()
    report = run_evaluation(split, catalog, base, ["popularity", "implicit-als", "als", *extra], mask_events=mask)
    tuned = tuned_config(split, data, base, trials, mask) if trials else None
    if tuned is not None:
        tuned_report = run_evaluation(split, catalog, tuned, ["implicit-als", "als"], mask_events=mask)
        report.models.update({f"{k} (tuned)": v for k, v in tuned_report.models.items()})
    print(f"\n## {name} — {report.split} — {report.n_test_users:,} test users ({time.perf_counter() - start:.0f} s)")
    if tuned is not None:
        print(f"tuned ALS: factors={tuned.als.factors} regularization={tuned.als.regularization:.4g} "
              f"alpha={tuned.als.alpha:.4g}")
    print(f"| model | {family}@10 | ndcg@10 | {family}@20 | ndcg@20 | coverage@10 |")
    print("|---|---:|---:|---:|---:|---:|")
    for model, m in report.models.items():
        print(f"| {model} | {m[f'{family}@10']:.4f} | {m['ndcg@10']:.4f} | {m[f'{family}@20']:.4f} | "
              f"{m['ndcg@20']:.4f} | {m['coverage@10']:.3f} |")
    for model, (first, ndcg) in PUBLISHED.get(name, {}).items():
        print(f"| {model} (published) | {first:.4f} | {'—' if ndcg is None else f'{ndcg:.4f}'} | | | |")


def bench_eval_time(repeat: int = 3) -> None:
    """Full-ranking evaluation of a 64-factor model over 30k users × 40k items."""
    rng = np.random.default_rng(0)
    n_users, n_items = 30_000, 40_000
    model = ALSRecommender(factors=64)
    model.user_factors = rng.normal(size=(n_users, 64)).astype(np.float32)
    model.item_factors = rng.normal(size=(n_items, 64)).astype(np.float32)
    train = sp.random(n_users, n_items, density=20 / n_items, format="csr", random_state=1, dtype=np.float32)
    test = sp.random(n_users, n_items, density=5 / n_items, format="csr", random_state=2, dtype=np.float32)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        evaluate(model, train, test, (10, 20, 50))
        times.append(time.perf_counter() - start)
    print(f"\n## evaluation time: 30,000 users × 40,000 items, 64 factors, K=10,20,50, full ranking: "
          f"median {np.median(times):.1f} s of {repeat}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--datasets", default="ml-100k,lastfm,beibei")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    if not DATASETS.is_dir():
        raise SystemExit(f"{DATASETS} not found: see ../shared/datasets/README.md")
    tempfile.tempdir = tempfile.mkdtemp(prefix="bench-real-")
    for name in args.datasets.split(","):
        run(name, args.trials)
    if not args.skip_timing:
        bench_eval_time()


if __name__ == "__main__":
    main()
