"""How a relation's user vectors are made when the served retriever is the two-tower model or a blend with ALS.

A relation of the bundle is searched with one FAISS inner-product index whatever the retriever:

- **ALS** (`Mix` absent, or weight 0): ALS item factors; a user's vector is their ALS factors, or the ALS fold-in
  of their history.
- **two-tower** (weight 1): the two-tower item, creator or product vectors; a user's vector comes from the numpy
  user tower (`Tower.fold`) over their *video* history — one user vector for every relation, no torch.
- **blend** (0 < w < 1): the trainer's blend ranks items by (1 − w)·z(ALS) + w·z(two-tower), each score
  standardized over the items per user. Subtracting a user's mean does not change their ranking, and the standard
  deviation of u·v over the items is √(uᵀCu), C the covariance of the item vectors. So the blend ranking is
  exactly the inner product of the user vector [(1 − w)/σ_ALS(u)·u_ALS, w/σ_TT(u)·u_TT] with the concatenated
  item vectors [v_ALS, v_TT]: the items are stored concatenated and `Mix.combine` makes the user side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Tower:
    """The two-tower user tower as numpy arrays (see feed.models.two_tower.fold_in)."""

    history: np.ndarray  # (n_videos, dim) each video's term in a user vector
    user_ids: np.ndarray  # (n_users, dim) id embeddings, or (0, dim) when the model has none
    normalize: bool = True

    @property
    def dim(self) -> int:
        """Size of the user vectors."""
        return int(self.history.shape[1])

    def fold(self, history: sp.csr_matrix, user_rows: np.ndarray | None = None) -> np.ndarray:
        """(n, dim) user vectors from weighted video-history rows; id embeddings added for known `user_rows`."""
        history = sp.csr_matrix(history, dtype=np.float32)
        totals = np.asarray(history.sum(axis=1)).ravel()  # (n,)
        pooled = np.asarray(history @ self.history) / np.maximum(totals, 1e-12)[:, None]  # (n, dim)
        if user_rows is not None and len(self.user_ids):
            rows = np.asarray(user_rows, dtype=np.int64)
            known = (rows >= 0) & (rows < len(self.user_ids))
            pooled[known] += self.user_ids[rows[known]]
        if not self.normalize:
            return pooled.astype(np.float32)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def fold_one(self, videos: np.ndarray, weights: np.ndarray, user_row: int = -1) -> np.ndarray:
        """(dim,) one user's vector from distinct video rows and their summed weights (the request path's `fold`)."""
        w = np.asarray(weights, dtype=np.float32)  # (n,)
        pooled = (w @ self.history[np.asarray(videos, dtype=np.int64)]) / max(float(w.sum()), 1e-12)  # (dim,)
        if 0 <= user_row < len(self.user_ids):
            pooled = pooled + self.user_ids[user_row]
        if not self.normalize:
            return pooled.astype(np.float32)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)


@dataclass
class Mix:
    """A relation's retriever: the two-tower weight and, for a blend, each part's item covariance."""

    weight: float  # 0 = ALS alone, 1 = two-tower alone, between = the blend
    als_dim: int  # leading columns of the item vectors that are ALS factors (0 for the two-tower alone)
    als_cov: np.ndarray  # (als_dim, als_dim) covariance of the ALS item factors (empty unless a blend)
    tower_cov: np.ndarray  # (tower_dim, tower_dim) covariance of the two-tower item vectors (empty unless a blend)

    @property
    def kind(self) -> str:
        """'als', 'two-tower' or 'blend'."""
        return kind_of(self.weight)

    @classmethod
    def of(cls, weight: float, als_items: np.ndarray | None, tower_items: np.ndarray | None) -> Mix:
        """The mix for a weight, with covariances computed from the parts' item vectors when blending."""
        als_dim = 0 if weight >= 1.0 or als_items is None else int(als_items.shape[1])
        empty = np.zeros((0, 0), np.float64)
        if 0.0 < weight < 1.0:
            return cls(float(weight), als_dim, covariance(als_items), covariance(tower_items))
        return cls(float(weight), als_dim, empty, empty)

    def items(self, als_items: np.ndarray | None, tower_items: np.ndarray | None) -> np.ndarray:
        """(n_items, dim) the vectors the index holds: ALS, two-tower, or both side by side."""
        if self.kind == "als":
            return np.ascontiguousarray(als_items, dtype=np.float32)
        if self.kind == "two-tower":
            return np.ascontiguousarray(tower_items, dtype=np.float32)
        return np.ascontiguousarray(np.hstack([als_items, tower_items]), dtype=np.float32)

    def combine(self, als_users: np.ndarray | None, tower_users: np.ndarray | None) -> np.ndarray:
        """(n, dim) user vectors matching `items`: a blend scales each part by its weight over its spread."""
        if self.kind == "als":
            return np.asarray(als_users, dtype=np.float32)
        if self.kind == "two-tower":
            return np.asarray(tower_users, dtype=np.float32)
        als_part = (1.0 - self.weight) * als_users / spread(als_users, self.als_cov)[:, None]
        tower_part = self.weight * tower_users / spread(tower_users, self.tower_cov)[:, None]
        return np.hstack([als_part, tower_part]).astype(np.float32)


def kind_of(weight: float) -> str:
    """The retriever a two-tower weight means: 'als' (0), 'two-tower' (1) or 'blend'."""
    return {0.0: "als", 1.0: "two-tower"}.get(float(weight), "blend")


def covariance(items: np.ndarray) -> np.ndarray:
    """(dim, dim) population covariance of item vectors (what the per-user standard deviation needs)."""
    x = np.asarray(items, dtype=np.float64)
    centered = x - x.mean(axis=0, keepdims=True)
    return centered.T @ centered / max(len(x), 1)


def spread(users: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """(n,) standard deviation of each user's scores over the items, √(uᵀCu); 1 where it is 0."""
    u = np.asarray(users, dtype=np.float64)
    std = np.sqrt(np.maximum(np.einsum("nd,de,ne->n", u, cov, u), 0.0))
    return np.where(std > 1e-12, std, 1.0)
