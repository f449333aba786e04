"""The promotion gate, alias history and rollback on a real MLflow store (SQLite)."""

from __future__ import annotations

import mlflow
import pytest

from feed.errors import FeedError
from training import tracking
from training.promote import PromotionRefused, promote, rollback

NAME = "m"


def register(uri: str, value: float | None, eval_key: str = "k1") -> str:
    """A run with one metric, registered as a new version (alias untouched)."""
    metrics = {} if value is None else {"video.als.recall@20": value}
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("e") or client.get_experiment(client.create_experiment("e"))
    run = client.create_run(experiment.experiment_id)
    for key, v in metrics.items():
        client.log_metric(run.info.run_id, tracking.mlflow_name(key), v)
    client.set_terminated(run.info.run_id)
    return tracking.register_version(uri, NAME, "file:///nowhere", run.info.run_id, {"eval_key": eval_key})


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def champion(uri: str) -> str:
    return str(mlflow.MlflowClient(uri).get_model_version_by_alias(NAME, "champion").version)


def test_first_version_becomes_champion_then_only_a_better_one(uri):
    v1 = register(uri, 0.20)
    assert promote(uri, NAME, v1).reason == "no champion yet" and champion(uri) == v1
    v2 = register(uri, 0.18)
    with pytest.raises(PromotionRefused, match="not better: video.served.recall@20 0.1800 vs champion 0.2000"):
        promote(uri, NAME, v2)
    assert champion(uri) == v1
    tags = mlflow.MlflowClient(uri).get_model_version(NAME, v2).tags
    assert tags["promotion.decision"] == "refused" and "not better" in tags["promotion.reason"]
    v3 = register(uri, 0.25)
    decision = promote(uri, NAME)  # the newest
    assert decision.version == v3 and decision.previous == v1 and champion(uri) == v3
    assert mlflow.MlflowClient(uri).get_model_version(NAME, v3).tags["promotion.previous_champion"] == v1


def test_different_evaluations_are_not_compared_unless_forced(uri):
    promote(uri, NAME, register(uri, 0.10))
    other = register(uri, 0.90, eval_key="k2")
    with pytest.raises(PromotionRefused, match="not evaluated on the same data"):
        promote(uri, NAME, other)
    assert promote(uri, NAME, other, force=True).reason.startswith("forced")
    assert champion(uri) == other


def test_rollback_restores_the_previous_champion(uri):
    v1, v2 = register(uri, 0.1), register(uri, 0.2)
    promote(uri, NAME, v1)
    promote(uri, NAME, v2)
    assert rollback(uri, NAME).version == v1 and champion(uri) == v1
    with pytest.raises(PromotionRefused, match="no previous champion"):
        rollback(uri, NAME)
    assert "restored to version" in mlflow.MlflowClient(uri).get_model_version(NAME, v2).tags["rollback"]


def test_missing_metric_and_same_version_are_refused(uri):
    v1 = register(uri, 0.1)
    promote(uri, NAME, v1)
    with pytest.raises(PromotionRefused, match="already the champion"):
        promote(uri, NAME, v1)
    with pytest.raises(PromotionRefused, match="missing for the challenger"):
        promote(uri, NAME, register(uri, None))
    with pytest.raises(FeedError, match="no registered model named 'nope'"):
        promote(uri, "nope")
