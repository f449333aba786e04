"""The served retriever: `feed train` with `retriever: als`, `two-tower` and `auto`, on the same data and split.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_retriever.py [--data DIR] [--retrievers als,two-tower,auto]
           [--users 300] [--json FILE]

Without --data the default synthetic world is generated (5,000 users, seed 0, as `make demo`). For each
retriever, one `run_training` (no MLflow): the held-out Recall@20 / NDCG@20 per relation of what the bundle
serves (its FAISS vectors) next to ALS and popularity, the training time, and what `auto` chose. Then, in the
same process and on the same users, the serving costs (timed in turn, user by user, so that other load
weighs on every retriever alike): a new user's vectors from 5 events (`LiveUsers.compute`:
ALS fold-in, the numpy user tower, or both), the three relations' vectors alone, and a whole feed (`FeedService.feed`)
for known users and for new users with history. Medians over `--users` users.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from feed.bundle import Bundle, load_bundle  # noqa: E402
from feed.dataset import event_weights  # noqa: E402
from feed.live import LiveUsers  # noqa: E402
from feed.service import FeedService  # noqa: E402
from feed.world import WorldParams, generate_world, save_world  # noqa: E402
from training.config import load_config  # noqa: E402
from training.pipeline import run_training  # noqa: E402

RELATIONS = ("video", "creator", "product")


class Events:
    """New users' events kept in memory (the part of the store LiveUsers reads)."""

    def __init__(self, events: pd.DataFrame) -> None:
        self.by_user = dict(tuple(events.groupby("user_id", sort=False)))

    def user_seq(self, user_id: str) -> int:
        return len(self.by_user.get(user_id, ()))

    def user_events(self, user_id: str, since: pd.Timestamp | None = None) -> pd.DataFrame:
        return self.by_user[user_id]


def new_users(bundle: Bundle, n: int, seed: int = 0) -> pd.DataFrame:
    """n users unknown to the bundle, each with 4 views and a purchase of popular videos."""
    rng = np.random.default_rng(seed)
    p = bundle.popularity / bundle.popularity.sum()
    rows = [rng.choice(len(p), size=5, replace=False, p=p) for _ in range(n)]
    ids = np.concatenate([bundle.catalog.videos.ids[r] for r in rows])
    return pd.DataFrame({
        "event_id": [f"b{i}" for i in range(5 * n)], "user_id": np.repeat([f"newcomer-{u}" for u in range(n)], 5),
        "video_id": ids, "event": np.tile(["view"] * 4 + ["purchase"], n),
        "ts": pd.Timestamp("2031-01-01", tz="UTC"), "watch_ms": 20_000.0, "product_id": None, "amount": np.nan,
        "via_share_id": None, "share_id": None})


def serving_probes(bundle: Bundle, n: int) -> dict[str, tuple]:
    """Per measure, a function and its n inputs: new-user state and vectors, feeds for known and new users."""
    events = new_users(bundle, n)
    live = LiveUsers(bundle, bundle.catalog, Events(events))
    groups = [g for _, g in events.groupby("user_id", sort=False)]
    weights = [event_weights(g, bundle.catalog, live.weights) for g in groups]
    plain, with_live = FeedService(bundle), FeedService(bundle, live=live)
    return {
        "new user state (all relations)": (lambda g: live.compute(g, -1), groups),
        "user vectors only (3 relations)": (lambda i: live.vectors(-1, groups[i], weights[i]), list(range(n))),
        "feed, known user": (lambda u: plain.feed(u, limit=20, seed=1), [str(u) for u in bundle.users.ids[:n]]),
        "feed, new user with history": (lambda u: with_live.feed(u, limit=20, seed=1),
                                         [f"newcomer-{u}" for u in range(n)]),
    }


def interleaved_medians(probes: dict[str, dict[str, tuple]]) -> dict[str, dict[str, float]]:
    """Median µs per retriever and measure, timing the retrievers in turn on each input (so that whatever else
    the machine does weighs on all of them alike)."""
    times: dict[str, dict[str, list[float]]] = {r: {m: [] for m in p} for r, p in probes.items()}
    first = next(iter(probes.values()))
    for measure in first:
        for fn, inputs in (p[measure] for p in probes.values()):
            fn(inputs[0])  # warm-up
        for i in range(len(first[measure][1])):
            for retriever, p in probes.items():
                fn, inputs = p[measure]
                start = time.perf_counter()
                fn(inputs[i])
                times[retriever][measure].append(time.perf_counter() - start)
    return {r: {m: float(np.median(v) * 1e6) for m, v in per.items()} for r, per in times.items()}


def run(data: Path, retrievers: list[str], n_users: int, console: Console, work: Path) -> dict[str, dict]:
    """Train once per retriever, then measure the serving costs of all of them interleaved."""
    results, probes = {}, {}
    for retriever in retrievers:
        config = load_config(overrides={"retriever": retriever}, environ={})
        console.print(f"training with retriever: {retriever} …")
        start = time.perf_counter()
        result = run_training(data, config, work / retriever, track=False, quiet=True)
        seconds = time.perf_counter() - start
        bundle = load_bundle(work / retriever)
        probes[retriever] = serving_probes(bundle, n_users)
        results[retriever] = {"train_seconds": seconds, "metrics": result.metrics,
                              "kinds": bundle.manifest["retriever"]["kinds"],
                              "weights": bundle.manifest["retriever"]["weights"]}
    console.print("timing the serving path, retrievers interleaved …")
    for retriever, costs in interleaved_medians(probes).items():
        results[retriever]["costs"] = costs
    return results


def print_tables(results: dict[str, dict], console: Console) -> None:
    """Quality per relation and serving costs, one column per retriever."""
    quality = Table(title="held-out Recall@20 / NDCG@20 of what each bundle serves (same split)")
    quality.add_column("relation")
    for name in results:
        quality.add_column(f"{name} (served)", justify="right")
    quality.add_column("ALS", justify="right")
    quality.add_column("popularity", justify="right")
    first = next(iter(results.values()))["metrics"]
    for relation in RELATIONS:
        if f"{relation}.als.recall@20" not in first:
            continue
        cells = [f"{r['metrics'][f'{relation}.served.recall@20']:.4f} / {r['metrics'][f'{relation}.served.ndcg@20']:.4f}"
                 f" ({r['kinds'][relation]}{'' if r['kinds'][relation] != 'blend' else ' ' + str(r['weights'][relation])})"
                 for r in results.values()]
        als = f"{first[f'{relation}.als.recall@20']:.4f} / {first[f'{relation}.als.ndcg@20']:.4f}"
        pop = f"{first[f'{relation}.popularity.recall@20']:.4f} / {first[f'{relation}.popularity.ndcg@20']:.4f}"
        quality.add_row(relation, *cells, als, pop)
    console.print(quality)
    costs = Table(title="training time and serving costs (median µs, in process)")
    costs.add_column("measure")
    for name in results:
        costs.add_column(name, justify="right")
    costs.add_row("feed train, seconds", *[f"{r['train_seconds']:.0f}" for r in results.values()])
    for measure in first_costs(results):
        costs.add_row(measure, *[f"{r['costs'][measure]:.0f}" for r in results.values()])
    console.print(costs)


def first_costs(results: dict[str, dict]) -> list[str]:
    """The cost names, in order."""
    return list(next(iter(results.values()))["costs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="A dataset folder (default: the default world, generated).")
    parser.add_argument("--retrievers", default="als,two-tower,auto")
    parser.add_argument("--users", type=int, default=300, help="Users per latency median.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "world"
            save_world(generate_world(WorldParams()), data, "parquet")
        results = run(data, args.retrievers.split(","), args.users, console, Path(tmp))
    print_tables(results, Console())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    sys.exit(main())
