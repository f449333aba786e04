"""`feed evaluate`: baselines next to project models on one split, JSON, MLflow parent and nested runs."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from feed.dataset import build_catalog
from feed.errors import ConfigError
from feed.schema import Dataset
from feed.splits import parse_split, split_given
from training.cli import DEFAULT_MODEL_NAMES
from training.config import load_config
from training.evaluate import DEFAULT_MODELS, run_evaluation


@pytest.fixture(scope="module")
def report(small_world):
    config = load_config(overrides={"als": {"factors": 16, "iterations": 8}}, environ={})
    split = parse_split("time:0.2")(small_world.dataset.events)
    return run_evaluation(split, build_catalog(small_world.dataset), config, ["popularity", "implicit-als", "als"])


def test_project_als_matches_implicit_used_directly(report):
    ours, direct = report.models["als"], report.models["implicit-als"]
    for key in ("recall@20", "ndcg@20", "purchase_recall@20", "coverage@20"):
        assert ours[key] == pytest.approx(direct[key], abs=1e-9)


def test_every_metric_family_is_reported(report):
    metrics = report.models["als"]
    for k in (10, 20, 50):
        for name in ("recall", "ndcg", "hit_rate", "mrr", "precision", "coverage", "gini", "novelty",
                     "purchase_recall", "cold.recall", "warm.recall"):
            assert f"{name}@{k}" in metrics, f"{name}@{k}"
    assert metrics["cold.n_users"] + metrics["warm.n_users"] == metrics["n_users"] == report.n_test_users
    assert report.models["als"]["recall@20"] > report.models["popularity"]["recall@20"]


def events(rows: list[tuple[str, str, str]], day: int) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "video_id", "event"])
    frame["ts"] = pd.Timestamp("2026-01-01", tz="UTC").as_unit("ms") + pd.Timedelta(days=day)
    frame["watch_ms"] = np.nan
    frame["event_id"] = [f"e{day}-{i}" for i in range(len(frame))]
    return frame


def test_own_cart_rule_wins_when_only_purchases_are_masked():
    """The Beibei leak: held-out purchases are often already in the user's cart."""
    rng = np.random.default_rng(0)
    train_rows, test_rows = [], []
    for u in range(60):
        carted = rng.choice(40, 5, replace=False)
        train_rows += [(f"u{u}", f"v{i}", "cart") for i in carted]
        train_rows += [(f"u{u}", f"v{i}", "purchase") for i in rng.choice(40, 2, replace=False)]
        test_rows.append((f"u{u}", f"v{carted[0]}", "purchase"))
    train, test = events(train_rows, 0), events(test_rows, 1)
    config = load_config(overrides={"als": {"factors": 4, "iterations": 3}}, environ={})
    catalog = build_catalog(Dataset(events=pd.concat([train, test])))
    report = run_evaluation(split_given(train, test), catalog, config, ["popularity", "own-cart"],
                            mask_events=["purchase"])
    assert report.models["own-cart"]["hit_rate@10"] == 1.0 > report.models["popularity"]["hit_rate@10"]


def test_unknown_model_and_relation_are_config_errors(small_world):
    config = load_config(environ={})
    split = parse_split("time")(small_world.dataset.events)
    catalog = build_catalog(small_world.dataset)
    with pytest.raises(ConfigError, match="unknown model 'lightgcn'"):
        run_evaluation(split, catalog, config, ["lightgcn"])
    events_only = build_catalog(Dataset(events=small_world.dataset.events))
    with pytest.raises(ConfigError, match="relation 'creator' needs a catalog"):
        run_evaluation(split, events_only, config, ["popularity"], relation="creator")


def test_cli_writes_json_and_logs_nested_runs(small_world_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "feed.cli", "evaluate", "--data", str(small_world_dir),
                          "--split", "random:0.8,0.2", "--k", "10,20", "--json", str(tmp_path / "r.json"),
                          "--tracking-uri", uri, "--set", "als.factors=8", "--set", "als.iterations=3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    body = json.loads((tmp_path / "r.json").read_text())
    assert body["split"].startswith("random") and body["n_test_users"] > 100
    assert set(body["models"]) == set(DEFAULT_MODELS) and "recall@20" in body["models"]["als"]
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("selfretail-feed").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and {r.data.tags["model"] for r in children} == set(DEFAULT_MODELS)
    assert children[0].data.metrics["recall_at_20"] >= 0


def test_cli_given_files_and_bad_flags(small_world, tmp_path):
    split = parse_split("time")(small_world.dataset.events)
    split.train.to_parquet(tmp_path / "train.parquet")
    split.test.to_parquet(tmp_path / "test.parquet")
    base = [sys.executable, "-m", "feed.cli", "evaluate", "--no-track", "--models", "popularity"]
    out = subprocess.run(base + ["--train-events", str(tmp_path / "train.parquet"),
                                 "--test-events", str(tmp_path / "test.parquet")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "given" in out.stdout.lower(), out.stderr[-2000:]
    out = subprocess.run(base + ["--train-events", str(tmp_path / "train.parquet")], capture_output=True, text=True)
    assert out.returncode == 1 and "go together" in out.stderr
    out = subprocess.run(base + ["--k", "ten"], capture_output=True, text=True)
    assert out.returncode == 2 and "--k" in out.stderr


def test_cli_default_models_match_the_library():
    assert DEFAULT_MODEL_NAMES == DEFAULT_MODELS


def test_validation_items_are_masked_in_the_test_evaluation():
    """u0's validation item is the most popular one; only masking it lets popularity hit u0's test item."""
    from feed.splits import Split

    crowd = [(f"c{i}", "v_top", "view") for i in range(5)] + [(f"c{i}", "v_next", "view") for i in range(3)]
    train = events(crowd + [("u0", "v_low", "view")], 0)
    valid, test = events([("u0", "v_top", "view")], 1), events([("u0", "v_next", "view")], 2)
    catalog = build_catalog(Dataset(events=pd.concat([train, valid, test])))
    config = load_config(environ={})
    with_valid = run_evaluation(Split(train, test, valid), catalog, config, ["popularity"])
    without = run_evaluation(Split(train, test), catalog, config, ["popularity"])
    assert with_valid.models["popularity"]["hit_rate@10"] == 1.0
    assert with_valid.models["popularity"]["mrr@10"] == 1.0 and without.models["popularity"]["mrr@10"] == 0.5
