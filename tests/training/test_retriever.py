"""`retriever: als | two-tower | auto` through real training runs on the small world."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from feed.bundle import load_bundle
from training.config import load_config
from training.pipeline import run_training

FAST = {"als": {"factors": 16, "iterations": 8}}


def _train(world, tmp_path, **overrides):
    config = load_config(overrides={**FAST, **overrides}, environ={})
    return run_training(world, config, tmp_path / "bundle", track=False, quiet=True)


def test_als_retriever_needs_no_two_tower_and_serves_als(small_world_dir, tmp_path):
    result = _train(small_world_dir, tmp_path, retriever="als")
    bundle = load_bundle(result.bundle_dir)
    assert bundle.tower is None and "tower.npz" not in bundle.manifest["files"]
    assert set(bundle.manifest["retriever"]["kinds"].values()) == {"als"}
    for relation in bundle.relations:
        assert result.metrics[f"{relation}.served.recall@20"] == result.metrics[f"{relation}.als.recall@20"]
    assert not any(k.startswith("two_tower.") for k in result.metrics)


def test_two_tower_retriever_serves_the_towers_vectors_for_every_relation(small_world_dir, tmp_path):
    result = _train(small_world_dir, tmp_path, retriever="two-tower")
    bundle = load_bundle(result.bundle_dir)
    described = bundle.manifest["retriever"]
    assert set(described["kinds"].values()) == {"two-tower"} and described["two_tower_epochs"] >= 1
    dim = bundle.manifest["config"]["two_tower"]["dim"]
    for rel in bundle.relations.values():
        assert rel.item_factors.shape[1] == dim and rel.mix.als_dim == 0
        assert np.allclose(np.linalg.norm(rel.item_factors, axis=1), 1.0, atol=1e-4)  # cosines, as trained
    known = bundle.tower.fold(bundle.relations["video"].user_items, np.arange(len(bundle.users)))
    assert np.allclose(known, bundle.relations["video"].user_factors, atol=1e-5)  # served = the tower's fold-in
    assert result.metrics["video.served.recall@20"] > result.metrics["video.popularity.recall@20"]


def test_auto_records_per_relation_why_and_logs_every_epoch_to_mlflow(small_world_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(overrides={**FAST, "mlflow": {"tracking_uri": uri}}, environ={})
    result = run_training(small_world_dir, config, tmp_path / "bundle", quiet=True)
    described = load_bundle(result.bundle_dir).manifest["retriever"]
    for relation, why in described["selection"].items():
        scores = {name: s["recall@20"] for name, s in why["candidates"].items()}
        assert scores[{0.0: "als", 1.0: "two-tower"}.get(why["weight"], f"blend@{why['weight']:g}")] == max(
            scores.values())
        assert result.metrics[f"{relation}.served.two_tower_weight"] == why["weight"]
    client = mlflow.MlflowClient(uri)
    losses = client.get_metric_history(result.run_id, "two_tower.loss")
    recalls = client.get_metric_history(result.run_id, "two_tower.valid_recall_at_20")
    assert len(losses) == len(described["training"]) >= 2 and len(recalls) >= 2
    assert sorted(m.step for m in losses) == list(range(1, len(losses) + 1))
    run = client.get_run(result.run_id)
    assert run.data.metrics["video.served.recall_at_20"] == pytest.approx(result.metrics["video.served.recall@20"])
