"""Implicit-feedback matrix factorization (Hu, Koren, Volinsky) through `implicit`'s ALS."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from feed.errors import ArtifactError
from feed.models.base import ScoringRecommender, as_batch, top_n


class ALSRecommender(ScoringRecommender):
    """ALS with confidence 1 + alpha·weight; factors kept as plain float32 arrays."""

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        random_state: int = 0,
        num_threads: int = 0,
    ) -> None:
        self.params = dict(factors=factors, regularization=regularization, alpha=alpha,
                           iterations=iterations, random_state=random_state)
        self.num_threads = num_threads
        self.user_factors = np.zeros((0, factors), dtype=np.float32)  # (n_users, factors)
        self.item_factors = np.zeros((0, factors), dtype=np.float32)  # (n_items, factors)

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> Self:
        """Fit on a weighted (n_users, n_items) CSR matrix."""
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit parallelizes itself; a threaded BLAS underneath it only oversubscribes the cores.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(**self.params, num_threads=self.num_threads)
            model.fit(sp.csr_matrix(user_items, dtype=np.float32), show_progress=show_progress)
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(n, n_items) inner products of the users' and all items' factors."""
        return self.user_factors[user_rows] @ self.item_factors.T

    def similar_items(self, item_rows: np.ndarray | int, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Nearest items by cosine similarity, the item itself included first."""
        rows, single = as_batch(item_rows)
        unit = self.item_factors / np.maximum(np.linalg.norm(self.item_factors, axis=1, keepdims=True), 1e-12)
        ids, best = top_n(unit[rows] @ unit.T, N)
        return (ids[0], best[0]) if single else (ids, best)

    def save(self, path: Path) -> None:
        """Write factors and hyperparameters to an .npz file."""
        np.savez(path, user_factors=self.user_factors, item_factors=self.item_factors,
                 **{k: np.asarray(v) for k, v in self.params.items()})

    @classmethod
    def load(cls, path: Path) -> ALSRecommender:
        """Read a model written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                model = cls(**{k: data[k].item() for k in ("factors", "regularization", "alpha",
                                                            "iterations", "random_state")})
                model.user_factors, model.item_factors = data["user_factors"], data["item_factors"]
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"cannot read ALS model: {exc}", path=str(path)) from exc
        return model


def gram(item_factors: np.ndarray) -> np.ndarray:
    """YᵀY, (factors, factors): computed once per model, shared by every fold-in."""
    return (item_factors.T @ item_factors).astype(np.float64)


def fold_in(
    item_factors: np.ndarray,
    yty: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    alpha: float,
    regularization: float,
) -> np.ndarray:
    """A user's ALS vector from their weighted items, item factors fixed (implicit's `recalculate_user`).

    Solves (YᵀY + λI + Σᵢ (cᵢ − 1) yᵢyᵢᵀ) x = Σᵢ cᵢ yᵢ with confidence cᵢ = α·wᵢ over the user's items.
    """
    confidence = alpha * np.asarray(weights, dtype=np.float64)  # (n_items_of_user,)
    ys = item_factors[np.asarray(items, dtype=np.int64)].astype(np.float64)  # (n_items_of_user, factors)
    a = yty + regularization * np.eye(len(yty)) + (ys * (confidence - 1.0)[:, None]).T @ ys
    b = (ys * confidence[:, None]).sum(axis=0)
    return np.linalg.solve(a, b).astype(np.float32)
