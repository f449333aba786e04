"""The recommender contract and the top-N selection every model shares."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self

import numpy as np
import scipy.sparse as sp


class Recommender(Protocol):
    """What evaluation, indexing and serving need from any model (after benfred/implicit)."""

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> Self:
        """Learn from a weighted (n_users, n_items) matrix."""
        ...

    def recommend(
        self,
        user_rows: np.ndarray | int,
        user_items: sp.csr_matrix,
        N: int = 10,
        filter_already_liked_items: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-N item rows and scores: 1-D for one user, 2-D (n, N) for a batch; -1 pads short rows."""
        ...

    def save(self, path: Path) -> None:
        """Write the model's arrays to one .npz file."""
        ...


class ScoringRecommender:
    """Shared `recommend` for models that can score every item for a batch of users."""

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(n, n_items) scores for a batch of user rows."""
        raise NotImplementedError

    def recommend(
        self,
        user_rows: np.ndarray | int,
        user_items: sp.csr_matrix,
        N: int = 10,
        filter_already_liked_items: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-N items by score; `user_items` has one row per requested user (its items are skipped)."""
        rows, single = as_batch(user_rows)
        ids, best = top_n(self.score(rows), N, user_items if filter_already_liked_items else None)
        return (ids[0], best[0]) if single else (ids, best)


def top_n(scores: np.ndarray, n: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best-n columns per row of (n_rows, n_items) scores, excluding nonzeros of `exclude` (same shape).

    Returns (rows, scores), both (n_rows, n); excluded or missing slots hold -1 and -inf.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1] else np.tile(
        np.arange(scores.shape[1]), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    return np.where(np.isfinite(best), ids, -1), best


def as_batch(user_rows: np.ndarray | int) -> tuple[np.ndarray, bool]:
    """User rows as a 1-D array and whether the caller passed a single user."""
    single = np.ndim(user_rows) == 0
    return np.atleast_1d(np.asarray(user_rows, dtype=np.int64)), single
