"""The served retriever of each relation: ALS, the two-tower model, or their blend — chosen on validation.

`config.retriever`:
- `als`: ALS alone (no torch at all);
- `two-tower`: the two-tower vectors for every relation that has them;
- `auto`: the two-tower trainer holds out part of each user's items for early stopping; on that same hold-out
  every weight of `two_tower.blend_weights` (0 = ALS, 1 = two-tower) is scored per relation (creators and
  products through the videos' creator and product) and the best Recall@20 wins. `Plan.selection` says why.

A `Plan` is made once, on the evaluation split, and reused for the served refit and the ranker's feature model:
the same weights and the two-tower's early-stopped number of epochs (so neither refit needs a hold-out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from feed.dataset import Interactions
from feed.models.als import ALSRecommender
from feed.models.base import ScoringRecommender
from feed.models.two_tower import ItemFeatures, TwoTowerRecommender, TwoTowerVectors
from feed.retrieval import Mix, Tower, kind_of
from training.blend import choose_weight
from training.config import TrainConfig
from training.fitting import als, fitted_relations


@dataclass
class Plan:
    """What retriever each relation serves, and how long the two-tower model trains when refitted."""

    weights: dict[str, float]  # relation -> two-tower weight (0 = ALS alone)
    epochs: int | None = None  # two-tower epochs without a hold-out; None: no two-tower model
    selection: dict[str, Any] = field(default_factory=dict)  # relation -> {weight, reason, candidates}
    training: list[dict[str, Any]] = field(default_factory=list)  # the choosing two-tower fit's epochs

    def describe(self) -> dict[str, Any]:
        """JSON for the manifest: per relation the kind and weight, the epochs, why, and the training curve."""
        kinds = {r: kind_of(w) for r, w in self.weights.items()}
        return {"kinds": kinds, "weights": self.weights, "two_tower_epochs": self.epochs, "selection": self.selection,
                "training": self.training}


@dataclass
class Fitted:
    """One relation's served vectors and the ALS model fitted next to them."""

    als: ALSRecommender
    user_factors: np.ndarray  # (n_users, dim)
    item_factors: np.ndarray  # (n_items, dim)
    mix: Mix | None = None  # None: ALS alone


class VectorScorer(ScoringRecommender):
    """Scores users against items by the inner product of fitted vectors (what the FAISS index ranks by)."""

    def __init__(self, fitted: Fitted) -> None:
        self.fitted = fitted

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(n, n_items) inner products."""
        return self.fitted.user_factors[user_rows] @ self.fitted.item_factors.T


@dataclass
class Retrieval:
    """Every relation's fitted vectors, the user tower (when used), the plan, and the two-tower's report."""

    relations: dict[str, Fitted]
    tower: Tower | None
    plan: Plan
    report: dict[str, float] = field(default_factory=dict)


def fit_retrieval(data: Interactions, config: TrainConfig, progress: bool, plan: Plan | None = None) -> Retrieval:
    """ALS for every relation plus, unless `retriever: als`, the two-tower model, mixed per the plan (chosen on
    validation when `plan` is None)."""
    relations = fitted_relations(data, config)
    models = {r: als(config).fit(data.matrices[r], show_progress=progress) for r in relations}
    if config.retriever == "als" or (plan is not None and plan.epochs is None):
        plan = plan or Plan({r: 0.0 for r in relations}, None, {"reason": "retriever: als"})
        return Retrieval({r: Fitted(m, m.user_factors, m.item_factors) for r, m in models.items()}, None, plan)
    model = _fit_tower(data, config, progress, plan)
    vectors = model.export()
    if plan is None:
        plan = choose_plan(data, model, config, relations)
        plan.training = list(model.training_log.get("epochs", []))
    fitted = {r: _mixed(models[r], vectors, r, plan.weights.get(r, 0.0)) for r in relations}
    used = any(f.mix is not None and f.mix.kind != "als" for f in fitted.values())
    tower = Tower(vectors.history, vectors.user_ids, vectors.normalize) if used else None
    return Retrieval(fitted, tower, plan, model.report())


def _fit_tower(data: Interactions, config: TrainConfig, progress: bool, plan: Plan | None) -> TwoTowerRecommender:
    """The two-tower model on the video matrix: early-stopped on a hold-out, or `plan.epochs` without one."""
    from training.two_tower import two_tower_model

    if plan is not None:
        fixed = config.two_tower.model_copy(update={"valid_fraction": 0.0, "epochs": max(plan.epochs or 1, 1)})
        config = config.model_copy(update={"two_tower": fixed})
    features = ItemFeatures.from_catalog(data.catalog, config.two_tower.price_buckets)
    return two_tower_model(config, features).fit(data.matrices["video"], show_progress=progress)


def _mixed(model: ALSRecommender, vectors: TwoTowerVectors, relation: str, weight: float) -> Fitted:
    """A relation's vectors for a two-tower weight (ALS alone when the two-tower has no vectors for it)."""
    tower_items = tower_items_of(vectors, relation)
    if len(tower_items) == 0:
        weight = 0.0
    mix = Mix.of(weight, model.item_factors, tower_items)
    users = mix.combine(model.user_factors, vectors.users)
    return Fitted(model, np.ascontiguousarray(users), mix.items(model.item_factors, tower_items), mix)


def tower_items_of(vectors: TwoTowerVectors, relation: str) -> np.ndarray:
    """The two-tower vectors of a relation's items."""
    return {"video": vectors.items, "creator": vectors.creators, "product": vectors.products}[relation]


def choose_plan(data: Interactions, model: TwoTowerRecommender, config: TrainConfig,
                relations: list[str]) -> Plan:
    """Per relation the two-tower weight with the best validation Recall@20 on the trainer's hold-out."""
    epochs = int(model.training_log.get("best_epoch", config.two_tower.epochs))
    phase = getattr(model.trainer, "phase_one", None)
    if config.retriever == "two-tower":
        reason = "retriever: two-tower (set in the config)"
        return Plan({r: 1.0 for r in relations}, epochs, {r: {"weight": 1.0, "reason": reason} for r in relations})
    if phase is None:
        reason = "no validation hold-out (two_tower.valid_fraction is 0): ALS kept"
        return Plan({r: 0.0 for r in relations}, epochs, {r: {"weight": 0.0, "reason": reason} for r in relations})
    train, valid, vectors = phase
    selection = {r: _choose(data, config, r, train, valid, vectors) for r in relations}
    return Plan({r: float(s["weight"]) for r, s in selection.items()}, epochs, selection)


def _choose(data: Interactions, config: TrainConfig, relation: str, train: sp.csr_matrix, valid: sp.csr_matrix,
            vectors: TwoTowerVectors) -> dict[str, Any]:
    """One relation's weight: the video hold-out mapped onto the relation's items (creator or product)."""
    items = tower_items_of(vectors, relation)
    if len(items) == 0:
        return {"weight": 0.0, "reason": f"the two-tower model has no {relation} vectors: ALS kept"}
    grid = config.two_tower.blend_weights
    if relation == "video":
        _, why = choose_weight(als(config).fit(train), vectors, train, valid, grid)
        return why
    through = video_to(data, relation)  # (n_videos, n_items) one-hot
    train_r = sp.csr_matrix(train @ through)
    valid_r = _minus(sp.csr_matrix(valid @ through), train_r)
    _, why = choose_weight(als(config).fit(train_r), vectors, train_r, valid_r, grid, items, train)
    return why


def video_to(data: Interactions, relation: str) -> sp.csr_matrix:
    """(n_videos, n_items) 1 where a video belongs to the creator (or sells the product)."""
    cat = data.catalog
    rows = cat.video_creator if relation == "creator" else cat.video_product
    has = np.flatnonzero(rows >= 0)
    return sp.csr_matrix((np.ones(len(has), np.float32), (has, rows[has])),
                         shape=(len(cat.videos), len(cat.items(relation))))


def _minus(valid: sp.csr_matrix, train: sp.csr_matrix) -> sp.csr_matrix:
    """`valid` without the entries `train` has (a creator already in the history is not a new find)."""
    known = train.copy()
    known.data = np.ones_like(known.data)
    out = valid - valid.multiply(known)
    out = sp.csr_matrix(out, dtype=np.float32)
    out.eliminate_zeros()
    return out
