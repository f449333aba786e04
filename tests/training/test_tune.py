"""`feed tune`: trials on a validation split carved from training data only, nested runs, a loadable best config."""

from __future__ import annotations

import subprocess
import sys

import mlflow

from feed.dataset import build_catalog
from feed.splits import parse_split
from training.config import load_config
from training.tune import tune, validation_split


def test_validation_never_touches_the_test_side(small_world):
    events = small_world.dataset.events
    split = parse_split("time:0.2")(events)
    inner = validation_split(split)
    assert inner.train["ts"].max() < inner.test["ts"].min()
    assert inner.test["ts"].max() < split.test["ts"].min()
    with_valid = parse_split("random:0.8,0.1,0.1")(events)
    assert validation_split(with_valid).test is with_valid.valid


def test_search_returns_the_best_trial(small_world):
    split = parse_split("time:0.2")(small_world.dataset.events)
    base = load_config(overrides={"als": {"iterations": 3}}, environ={})
    seen = []
    result = tune(split, build_catalog(small_world.dataset), base, 4, "recall@20",
                  on_trial=lambda n, o, m: seen.append(m["recall@20"]))
    assert len(result.trials) == len(seen) == 4 and result.best_value == max(seen)
    weights = result.best_config.weights
    assert weights["refund"] == -weights["purchase"] and result.best_config.als.iterations == 3


def test_cli_writes_a_config_train_accepts_and_nests_trials(small_world_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "feed.cli", "tune", "--data", str(small_world_dir), "--trials", "3",
                          "--set", "als.iterations=3", "--out", str(tmp_path / "best.yaml"), "--tracking-uri", uri],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    config = load_config(tmp_path / "best.yaml", environ={})
    assert config.als.iterations == 3
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("selfretail-feed").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("kind") == "tune")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 3 and "als.factors" in trials[0].data.params
    assert parent.data.metrics["best_recall_at_20"] == max(t.data.metrics["recall_at_20"] for t in trials)
