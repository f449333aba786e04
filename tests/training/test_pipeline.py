"""A real training run on a small world, tracked in MLflow on SQLite in a temp dir."""

from __future__ import annotations

import mlflow
import pytest

from feed.bundle import load_bundle
from training.config import load_config
from training.pipeline import run_training


@pytest.fixture(scope="module")
def tracked_run(small_world_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    config = load_config(overrides={"als": {"factors": 16, "iterations": 8}, "mlflow": {"tracking_uri": uri},
                                    "index": {"relations": {"creator": {"factory": "IVF4,Flat",
                                                                        "search_params": "nprobe=4"}}}},
                         environ={})
    out = tmp_path_factory.mktemp("out") / "bundle"
    return run_training(small_world_dir, config, out, quiet=True), uri


def test_run_logs_params_metrics_and_bundle(tracked_run):
    result, uri = tracked_run
    run = mlflow.MlflowClient(uri).get_run(result.run_id)
    assert run.data.params["als.factors"] == "16"
    assert run.data.metrics["video.als.recall_at_20"] == pytest.approx(result.metrics["video.als.recall@20"])
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(result.run_id, "bundle")}
    assert "bundle/manifest.json" in artifacts and "bundle/index_video.faiss" in artifacts


def test_a_relation_can_have_its_own_index(tracked_run):
    relations = load_bundle(tracked_run[0].bundle_dir).manifest["relations"]
    assert (relations["creator"]["index_factory"], relations["creator"]["search_params"]) == ("IVF4,Flat", "nprobe=4")
    assert relations["video"]["index_factory"] == relations["product"]["index_factory"] == "Flat"


def test_registers_a_version_and_points_champion_at_it(tracked_run):
    result, uri = tracked_run
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias("selfretail-feed", "champion")
    assert str(version.version) == result.model_version
    assert version.tags["bundle_id"] == load_bundle(result.bundle_dir).bundle_id


def test_every_relation_is_evaluated_against_popularity(tracked_run):
    metrics = tracked_run[0].metrics
    for relation in ("video", "creator", "product"):
        for model in ("als", "popularity"):
            assert 0 <= metrics[f"{relation}.{model}.recall@20"] <= 1
    assert metrics["video.als.n_test_users"] > 50
    assert metrics["video.als.recall@20"] > metrics["video.popularity.recall@20"]  # 2x: tests/test_end_to_end.py


def test_an_index_that_cannot_be_built_names_the_relation_and_its_config_key():
    import numpy as np
    import scipy.sparse as sp

    from feed.errors import ConfigError
    from training.pipeline import _indexed
    from training.retriever import Fitted

    config = load_config(overrides={"index": {"relations": {"creator": {"factory": "IVF1024,Flat"}}}}, environ={})
    vectors = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    fitted = Fitted(None, vectors, vectors)
    with pytest.raises(ConfigError, match=r"the creator index \(index\.relations\.creator, 60 creators\): "
                                          r"index\.factory 'IVF1024,Flat' cannot be trained on 60 vectors"):
        _indexed("creator", fitted, sp.csr_matrix((60, 60)), config)
    assert _indexed("product", fitted, sp.csr_matrix((60, 60)), config).index.factory == "Flat"  # the default
