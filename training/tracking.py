"""MLflow tracking and the model registry: one run per training, a registered version, an alias."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from feed.errors import FeedError
from feed.paths import resolve_tracking_uri

__all__ = ["resolve_tracking_uri", "log_training_run", "register_version"]


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, keep artifacts in a folder beside the database file; else the server decides."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return (db.parent / "artifacts").resolve().as_uri()


def mlflow_name(metric: str) -> str:
    """MLflow metric names cannot hold '@': 'video.als.recall@20' -> 'video.als.recall_at_20'."""
    return metric.replace("@", "_at_")


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as dotted MLflow params."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flat_params(value, f"{name}.") if isinstance(value, dict) else {name: str(value)})
    return out


def log_training_run(
    uri: str,
    experiment: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    bundle_dir: Path,
    tags: dict[str, str],
    series: list[dict[str, Any]] | None = None,
) -> tuple[str, str]:
    """Log one run with params, metrics, per-step `series` (records with a "step", e.g. the two-tower's epochs)
    and the bundle as artifacts; returns (run_id, bundle artifact URI)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment_id = _experiment_id(client, experiment, artifact_root(uri))
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    try:
        _log_values(client, run_id, params, metrics)
        _log_series(client, run_id, series or [])
        client.log_artifacts(run_id, str(bundle_dir), "bundle")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id, f"{run.info.artifact_uri}/bundle"


def _log_series(client: Any, run_id: str, records: list[dict[str, Any]], prefix: str = "two_tower.") -> None:
    """Every record's numbers at its step (strings such as the phase are left out)."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    metrics = [Metric(mlflow_name(prefix + k), float(v), ts, int(record["step"]))
               for record in records for k, v in record.items() if k != "step" and isinstance(v, (int, float))]
    for lo in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[lo:lo + 1000])


def _experiment_id(client: Any, name: str, location: str | None) -> str:
    """Id of the named experiment, created on first use."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=location)


def _log_values(client: Any, run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
    """Params and metrics in one batch call."""
    from mlflow.entities import Metric, Param

    ts = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(mlflow_name(k), float(v), ts, 0) for k, v in metrics.items()],
        params=[Param(k, v[:6000]) for k, v in flat_params(params).items()],
    )


def register_version(uri: str, name: str, source: str, run_id: str, tags: dict[str, str]) -> str:
    """Register the bundle as a new version of `name` (aliases are moved by training.promote); returns it."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description="Self-retail feed bundle (ALS + FAISS indexes).")
    version = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
    if version.status not in ("READY", None):
        raise FeedError(f"model version {name}/{version.version} is {version.status}, not READY")
    return str(version.version)


def start_parent(uri: str, experiment: str, name: str, params: dict[str, Any]) -> str:
    """Open a parent run (evaluation, tuning) and return its id; close it with `finish`."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment_id = _experiment_id(client, experiment, artifact_root(uri))
    parent = client.create_run(experiment_id, tags={"mlflow.runName": name, "kind": name})
    _log_values(client, parent.info.run_id, params, {})
    return parent.info.run_id


def log_child(uri: str, parent_id: str, name: str, params: dict[str, Any], metrics: dict[str, float]) -> str:
    """One finished run nested under the parent."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment_id = client.get_run(parent_id).info.experiment_id
    child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_id, "mlflow.runName": name,
                                                   "model": name})
    _log_values(client, child.info.run_id, params, metrics)
    client.set_terminated(child.info.run_id, "FINISHED")
    return child.info.run_id


def finish(uri: str, run_id: str, metrics: dict[str, float] | None = None, status: str = "FINISHED") -> None:
    """Close a run, with final metrics."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    if metrics:
        _log_values(client, run_id, {}, metrics)
    client.set_terminated(run_id, status)


def log_evaluation(uri: str, experiment: str, params: dict[str, Any], models: dict[str, dict[str, float]]) -> str:
    """A parent run for the evaluation and one nested run per model; returns the parent run id."""
    parent_id = start_parent(uri, experiment, "evaluate", params)
    for name, metrics in models.items():
        log_child(uri, parent_id, name, {"model": name}, metrics)
    finish(uri, parent_id)
    return parent_id
