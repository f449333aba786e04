"""Two-tower and the ALS + two-tower blend vs tuned ALS, on the splits of bench_real.py; DDP 1 vs 2 processes;
the default synthetic world's Recall@20 as a fraction of the oracle's (ranking by the world's true affinity).

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_two_tower.py [--datasets ml-100k,lastfm,beibei]
           [--grid small|none] [--retune-als 15] [--threads 1] [--ddp ml-100k] [--fold-in lastfm] [--world]
           [--json FILE]

Protocols (bench_real.load, unchanged): ML-100K ratings ≥ 4, per-user random 0.8/0.1/0.1 (seed 0); Last.fm the
RecBole protocol (same ratios); Beibei the given GHCF split, train = purchases + carts, only training purchases
masked. ALS uses the tuned hyperparameters of BENCHMARKS.md ("Real data"). Two-tower hyperparameters are chosen
on the validation side only (ML-100K / Last.fm: the split's 10 % validation; Beibei: each user's last training
purchase event, its cart event staying in training as carts of test purchases stay in cart.txt); the test side
is evaluated once, every model in one `run_evaluation` call (the same code as `feed evaluate`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from bench_real import load  # benchmarks/bench_real.py: the same loading and splits  # noqa: E402
from feed.dataset import build_catalog  # noqa: E402
from feed.metrics import evaluate  # noqa: E402
from feed.models.base import top_n  # noqa: E402
from feed.models.two_tower import TwoTowerRecommender  # noqa: E402
from feed.splits import Split, parse_split, split_leave_last_out  # noqa: E402
from feed.world import WorldParams, generate_world  # noqa: E402
from training.config import TrainConfig, load_config  # noqa: E402
from training.evaluate import evaluation_data, run_evaluation  # noqa: E402
from training.tune import tune  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TUNED_ALS = {"ml-100k": {"factors": 16, "regularization": 0.0021, "alpha": 2.3},
             "lastfm": {"factors": 32, "regularization": 0.0011, "alpha": 4.4},
             "beibei": {"factors": 128, "regularization": 0.17, "alpha": 1.4}}
BASE = {"user_id": False, "temperature": 0.2}  # from the first ML-100K validation runs (BENCHMARKS.md)
GRIDS = {  # small searches on the validation side; "none" takes the first entry
    "ml-100k": [{}, {"temperature": 0.1}, {"user_id": True}, {"dim": 128}, {"history_dropout": 0.5}],
    "lastfm": [{}, {"temperature": 0.1}, {"user_id": True}, {"dim": 128}],
    "beibei": [{"repeat": 2.0}, {"repeat": 0.0}, {"repeat": 1.0}],
}
PUBLISHED = {"lastfm": {"LightGCN (published, @10 only)": (0.2064, 0.1972)}}


def base_config(name: str, threads: int, two_tower: dict) -> TrainConfig:
    """bench_real's evaluation settings, tuned ALS, and the given two-tower overrides."""
    overrides = {"threads": threads, "als": TUNED_ALS[name], "two_tower": {**BASE, **two_tower},
                 "eval": {"ks": [10, 20], "weights": {"view": 1.0, "cart": 0.0, "purchase": 1.0, "refund": 0.0}}}
    return load_config(overrides=overrides, environ={})


def validation_split(split: Split) -> Split:
    """The validation side; for Beibei each user's last training purchase event (its cart stays in training)."""
    if split.valid is not None:
        return Split(split.train, split.valid, None, "validation side")
    inner = split_leave_last_out(split.train, target="purchase")
    held = (inner.test["event"] == "purchase").to_numpy()
    return Split(pd.concat([inner.train, inner.test[~held]]), inner.test[held], None,
                 "validation: last training purchase per user")


def choose(name: str, split: Split, catalog, mask: list[str], family: str, grid: str,
           threads: int) -> tuple[dict, list[dict]]:
    """The grid entry with the best validation recall@20 + ndcg@20, and every entry's numbers."""
    candidates = GRIDS[name] if grid == "small" else GRIDS[name][:1]
    if len(candidates) == 1:
        return candidates[0], []
    inner, rows = validation_split(split), []
    for overrides in candidates:
        start = time.perf_counter()
        config = base_config(name, threads, overrides)
        metrics = run_evaluation(inner, catalog, config, ["two-tower"], mask_events=mask).models["two-tower"]
        rows.append({"overrides": overrides, f"{family}@20": metrics[f"{family}@20"], "ndcg@20": metrics["ndcg@20"],
                     "best_epoch": metrics.get("two_tower.best_epoch"), "seconds": time.perf_counter() - start})
        print(f"  validation {overrides}: {family}@20 {rows[-1][f'{family}@20']:.4f} ndcg@20 "
              f"{rows[-1]['ndcg@20']:.4f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    best = max(rows, key=lambda r: r[f"{family}@20"] + r["ndcg@20"])
    return best["overrides"], rows


def run(name: str, grid: str, threads: int, retune_als: int) -> dict:
    """Choose on validation, then evaluate every model once on test; print the table."""
    split, data, extra, mask, family = load(name)
    catalog = build_catalog(data)
    start = time.perf_counter()
    overrides, grid_rows = choose(name, split, catalog, mask, family, grid, threads)
    config = base_config(name, threads, overrides)
    models = ["popularity", "implicit-als", "als", "two-tower", "blend", *extra]
    report = run_evaluation(split, catalog, config, models, mask_events=mask)
    if config.two_tower.repeat:  # the ablation: what the towers alone do (not chosen on validation)
        plain = base_config(name, threads, {**overrides, "repeat": 0.0})
        ablation = run_evaluation(split, catalog, plain, ["two-tower", "blend"], mask_events=mask).models
        report.models.update({f"{k} without the repeat bonus (ablation)": v for k, v in ablation.items()})
    _print(name, report, family, config, overrides, time.perf_counter() - start)
    if retune_als:
        inner = validation_split(split)
        retuned = tune(Split(inner.train, inner.test, inner.test, inner.description), catalog, config, retune_als,
                       "ndcg@10", tune_weights=False, mask_events=mask).best_config
        again = run_evaluation(split, catalog, retuned, ["als"], mask_events=mask).models["als"]
        label = f"als re-tuned on this validation ({_als(retuned)})"
        report.models[label] = again
        print(f"| {label} | {again[f'{family}@10']:.4f} | {again['ndcg@10']:.4f} | {again[f'{family}@20']:.4f} | "
              f"{again['ndcg@20']:.4f} | {again['coverage@10']:.3f} | {again['fit_seconds']:.0f} |")
    seconds = time.perf_counter() - start
    return {"dataset": name, "split": report.split, "n_test_users": report.n_test_users, "two_tower": overrides,
            "grid": grid_rows, "models": report.models, "seconds": seconds}


def _als(config: TrainConfig) -> str:
    return f"factors {config.als.factors}, reg {config.als.regularization:.3g}, α {config.als.alpha:.3g}"


def _print(name: str, report, family: str, config: TrainConfig, overrides: dict, seconds: float) -> None:
    """The markdown table for one dataset, then training speed and the blend's choice."""
    print(f"\n## {name} — {report.split} — {report.n_test_users:,} test users ({seconds:.0f} s)")
    print(f"two-tower: {config.two_tower.model_dump()} (chosen: {overrides})")
    print(f"| model | {family}@10 | ndcg@10 | {family}@20 | ndcg@20 | coverage@10 | fit s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for model, m in report.models.items():
        print(f"| {model} | {m[f'{family}@10']:.4f} | {m['ndcg@10']:.4f} | {m[f'{family}@20']:.4f} | "
              f"{m['ndcg@20']:.4f} | {m['coverage@10']:.3f} | {m['fit_seconds']:.0f} |")
    for model, (first, ndcg) in PUBLISHED.get(name, {}).items():
        print(f"| {model} | {first:.4f} | {ndcg:.4f} | | | | |")
    tt, blend = report.models["two-tower"], report.models["blend"]
    print(f"two-tower training: best epoch {tt['two_tower.best_epoch']:.0f} of {tt['two_tower.epochs_run']:.0f} "
          f"run (early stopping + refit), median epoch {tt['two_tower.epoch_seconds']:.2f} s, "
          f"{tt['two_tower.examples_per_s']:,.0f} examples/s, threads {config.threads}; training loss "
          f"{tt['two_tower.first_loss']:.3f} (epoch 1) → {tt['two_tower.last_loss']:.3f} (last)")
    valid = {k.removeprefix("valid.").removesuffix(".recall@20"): v for k, v in blend.items()
             if k.startswith("valid.") and k.endswith("recall@20")}
    print(f"blend: two-tower weight {blend['blend.weight']:g}; validation recall@20 " +
          ", ".join(f"{k} {v:.4f}" for k, v in valid.items()))


def bench_ddp(name: str, overrides: dict, folder: Path) -> list[dict]:
    """The same training run with 1 process (1 and 2 threads) and 2 processes under torchrun; test quality."""
    split, data, _, mask_events, family = load(name)
    config = base_config(name, 1, overrides)
    train, mask, targets = evaluation_data(split, build_catalog(data), config, "video", mask_events)
    matrix = train.matrices["video"]
    sp.save_npz(folder / "train.npz", matrix)
    sets = [f"two_tower.{k}={json.dumps(v)}" for k, v in config.two_tower.model_dump().items()]
    rows = []
    for label, processes, threads in (("1 process × 1 thread", 1, 1), ("1 process × 2 threads", 1, 2),
                                      ("2 processes × 1 thread (DDP, gloo)", 2, 1)):
        out = folder / f"p{processes}t{threads}"
        args = ["-m", "training.two_tower_run", str(folder / "train.npz"), str(out), "--set", f"threads={threads}"]
        args += [a for s in sets for a in ("--set", s)]
        launcher = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2"] if processes > 1 else []
        start = time.perf_counter()
        subprocess.run(launcher + ([] if launcher else [sys.executable]) + args, check=True, cwd=REPO,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True)
        wall = time.perf_counter() - start
        log = json.loads((out / "log.json").read_text())
        metrics = evaluate(TwoTowerRecommender.load(out / "model"), matrix, targets["all"], (20,), mask=mask)
        epochs = log["epochs"]
        rows.append({"setup": label, "best_epoch": log["best_epoch"], "valid_recall@20": log["best_valid_recall"],
                     "recall@20": metrics["recall@20"], "ndcg@20": metrics["ndcg@20"], "wall_s": wall,
                     "epoch_s": float(np.median([e["seconds"] for e in epochs])),
                     "examples_per_s": float(np.median([e["examples_per_s"] for e in epochs]))})
    print(f"\n## DDP — {name}, two-tower {overrides}")
    print("| setup | best epoch | valid recall@20 | test recall@20 | test ndcg@20 | median epoch s | examples/s | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setup']} | {r['best_epoch']} | {r['valid_recall@20']:.4f} | {r['recall@20']:.4f} | "
              f"{r['ndcg@20']:.4f} | {r['epoch_s']:.2f} | {r['examples_per_s']:,.0f} | {r['wall_s']:.0f} |")
    return rows


def bench_fold_in(name: str, overrides: dict, repeat: int = 2000) -> dict:
    """µs to make one new user's vector from 20 events: the two-tower's numpy user tower vs ALS fold-in."""
    from feed.models.als import ALSRecommender, fold_in as als_fold_in, gram
    from feed.models.two_tower import fold_in as tower_fold_in
    from training.two_tower import two_tower_model

    split, data, _, mask_events, _ = load(name)
    config = base_config(name, 1, {**overrides, "epochs": 2, "valid_fraction": 0.0})
    matrix = evaluation_data(split, build_catalog(data), config, "video", mask_events)[0].matrices["video"]
    tower = two_tower_model(config).fit(matrix).export()
    als = ALSRecommender(**config.als.model_dump(), num_threads=1).fit(matrix)
    yty = gram(als.item_factors)
    items = np.random.default_rng(0).choice(matrix.shape[1], 20, replace=False)
    history = sp.csr_matrix((np.ones(20, np.float32), (np.zeros(20, int), items)), shape=(1, matrix.shape[1]))
    timings = {"two-tower user tower (numpy)": lambda: tower_fold_in(tower, history),
               "ALS fold-in (numpy solve)": lambda: als_fold_in(als.item_factors, yty, items, np.ones(20),
                                                                 als.params["alpha"], als.params["regularization"])}
    out = {}
    for label, call in timings.items():
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        out[label] = float(np.median(samples) * 1e6)
    print(f"\n## new user from 20 events ({name}, {matrix.shape[1]:,} items, dim {config.two_tower.dim} / "
          f"{config.als.factors} factors): " + ", ".join(f"{k} {v:.0f} µs" for k, v in out.items()) + " (median)")
    return out


class Oracle:
    """Ranks every video by the world's true affinity of the user (the recommender contract, nothing to fit)."""

    def __init__(self, truth, users, catalog) -> None:
        self.truth, self.users = truth, users
        self.columns = catalog.videos.rows(truth.video_ids)  # truth order -> catalog rows
        self.n_videos = len(catalog.videos)

    def recommend(self, rows, user_items, N=10, filter_already_liked_items=True):
        """Top-N by true affinity, the masked items skipped."""
        truth_rows = pd.Index(self.truth.user_ids).get_indexer(self.users.ids[rows])
        scores = np.full((len(rows), self.n_videos), -np.inf, dtype=np.float32)
        scores[:, self.columns] = self.truth.affinity(truth_rows)
        return top_n(scores, N, user_items)


def world_vs_oracle(threads: int) -> dict:
    """Every model's Recall@20 and NDCG@20 next to the oracle's on the config's time split; prints the table.

    The two-tower settings are the ML-100K choice, not tuned on the world.
    """
    start = time.perf_counter()
    world = generate_world(WorldParams())
    catalog = build_catalog(world.dataset)
    config = load_config(overrides={"threads": threads, "two_tower": BASE, "eval": {"ks": [20]}}, environ={})
    split = parse_split(f"time:{config.split.test_fraction}")(world.dataset.events)
    report = run_evaluation(split, catalog, config, ["popularity", "als", "two-tower", "blend"])
    train, mask, targets = evaluation_data(split, catalog, config)
    oracle = evaluate(Oracle(world.truth, train.users, catalog), train.matrices["video"], targets["all"], (20,),
                      mask=mask)
    rows = {**report.models, "oracle (true affinity)": oracle}
    print(f"\n## default world — {report.split} — {report.n_test_users:,} test users "
          f"({time.perf_counter() - start:.0f} s)")
    print("| model | recall@20 | ndcg@20 | recall@20 / oracle |")
    print("|---|---:|---:|---:|")
    for name, m in rows.items():
        print(f"| {name} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | {m['recall@20'] / oracle['recall@20']:.0%} |")
    return {name: {k: m[k] for k in ("recall@20", "ndcg@20")} for name, m in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-100k,lastfm,beibei")
    parser.add_argument("--grid", choices=["small", "none"], default="small")
    parser.add_argument("--retune-als", type=int, default=0, metavar="TRIALS",
                        help="also re-tune ALS on the two-tower's validation side (Optuna trials)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--ddp", default="", help="dataset for the 1 vs 2 process comparison (e.g. ml-100k)")
    parser.add_argument("--world", action="store_true", help="the default world: Recall@20 / oracle")
    parser.add_argument("--fold-in", default="", help="dataset for the new-user latency (e.g. lastfm)")
    parser.add_argument("--json", type=Path, help="write every number as JSON")
    args = parser.parse_args()
    tempfile.tempdir = tempfile.mkdtemp(prefix="bench-two-tower-")
    results: dict = {"datasets": [], "ddp": [], "world": None}
    for name in filter(None, args.datasets.split(",")):
        results["datasets"].append(run(name, args.grid, args.threads, args.retune_als))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=float))
    if args.ddp:
        chosen = next((r["two_tower"] for r in results["datasets"] if r["dataset"] == args.ddp), GRIDS[args.ddp][0])
        results["ddp"] = bench_ddp(args.ddp, chosen, Path(tempfile.mkdtemp()))
    if args.fold_in:
        results["fold_in"] = bench_fold_in(args.fold_in, GRIDS[args.fold_in][0])
    if args.world:
        results["world"] = world_vs_oracle(args.threads)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
