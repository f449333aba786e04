"""The training run as plain typed steps: load → split → evaluate → refit → bundle → MLflow."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from rich.console import Console

from feed.bundle import Bundle, RelationModel, write_bundle
from feed.dataset import (
    Catalog,
    build_catalog,
    build_interactions,
    data_fingerprint,
    holdout_positives,
    time_split,
    window,
)
from feed.errors import ConfigError
from feed.index import VectorIndex
from feed.io import load_dataset
from feed.metrics import evaluate
from feed.models.popularity import PopularityRecommender
from feed.stats import compute_stats
from training import tracking
from training.config import TrainConfig
from training.promote import PromotionRefused, promote
from training.ranker import stats_config, train_ranker
from training.retriever import Fitted, Plan, VectorScorer, fit_retrieval


@dataclass
class TrainResult:
    """What a training run produced."""

    bundle_dir: Path
    metrics: dict[str, float]
    tracking_uri: str | None = None
    run_id: str | None = None
    model_version: str | None = None
    promotion: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Steps:
    """Prints each step with its duration to stderr (the progress bars of ALS come from implicit)."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step and report it."""
        self.console.print(f"[bold]▶ {name}[/]")
        start = perf_counter()
        yield
        self.timings[name] = perf_counter() - start
        self.console.print(f"  done in {self.timings[name]:.1f}s")


def run_training(
    data_dir: Path, config: TrainConfig, out_dir: Path, track: bool = True, quiet: bool = False
) -> TrainResult:
    """Train every relation, evaluate against popularity, write the bundle and track it in MLflow."""
    steps = Steps(quiet)
    with steps.step(f"loading {data_dir}"):
        dataset = load_dataset(Path(data_dir))
        catalog = build_catalog(dataset)
    with steps.step(f"evaluating ALS, the {config.retriever} retriever and popularity on the held-out period"):
        metrics, cutoff, plan = evaluate_holdout(dataset.events, catalog, config, not quiet)
    _print_plan(steps.console, plan)
    with steps.step("fitting the served models" + (" on all events" if config.refit_full else "")):
        events = dataset.events if config.refit_full else dataset.events[dataset.events["ts"] < cutoff]
        bundle, ranker_metrics = fit_bundle(events, catalog, config, not quiet, dataset.follows, plan)
        metrics.update(ranker_metrics)
    with steps.step(f"writing bundle to {out_dir}"):
        manifest = bundle_manifest(config, events, cutoff, metrics, bundle)
        manifest["eval_key"] = config.eval_key(data_fingerprint(dataset.events))
        write_bundle(bundle, Path(out_dir), manifest)
    result = TrainResult(Path(out_dir), metrics, timings=steps.timings)
    if track:
        with steps.step("logging to MLflow"):
            track_run(result, bundle, config)
    _print_metrics(steps.console, metrics)
    return result


def evaluate_holdout(
    events: pd.DataFrame, catalog: Catalog, config: TrainConfig, progress: bool
) -> tuple[dict[str, float], pd.Timestamp, Plan]:
    """Fit on events before the cut-off and score ALS, the served retriever and popularity on what came after;
    the retriever plan (chosen on the two-tower's validation hold-out inside the training part) is returned for
    the refit."""
    split = time_split(events, config.split.test_fraction)
    train = build_interactions(split.train, catalog, config.weights, config.full_watch_ratio)
    retrieval = fit_retrieval(train, config, progress)
    metrics: dict[str, float] = dict(retrieval.report)
    for relation, fitted in retrieval.relations.items():
        test = holdout_positives(split.test, train, relation, config.eval.weights, config.eval.min_weight)
        matrix = train.matrices[relation]
        scored = {"als": evaluate(fitted.als, matrix, test, config.eval.ks),
                  "popularity": evaluate(PopularityRecommender().fit(matrix), matrix, test, config.eval.ks)}
        served = fitted.mix is not None and fitted.mix.kind != "als"
        scored["served"] = evaluate(VectorScorer(fitted), matrix, test, config.eval.ks) if served else scored["als"]
        for name, scores in scored.items():
            metrics.update({f"{relation}.{name}.{k}": v for k, v in scores.items()})
        metrics[f"{relation}.served.two_tower_weight"] = retrieval.plan.weights.get(relation, 0.0)
    return metrics, split.cutoff, retrieval.plan


def fit_bundle(events: pd.DataFrame, catalog: Catalog, config: TrainConfig, progress: bool,
               follows: pd.DataFrame | None = None, plan: Plan | None = None) -> tuple[Bundle, dict[str, float]]:
    """Fit the served retriever of every relation on `events` (per `plan`, else chosen on validation), index
    the item vectors, compute stats and train the ranker; returns the bundle and the ranker's held-out metrics."""
    data = build_interactions(events, catalog, config.weights, config.full_watch_ratio)
    retrieval = fit_retrieval(data, config, progress, plan)
    relations = {r: _indexed(r, f, data.matrices[r], config) for r, f in retrieval.relations.items()}
    popularity = PopularityRecommender().fit(data.matrices["video"]).item_counts
    video_users = relations["video"].user_factors if "video" in relations else None
    stats = compute_stats(events, catalog, data.users, video_users, stats_config(config))
    ranker, metrics = train_ranker(events, catalog, follows, config, progress, retrieval.plan) if \
        config.ranker.enabled else (None, {})
    bundle = Bundle(data.users, catalog, popularity, relations, data.seen, data.bought, stats=stats, ranker=ranker,
                    tower=retrieval.tower)
    bundle.manifest["retriever"] = retrieval.plan.describe()
    return bundle, metrics


def _indexed(relation: str, fitted: Fitted, user_items: sp.csr_matrix, config: TrainConfig) -> RelationModel:
    """One relation's served vectors and their FAISS index (and, for videos, each video's nearest videos)."""
    try:
        index = VectorIndex.build(fitted.item_factors, *config.index.of(relation))
    except ConfigError as exc:  # name the relation and the config key: the factory may be a relation's own
        raise ConfigError(f"the {relation} index ({config.index.key_of(relation)}, {len(fitted.item_factors):,} "
                          f"{relation}s): {exc}") from exc
    k = config.index.neighbours if relation == "video" else 0
    neighbours = index.neighbours(fitted.item_factors, k) if k else None
    return RelationModel(fitted.user_factors, fitted.item_factors, index, user_items, fitted.mix, neighbours)


def bundle_manifest(
    config: TrainConfig, events: pd.DataFrame, cutoff: pd.Timestamp, metrics: dict[str, float], bundle: Bundle
) -> dict[str, Any]:
    """Provenance recorded in manifest.json: config, digest, data window, metrics, versions, sample users."""
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "config": config.model_dump(mode="json"),
        "config_digest": config.digest(),
        "data_window": {**window(events), "eval_cutoff": cutoff.isoformat(), "n_events": len(events)},
        "metrics": metrics,
        "library_versions": library_versions(),
        "sample_user_ids": sample_users(bundle, 2),
        "value_formula": config.ranker.value.model_dump(mode="json"),
        "retriever": bundle.manifest.get("retriever", {}),
    }


def sample_users(bundle: Bundle, n: int) -> list[str]:
    """The n most active users (shown by `feed serve` as example feeds)."""
    activity = np.asarray((bundle.seen > 0).sum(axis=1)).ravel()
    return [str(u) for u in bundle.users.ids[np.argsort(-activity, kind="stable")[:n]]]


def library_versions() -> dict[str, str]:
    """Versions of the libraries a bundle depends on."""
    names = ["selfretail-feed", "implicit", "faiss-cpu", "numpy", "scipy", "pandas", "pyarrow", "mlflow"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def track_run(result: TrainResult, bundle: Bundle, config: TrainConfig) -> None:
    """Log the run, register the bundle and move the alias per `mlflow.promote` (fills result's MLflow fields)."""
    uri = tracking.resolve_tracking_uri(config.mlflow.tracking_uri)
    tags = {"bundle_id": bundle.bundle_id, "config_digest": config.digest(),
            "eval_key": str(bundle.manifest.get("eval_key", ""))}
    epochs = bundle.manifest.get("retriever", {}).get("training", [])  # the two-tower's, when it was trained
    run_id, source = tracking.log_training_run(uri, config.mlflow.experiment, config.model_dump(mode="json"),
                                               result.metrics, result.bundle_dir, tags, epochs)
    result.tracking_uri, result.run_id = uri, run_id
    if config.mlflow.register_model:
        name = config.mlflow.registered_model
        result.model_version = tracking.register_version(uri, name, source, run_id, tags)
        result.promotion = _apply_policy(uri, name, result.model_version, config)


def _apply_policy(uri: str, name: str, version: str, config: TrainConfig) -> str:
    """Move the alias to the new version as configured: through the gate, always, or never."""
    if config.mlflow.promote == "never":
        return f"registered version {version}; alias @{config.mlflow.alias} left as it was (promote: never)"
    try:
        decision = promote(uri, name, version, config.mlflow.alias, force=config.mlflow.promote == "always")
    except PromotionRefused as exc:
        return f"not promoted to @{config.mlflow.alias}: {exc}"
    return f"promoted version {version} to @{config.mlflow.alias}: {decision.reason}"


def _print_plan(console: Console, plan: Plan) -> None:
    """Which retriever each relation serves, and why."""
    for relation, why in plan.selection.items():
        if isinstance(why, dict):
            console.print(f"  {relation}: {why.get('reason', '')}")


def _print_metrics(console: Console, metrics: dict[str, float]) -> None:
    """The served retriever next to ALS and popularity per relation and metric."""
    from rich.table import Table

    table = Table(title="held-out evaluation (full ranking, training items masked)")
    for column in ("relation", "metric", "served", "ALS", "popularity", "served / popularity"):
        table.add_column(column)
    for key in sorted(k for k in metrics if ".als." in k and "n_test_users" not in k):
        relation, _, metric = key.split(".", 2)
        als, pop = metrics[key], metrics[f"{relation}.popularity.{metric}"]
        served = metrics.get(f"{relation}.served.{metric}", als)
        ratio = f"{served / pop:.2f}×" if pop > 0 else "—"
        table.add_row(relation, metric, f"{served:.4f}", f"{als:.4f}", f"{pop:.4f}", ratio)
    console.print(table)
    if "ranker.watch.auc" in metrics:
        console.print("ranker on its held-out impressions: " + ", ".join(
            f"{h} AUC {metrics[f'ranker.{h}.auc']:.3f} (log-loss {metrics[f'ranker.{h}.logloss']:.4f} vs "
            f"{metrics[f'ranker.{h}.logloss_base_rate']:.4f} base rate)" for h in ("watch", "share", "purchase")))
