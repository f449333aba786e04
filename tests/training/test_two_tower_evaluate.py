"""`feed evaluate --models …,two-tower,blend`: one run, one split, the blend's choice recorded."""

from __future__ import annotations

import json

import mlflow
import pytest

from feed.dataset import build_catalog
from feed.splits import parse_split
from training.cli import evaluate as evaluate_command
from training.config import load_config
from training.evaluate import run_evaluation

TWO_TOWER = {"dim": 16, "epochs": 6, "patience": 2, "batch_size": 512, "temperature": 0.2, "user_id": False,
             "valid_users": 300}


@pytest.fixture(scope="module")
def report(small_world):
    config = load_config(overrides={"threads": 1, "als": {"factors": 16, "iterations": 8}, "two_tower": TWO_TOWER},
                         environ={})
    split = parse_split("time:0.2")(small_world.dataset.events)
    return run_evaluation(split, build_catalog(small_world.dataset), config, ["popularity", "als", "two-tower", "blend"])


def test_two_tower_and_blend_are_scored_next_to_the_baselines(report):
    models = report.models
    assert models["two-tower"]["recall@20"] > models["popularity"]["recall@20"]
    assert models["blend"]["n_users"] == models["als"]["n_users"] == models["two-tower"]["n_users"]
    assert models["two-tower"]["two_tower.best_epoch"] >= 1 and models["two-tower"]["two_tower.examples_per_s"] > 0


def test_the_blend_records_why_it_chose_its_weight(report):
    blend = report.models["blend"]
    grid = load_config(environ={}).two_tower.blend_weights
    assert blend["blend.weight"] in grid
    chosen = {0.0: "als", 1.0: "two-tower"}.get(blend["blend.weight"], f"blend@{blend['blend.weight']:g}")
    scores = {k.removeprefix("valid.").removesuffix(".recall@20"): v for k, v in blend.items()
              if k.startswith("valid.") and k.endswith(".recall@20")}
    assert {"als", "two-tower"} <= set(scores) and len(scores) == len(grid)
    assert scores[chosen] == max(scores.values())
    why = json.loads(report.params["selection"])["blend"]  # a JSON string: MLflow params take no nested '@' keys
    assert why["weight"] == blend["blend.weight"] and why["reason"].startswith(f"two-tower weight {why['weight']:g}")


def test_the_cli_runs_two_tower_and_blend(small_world_dir, tmp_path):
    from click.testing import CliRunner

    out, uri = tmp_path / "report.json", f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [a for k, v in {**{f"two_tower.{k}": v for k, v in TWO_TOWER.items()}, "threads": 1,
                           "two_tower.epochs": 2}.items() for a in ("--set", f"{k}={str(v).lower()}")]
    result = CliRunner().invoke(evaluate_command, ["--data", str(small_world_dir), "--models", "als,two-tower,blend",
                                                   "--k", "20", "--json", str(out), "--tracking-uri", uri, *sets])
    assert result.exit_code == 0, result.output
    models = json.loads(out.read_text())["models"]
    assert set(models) == {"als", "two-tower", "blend"} and "blend.weight" in models["blend"]
    runs = mlflow.MlflowClient(uri).search_runs(mlflow.MlflowClient(uri).search_experiments()[0].experiment_id)
    parent = next(r for r in runs if r.data.tags.get("kind") == "evaluate")
    assert json.loads(parent.data.params["selection"])["blend"]["weight"] == models["blend"]["blend.weight"]
