"""ALS + two-tower: per-user standardized scores mixed with a two-tower weight chosen on validation.

The weight is picked on the two-tower trainer's own hold-out (the same entries its early stopping used): the
two-tower network of that phase and an ALS fitted on the rest score the held-out items, every weight of the
grid is tried (0 = ALS alone, 1 = two-tower alone), and the best Recall@20 (ties: NDCG@20, then the smaller
weight) wins. `selection` records every candidate's validation scores, so the choice explains itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from feed.metrics import hit_matrix, ranking_metrics, relevant_counts
from feed.models.als import ALSRecommender
from feed.models.base import ScoringRecommender, top_n
from feed.models.two_tower import TwoTowerRecommender, TwoTowerVectors, fold_in

KS = (20,)


def standardized(scores: np.ndarray) -> np.ndarray:
    """(n, n_items) scores minus each row's mean, divided by its standard deviation (1 when constant)."""
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


def mixed(als_scores: np.ndarray, tower_scores: np.ndarray, weight: float) -> np.ndarray:
    """(n, n_items) (1 − weight) · z(ALS) + weight · z(two-tower)."""
    return (1.0 - weight) * standardized(als_scores) + weight * standardized(tower_scores)


class BlendRecommender(ScoringRecommender):
    """A blend of a fitted ALS and a fitted two-tower model, with the weight chosen on validation."""

    def __init__(self, als: ALSRecommender, tower: TwoTowerRecommender, weights: Sequence[float],
                 make_als: Any = None, tower_fitted: bool = False) -> None:
        self.als, self.tower, self.grid, self.tower_fitted = als, tower, tuple(weights), tower_fitted
        self.make_als = make_als or (lambda: ALSRecommender(**als.params, num_threads=als.num_threads))
        self.weight = 1.0
        self.selection: dict[str, Any] = {}

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> Self:
        """Fit the two-tower model (it holds out its validation), choose the weight there, fit ALS on all.

        With `tower_fitted` the two-tower model was already fitted on this same matrix and is reused.
        """
        if not self.tower_fitted:
            self.tower.fit(user_items, show_progress=show_progress)
        phase = getattr(self.tower.trainer, "phase_one", None)
        if phase is None or len(self.grid) == 1:
            self.weight, self.selection = (self.grid[0] if self.grid else 1.0), {"reason": "no validation hold-out"}
        else:
            train, valid, vectors = phase
            als = self.make_als().fit(train, show_progress=show_progress)
            self.weight, self.selection = choose_weight(als, vectors, train, valid, self.grid)
        self.als.fit(user_items, show_progress=show_progress)
        return self

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(n, n_items) blended standardized scores."""
        return mixed(self.als.score(user_rows), self.tower.score(user_rows), self.weight)

    def report(self) -> dict[str, float]:
        """The chosen weight and every candidate's validation scores, as flat numbers."""
        flat = {"blend.weight": self.weight}
        for name, metrics in self.selection.get("candidates", {}).items():
            flat.update({f"valid.{name}.{k}": v for k, v in metrics.items()})
        return flat


def choose_weight(als: ALSRecommender, vectors: TwoTowerVectors, train: sp.csr_matrix, valid: sp.csr_matrix,
                  grid: Sequence[float], items: np.ndarray | None = None,
                  history: sp.csr_matrix | None = None) -> tuple[float, dict[str, Any]]:
    """The grid weight with the best validation Recall@20 (then NDCG@20, then the smaller weight), and why.

    By default the items are videos; for creators or products pass their two-tower vectors as `items`, the
    relation's matrices as `train`/`valid` and the users' video matrix as `history` (what the user tower reads).
    """
    items = vectors.items if items is None else items
    history = train if history is None else history
    users = np.flatnonzero((relevant_counts(valid) > 0) & (np.diff(train.indptr) > 0))
    sums = {w: np.zeros(2) for w in grid}
    for lo in range(0, len(users), 1024):
        rows = users[lo:lo + 1024]
        als_scores = als.score(rows)
        tower_scores = fold_in(vectors, history[rows], rows) @ items.T
        for w in grid:
            ids, _ = top_n(mixed(als_scores, tower_scores, w), max(KS), train[rows])
            per_user = ranking_metrics(hit_matrix(ids, valid[rows]), relevant_counts(valid[rows]), KS)
            sums[w] += [per_user["recall@20"].sum(), per_user["ndcg@20"].sum()]
    scores = {w: {"recall@20": float(s[0]) / max(len(users), 1), "ndcg@20": float(s[1]) / max(len(users), 1)}
              for w, s in sums.items()}
    best = max(grid, key=lambda w: (round(scores[w]["recall@20"], 6), round(scores[w]["ndcg@20"], 6), -w))
    candidates = {_name(w): scores[w] for w in grid}
    reason = (f"two-tower weight {best:g}: validation recall@20 {scores[best]['recall@20']:.4f} "
              f"(ALS alone {scores[min(grid)]['recall@20']:.4f}, two-tower alone {scores[max(grid)]['recall@20']:.4f})")
    return best, {"weight": best, "candidates": candidates, "reason": reason, "n_users": int(len(users))}


def _name(weight: float) -> str:
    """'als' for 0, 'two-tower' for 1, else 'blend@w'."""
    return {0.0: "als", 1.0: "two-tower"}.get(float(weight), f"blend@{weight:g}")
