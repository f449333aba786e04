"""Ranking metrics checked by hand on tiny cases."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from feed.metrics import evaluate, hit_matrix, ranking_metrics
from feed.models.popularity import PopularityRecommender


def test_recall_and_ndcg_by_hand():
    test = sp.csr_matrix(np.array([[0, 1, 0, 1, 0]], dtype=np.float32))  # relevant: items 1 and 3
    hits = hit_matrix(np.array([[1, 0, 3]]), test)  # ranks 1 and 3 hit
    m = ranking_metrics(hits, np.array([2]), [1, 3])
    assert m["recall@1"][0] == 0.5 and m["recall@3"][0] == 1.0
    idcg = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(m["ndcg@3"][0], (1 + 1 / np.log2(4)) / idcg)
    np.testing.assert_allclose(m["ndcg@1"][0], 1.0)  # IDCG over min(|test|, K) = 1 item


class Oracle:
    """Recommends exactly the held-out items."""

    def __init__(self, test: sp.csr_matrix) -> None:
        self.test = test

    def recommend(self, rows, user_items, N=10, filter_already_liked_items=True):
        scores = self.test[rows].toarray() + 1e-3 * np.arange(self.test.shape[1])[::-1]
        order = np.argsort(-scores, axis=1)[:, :N]
        return order, np.take_along_axis(scores, order, axis=1)


def test_evaluate_oracle_is_perfect_and_skips_users_without_history():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    result = evaluate(Oracle(test), train, test, ks=(1, 2))
    assert result["recall@1"] == result["ndcg@2"] == 1.0
    assert result["n_test_users"] == 2.0  # user 1 has no training history
    popular = evaluate(PopularityRecommender().fit(train), train, test, ks=(1,))
    assert popular["recall@1"] < 1.0
