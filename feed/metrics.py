"""Full-ranking accuracy metrics: every item scored, the user's training items masked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from feed.models.base import Recommender


def hit_matrix(recommended: np.ndarray, test: sp.csr_matrix) -> np.ndarray:
    """(n_users, K) booleans: is the item at each rank one of the user's held-out items."""
    dense = test.toarray() > 0  # (n_users, n_items); callers batch users to bound memory
    safe = np.maximum(recommended, 0)
    return np.take_along_axis(dense, safe, axis=1) & (recommended >= 0)


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user Recall@K and NDCG@K (binary gains, IDCG over min(|test|, K))."""
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))  # (K_max,)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        top = hits[:, :k]
        out[f"recall@{k}"] = top.sum(axis=1) / n_relevant
        ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
        out[f"ndcg@{k}"] = (top * discounts[:k]).sum(axis=1) / ideal
    return out


def evaluate(
    model: Recommender,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    ks: Sequence[int] = (10, 20, 50),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean metrics over users with held-out items and training history, ranking all items."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    users = users[np.diff(train.indptr)[users] > 0]
    sums: dict[str, float] = {}
    for start in range(0, len(users), batch_size):
        rows = users[start:start + batch_size]
        ids, _ = model.recommend(rows, train[rows], N=max(ks))
        per_user = ranking_metrics(hit_matrix(ids, test[rows]), np.diff(test[rows].indptr), ks)
        for name, values in per_user.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    result = {name: total / max(len(users), 1) for name, total in sums.items()}
    result["n_test_users"] = float(len(users))
    return result
