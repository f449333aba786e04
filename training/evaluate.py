"""`feed evaluate`: every model and baseline on one split, with the same positives and the same mask.

Recommendation lists are computed once per model and scored for every user segment (all, cold, warm) and
target (all held-out positives, held-out purchases), so every number in the table comes from the same lists.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from feed.dataset import (Catalog, IdMap, Interactions, build_catalog, build_interactions, holdout_positives,
                          interaction_matrix, relation_items)
from feed.errors import ConfigError
from feed.io import load_dataset, read_table
from feed.metrics import beyond_accuracy, hit_matrix, relevant_counts, ranking_metrics, recommend_lists
from feed.models.als import ALSRecommender
from feed.models.base import Recommender, ScoringRecommender
from feed.models.popularity import PopularityRecommender
from feed.schema import Dataset
from feed.splits import Split, parse_split, split_given
from training.config import TrainConfig

MODELS = ("popularity", "implicit-als", "als", "own-cart", "two-tower", "blend")
DEFAULT_MODELS = ("popularity", "implicit-als", "als")


class ImplicitALSDirect:
    """Baseline: `implicit`'s ALS class and its own `recommend`, no project code in between."""

    def __init__(self, params: dict[str, Any], seed: int, threads: int) -> None:
        self.params = {**params, "random_state": seed, "num_threads": threads}
        self.model: Any = None

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> Self:
        """implicit's fit, with its recommended single-threaded BLAS."""
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):  # implicit checks the BLAS threads when the class is built
            self.model = AlternatingLeastSquares(**self.params)
            self.model.fit(sp.csr_matrix(user_items, dtype=np.float32), show_progress=show_progress)
        return self

    def recommend(self, user_rows: np.ndarray, user_items: sp.csr_matrix, N: int = 10,
                  filter_already_liked_items: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """implicit's batch recommend, filtering the masked items."""
        return self.model.recommend(user_rows, user_items, N=N, filter_already_liked_items=filter_already_liked_items)


class OwnItemsFirst(ScoringRecommender):
    """Leakage rule: the user's own items of one event type (e.g. carted) first, then popularity."""

    def __init__(self, own: sp.csr_matrix) -> None:
        self.own = sp.csr_matrix(own)  # (n_users, n_items) > 0 where the user had the event
        self.counts = np.zeros(own.shape[1], dtype=np.float32)

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> Self:
        """Popularity breaks ties and fills the rest."""
        self.counts = PopularityRecommender().fit(user_items).item_counts
        return self

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """Own items score above every popularity score."""
        bonus = (self.own[user_rows] > 0).toarray() * (self.counts.max(initial=0.0) + 1.0)
        return bonus + self.counts


@dataclass
class EvalReport:
    """Everything `feed evaluate` prints and writes."""

    split: str
    relation: str
    n_test_users: int
    models: dict[str, dict[str, float]]
    params: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The --json document."""
        return {"split": self.split, "relation": self.relation, "n_test_users": self.n_test_users,
                "params": self.params, "models": self.models}


def load_split(data: Path | None, spec: str, seed: int, train_events: Path | None,
               test_events: Path | None) -> tuple[Split, Catalog]:
    """The split and catalog from a dataset folder and a split spec, or from given train/test files."""
    if (train_events is None) != (test_events is None):
        raise ConfigError("--train-events and --test-events go together")
    if train_events is not None:
        train, test = _events(train_events), _events(test_events)
        catalog = build_catalog(load_dataset(data) if data else Dataset(events=pd.concat([train, test])))
        return split_given(train, test), catalog
    if data is None:
        raise ConfigError("give --data DIR, or --train-events and --test-events")
    dataset = load_dataset(data)
    return parse_split(spec, seed)(dataset.events), build_catalog(dataset)


def _events(path: Path) -> pd.DataFrame:
    """Events from a dataset folder or from one events file."""
    return load_dataset(path).events if Path(path).is_dir() else read_table(Path(path), "events")


def run_evaluation(split: Split, catalog: Catalog, config: TrainConfig, models: Sequence[str],
                   relation: str = "video", mask_events: Sequence[str] = (), cold_threshold: int = 5,
                   progress: bool = False) -> EvalReport:
    """Fit every model on the split's training side and score them all on the same held-out positives."""
    train, mask, targets = evaluation_data(split, catalog, config, relation, mask_events)
    matrix = train.matrices[relation]
    results, fitted = {}, {}
    for name in models:  # in order: a blend after "two-tower" reuses that fitted two-tower model
        fitted[name] = _model(name, config, split.train, train, relation, fitted)
        results[name] = _score_model(fitted[name], matrix, mask, targets, config.eval.ks, cold_threshold, progress)
    n_users = len(_eval_users(matrix, targets["all"]))
    choices = {name: m.selection for name, m in fitted.items() if getattr(m, "selection", None)}  # e.g. the blend's
    return EvalReport(split.description, relation, n_users, results,
                      {"mask_events": list(mask_events), "cold_threshold": cold_threshold, "ks": config.eval.ks,
                       **({"selection": json.dumps(choices, sort_keys=True)} if choices else {})})


def evaluation_data(split: Split, catalog: Catalog, config: TrainConfig, relation: str = "video",
                    mask_events: Sequence[str] = ()) -> tuple[Interactions, sp.csr_matrix, dict[str, sp.csr_matrix]]:
    """The training interactions, the mask of never-recommended items, and the held-out targets of a split."""
    users = IdMap.from_values(pd.concat([split.train["user_id"], split.test["user_id"]]))
    train = build_interactions(split.train, catalog, config.weights, config.full_watch_ratio, users=users)
    if relation not in train.matrices:
        raise ConfigError(f"relation {relation!r} needs a catalog; this data supports {list(train.matrices)}")
    mask = _mask(split.train, train, relation, mask_events)
    if split.valid is not None and len(split.valid):  # known interactions too, though not trained on
        mask = sp.csr_matrix((mask + _binary(split.valid, train, relation)) > 0, dtype=np.float32)
    return train, mask, _targets(split.test, train, relation, config, mask)


def _mask(train_events: pd.DataFrame, train: Interactions, relation: str, events: Sequence[str]) -> sp.csr_matrix:
    """Items never to recommend: all training items, or only those with the given event types."""
    if not events:
        return train.matrices[relation]
    chosen = train_events[train_events["event"].isin(list(events))]
    return _binary(chosen, train, relation)


def _binary(events: pd.DataFrame, train: Interactions, relation: str) -> sp.csr_matrix:
    """(n_users, n_items) 1 where the user has any of these events on the item."""
    user_rows = train.users.rows(events["user_id"].to_numpy(dtype=object))
    items = relation_items(events, train.catalog, relation)
    matrix = interaction_matrix(user_rows, items, np.ones(len(events)), train.matrices[relation].shape)
    matrix.data[:] = 1.0
    return matrix


def _targets(test_events: pd.DataFrame, train: Interactions, relation: str, config: TrainConfig,
             mask: sp.csr_matrix) -> dict[str, sp.csr_matrix]:
    """Held-out positives, and held-out purchases alone (purchase-recall)."""
    positives = holdout_positives(test_events, train, relation, config.eval.weights, config.eval.min_weight, mask)
    purchases = test_events[test_events["event"] == "purchase"]
    bought = _binary(purchases, train, relation) if len(purchases) else sp.csr_matrix(positives.shape)
    bought = sp.csr_matrix(bought - bought.multiply(mask > 0))
    bought.eliminate_zeros()
    return {"all": positives, "purchase": bought}


def _model(name: str, config: TrainConfig, train_events: pd.DataFrame, train: Interactions,
           relation: str, fitted: dict[str, Recommender] | None = None) -> Recommender:
    """An unfitted model or baseline by name."""
    params = config.als.model_dump()
    if name == "popularity":
        return PopularityRecommender()
    if name == "implicit-als":
        return ImplicitALSDirect(params, config.seed, config.threads)
    if name == "als":
        return ALSRecommender(**params, random_state=config.seed, num_threads=config.threads)
    if name == "own-cart":
        return OwnItemsFirst(_binary(train_events[train_events["event"] == "cart"], train, relation))
    if name in ("two-tower", "blend"):
        return _two_tower(name, config, train, relation, (fitted or {}).get("two-tower"))
    raise ConfigError(f"unknown model {name!r}; expected some of {list(MODELS)}")


def _two_tower(name: str, config: TrainConfig, train: Interactions, relation: str,
               fitted_tower: Recommender | None) -> Recommender:
    """The two-tower model (video features from the catalog when there is one), or its blend with ALS.

    The blend reuses a two-tower model fitted earlier in the same run (same data and config) instead of
    training a second one; its fit_seconds then count ALS and the weight choice only.
    """
    from feed.models.two_tower import ItemFeatures, TwoTowerRecommender
    from training.blend import BlendRecommender
    from training.two_tower import two_tower_model

    features = ItemFeatures.from_catalog(train.catalog, config.two_tower.price_buckets) if relation == "video" else None
    if name == "two-tower":
        return two_tower_model(config, features)
    als = ALSRecommender(**config.als.model_dump(), random_state=config.seed, num_threads=config.threads)
    if isinstance(fitted_tower, TwoTowerRecommender):
        return BlendRecommender(als, fitted_tower, config.two_tower.blend_weights, tower_fitted=True)
    return BlendRecommender(als, two_tower_model(config, features), config.two_tower.blend_weights)


def _eval_users(matrix: sp.csr_matrix, test: sp.csr_matrix) -> np.ndarray:
    """Users with held-out items and some training history."""
    return np.flatnonzero((relevant_counts(test) > 0) & (np.diff(matrix.indptr) > 0))


def _score_model(model: Recommender, matrix: sp.csr_matrix, mask: sp.csr_matrix,
                 targets: dict[str, sp.csr_matrix], ks: Sequence[int], cold_threshold: int,
                 progress: bool) -> dict[str, float]:
    """Fit, recommend once for every evaluated user, and score every segment and target from those lists."""
    start = perf_counter()
    model.fit(matrix, show_progress=progress)
    fitted = perf_counter()
    users = np.flatnonzero(np.diff(matrix.indptr) > 0)  # every user with history: lists computed once
    lists = recommend_lists(model, mask, users, max(ks))  # (n_users_with_history, max K)
    result = {"fit_seconds": fitted - start, "recommend_seconds": perf_counter() - fitted}
    result.update(model.report() if hasattr(model, "report") else {})  # e.g. the blend's validation choice
    history = np.diff(matrix.indptr)[users]
    for target, test in targets.items():
        for segment, chosen in (("", history >= 0), ("cold.", history < cold_threshold),
                                ("warm.", history >= cold_threshold)):
            result.update(_subset_metrics(lists, users, chosen, test, ks, _prefix(target, segment)))
    evaluated = relevant_counts(targets["all"][users]) > 0
    popularity = np.asarray((matrix > 0).sum(axis=0)).ravel()
    result.update(beyond_accuracy(lists[evaluated], matrix.shape[1], popularity, ks, n_users=len(users)))
    return result


def _prefix(target: str, segment: str) -> str:
    """Metric name prefix: '' for all positives, 'purchase_' for purchases; segment first."""
    return segment + ("" if target == "all" else f"{target}_")


def _subset_metrics(lists: np.ndarray, users: np.ndarray, chosen: np.ndarray, test: sp.csr_matrix,
                    ks: Sequence[int], prefix: str) -> dict[str, float]:
    """Mean ranking metrics over the chosen users that have held-out items in `test`."""
    rows = test[users[chosen]]
    keep = relevant_counts(rows) > 0
    out = {f"{prefix}n_users": float(keep.sum())}
    if keep.any():
        per_user = ranking_metrics(hit_matrix(lists[chosen][keep], rows[keep]), relevant_counts(rows[keep]), ks)
        out.update({f"{prefix}{name}": float(values.mean()) for name, values in per_user.items()})
    return out


def print_report(report: EvalReport, ks: Sequence[int], console: Any = None) -> None:
    """One column per model, one row per metric: accuracy at each K, purchase-recall, segments, beyond."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.relation}s — {report.split} — {report.n_test_users:,} test users")
    table.add_column("metric")
    for name in report.models:
        table.add_column(name, justify="right")
    for row in report_rows(ks):
        values = [metrics.get(row) for metrics in report.models.values()]
        if any(v is not None for v in values):
            table.add_row(row, *(_cell(v) for v in values))
    (console or Console()).print(table)


def report_rows(ks: Sequence[int]) -> list[str]:
    """The metrics shown, in order."""
    k = 20 if 20 in ks else max(ks)
    accuracy = [f"{m}@{x}" for m in ("recall", "ndcg") for x in ks]
    extra = [f"hit_rate@{k}", f"mrr@{k}", f"precision@{k}", f"purchase_recall@{k}", "purchase_n_users",
             f"cold.recall@{k}", "cold.n_users", f"warm.recall@{k}", "warm.n_users"]
    return [*accuracy, *extra, f"coverage@{k}", f"gini@{k}", f"novelty@{k}", "fit_seconds", "recommend_seconds"]


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
