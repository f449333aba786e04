"""What the training event weights do to purchase-recall and recall, on the default world's time split.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_weights.py [--world DIR]
Held-out positives are defined by `eval.weights` (fixed), so every row is judged on the same test set.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from feed.dataset import build_catalog  # noqa: E402
from feed.io import load_dataset  # noqa: E402
from feed.splits import parse_split  # noqa: E402
from feed.world import WorldParams, generate_world, save_world  # noqa: E402
from training.config import load_config  # noqa: E402
from training.evaluate import run_evaluation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path)
    args = parser.parse_args()
    folder = args.world or Path(tempfile.mkdtemp()) / "world"
    if args.world is None:
        save_world(generate_world(WorldParams()), folder)
    dataset = load_dataset(folder)
    split, catalog = parse_split("time:0.2")(dataset.events), build_catalog(dataset)
    print("| view | like | share | cart | purchase | recall@20 | ndcg@20 | purchase_recall@20 | purchase_recall@50 | buyers |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for view, cart, purchase in itertools.product((0.25, 1.0), (0.0, 3.0), (0.5, 2.0, 8.0, 32.0)):
        weights = {"view": view, "like": 2.0, "share": 4.0, "cart": cart, "purchase": purchase, "refund": -purchase}
        config = load_config(overrides={"weights": weights, "mlflow": {"promote": "never"}}, environ={})
        m = run_evaluation(split, catalog, config, ["als"]).models["als"]
        print(f"| {view} | 2 | 4 | {cart} | {purchase} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | "
              f"{m['purchase_recall@20']:.4f} | {m['purchase_recall@50']:.4f} | {m['purchase_n_users']:.0f} |")


if __name__ == "__main__":
    main()
