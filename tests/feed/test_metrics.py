"""Ranking and beyond-accuracy metrics checked by hand on tiny cases and against ranx on random runs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from feed.errors import DataError
from feed.metrics import (beyond_accuracy, default_users, evaluate, gini, hit_matrix, ranking_metrics,
                          recommend_lists)
from feed.models.base import ScoringRecommender
from feed.models.popularity import PopularityRecommender


def csr(rows: list[list[float]]) -> sp.csr_matrix:
    """A float32 CSR matrix from nested lists."""
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def test_recall_and_ndcg_by_hand():
    test = sp.csr_matrix(np.array([[0, 1, 0, 1, 0]], dtype=np.float32))  # relevant: items 1 and 3
    hits = hit_matrix(np.array([[1, 0, 3]]), test)  # ranks 1 and 3 hit
    m = ranking_metrics(hits, np.array([2]), [1, 3])
    assert m["recall@1"][0] == 0.5 and m["recall@3"][0] == 1.0
    idcg = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(m["ndcg@3"][0], (1 + 1 / np.log2(4)) / idcg)
    np.testing.assert_allclose(m["ndcg@1"][0], 1.0)  # IDCG over min(|test|, K) = 1 item


def test_every_ranking_metric_by_hand():
    # user 0: relevant {2, 5, 7}, hits at ranks 2 and 4; user 1: relevant {4}, no hit; user 2: relevant {1}, rank 1
    test = csr([[0, 0, 1, 0, 0, 1, 0, 1], [0, 0, 0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]])
    lists = np.array([[0, 2, 3, 5], [0, 1, 2, 3], [1, 0, -1, -1]])
    hits = hit_matrix(lists, test)
    np.testing.assert_array_equal(hits, [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    m = ranking_metrics(hits, np.array([3, 1, 1]), [2, 4])
    d = 1 / np.log2(np.arange(2, 6))  # discounts of ranks 1..4
    np.testing.assert_allclose(m["recall@2"], [1 / 3, 0, 1])
    np.testing.assert_allclose(m["recall@4"], [2 / 3, 0, 1])
    np.testing.assert_allclose(m["precision@2"], [1 / 2, 0, 1 / 2])
    np.testing.assert_allclose(m["precision@4"], [2 / 4, 0, 1 / 4])  # divided by K, not the list length
    np.testing.assert_allclose(m["hit_rate@2"], [1, 0, 1])
    np.testing.assert_allclose(m["mrr@2"], [1 / 2, 0, 1])
    np.testing.assert_allclose(m["mrr@4"], [1 / 2, 0, 1])
    np.testing.assert_allclose(m["ndcg@2"], [d[1] / (d[0] + d[1]), 0, 1])
    np.testing.assert_allclose(m["ndcg@4"], [(d[1] + d[3]) / (d[0] + d[1] + d[2]), 0, 1])


def test_first_hit_beyond_k_counts_zero_for_mrr_and_hit_rate():
    hits = np.array([[False, False, True]])
    m = ranking_metrics(hits, np.array([1]), [2, 3])
    assert m["mrr@2"][0] == 0.0 and m["hit_rate@2"][0] == 0.0
    assert m["mrr@3"][0] == pytest.approx(1 / 3) and m["hit_rate@3"][0] == 1.0


def test_users_without_relevant_items_score_zero_without_warnings():
    m = ranking_metrics(np.zeros((1, 3), dtype=bool), np.array([0]), [3])
    assert all(values[0] == 0.0 for values in m.values())


def test_hit_matrix_ignores_pads_and_explicit_zeros():
    test = sp.csr_matrix((np.array([0.0, 1.0], dtype=np.float32), (np.array([0, 0]), np.array([0, 1]))),
                         shape=(1, 3))  # item 0 stored as an explicit zero: not relevant
    np.testing.assert_array_equal(hit_matrix(np.array([[0, 1, -1]]), test), [[False, True, False]])
    np.testing.assert_array_equal(hit_matrix(np.array([[2, -1]]), sp.csr_matrix((1, 3))), [[False, False]])


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


class FixedScores(ScoringRecommender):
    """A 'model' whose scores are a given (n_users, n_items) matrix: random ones make random runs."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(n, n_items) rows of the fixed matrix."""
        return self.scores[user_rows]


def test_recommend_lists_batches_masks_and_pads():
    mask = csr([[1, 0, 0], [0, 0, 0], [0, 1, 1]])
    model = FixedScores(np.tile([3.0, 2.0, 1.0], (3, 1)))
    lists = recommend_lists(model, mask, np.array([0, 1, 2]), n=4, batch_size=2)
    np.testing.assert_array_equal(lists, [[1, 2, -1, -1], [0, 1, 2, -1], [0, -1, -1, -1]])
    np.testing.assert_array_equal(recommend_lists(model, mask, np.array([2, 0]), n=2, batch_size=1),
                                  [[0, -1], [1, 2]])
    assert recommend_lists(model, mask, np.array([], dtype=np.int64), n=2).shape == (0, 2)


def test_gini_of_known_distributions():
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 7])) == pytest.approx(3 / 4)  # (n − 1) / n: one item has everything
    assert gini(np.zeros(4)) == 0.0
    x = np.array([0, 1, 1, 2])  # mean absolute difference / (2·mean): 12 / (2·16·1)
    assert gini(x) == pytest.approx(np.abs(np.subtract.outer(x, x)).sum() / (2 * len(x) ** 2 * x.mean()))
    assert gini(x) == pytest.approx(0.375)


def test_beyond_accuracy_by_hand():
    lists = np.array([[0, 1], [0, 3], [0, -1]])  # 4-item catalog; item 2 never shown
    popularity = np.array([4, 2, 1, 0])  # item 3: no training user
    m = beyond_accuracy(lists, 4, popularity, [1, 2], n_users=4)
    assert m["coverage@1"] == 1 / 4 and m["coverage@2"] == 3 / 4
    assert m["gini@1"] == pytest.approx(3 / 4)  # exposure (3, 0, 0, 0)
    assert m["gini@2"] == pytest.approx(gini(np.array([3, 1, 0, 1])))
    # self-information log2(4 / pop): item 0 → 0, item 1 → 1, item 3 → log2(4 / 1) = 2 (not inf)
    assert m["novelty@1"] == 0.0
    assert m["novelty@2"] == pytest.approx((0 + 1 + 0 + 2 + 0) / 5)  # five filled slots
    assert beyond_accuracy(np.full((2, 2), -1), 4, popularity, [2], n_users=4) == {
        "coverage@2": 0.0, "gini@2": 0.0, "novelty@2": 0.0}


def test_evaluate_reports_beyond_accuracy_with_default_popularity():
    train = csr([[1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    test = csr([[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    model = FixedScores(np.tile([4.0, 3.0, 2.0, 1.0], (4, 1)))  # popularity order for everyone
    result = evaluate(model, train, test, ks=(1,))
    # users 0, 1, 2 (user 3 has no training history) get [2], [1], [1]
    assert result["n_test_users"] == 3.0 and result["recall@1"] == pytest.approx(2 / 3)
    assert result["coverage@1"] == 2 / 4
    # training users per item: (3, 1, 0, 0) of 3 trained users → self-information of item 1: log2(3),
    # of item 2 (nobody): log2(3 / 1)
    assert result["novelty@1"] == pytest.approx(np.log2(3))
    assert result["gini@1"] == pytest.approx(gini(np.array([0, 2, 1, 0])))
    custom = evaluate(model, train, test, ks=(1,), item_popularity=np.array([3, 3, 3, 3]))
    assert custom["novelty@1"] == pytest.approx(0.0)


def test_mask_can_differ_from_train():
    # Beibei-style: the model trains on carts and purchases, only purchases are masked.
    carts_and_purchases = csr([[1, 1, 0], [1, 0, 1]])
    purchases = csr([[1, 0, 0], [1, 0, 0]])
    test = csr([[0, 1, 0], [0, 0, 1]])  # each user buys what they carted
    model = FixedScores(np.array([[0.0, 2.0, 1.0], [0.0, 1.0, 2.0]]))
    assert evaluate(model, carts_and_purchases, test, ks=(1,))["recall@1"] == 0.0  # carted items masked
    result = evaluate(model, carts_and_purchases, test, ks=(1,), mask=purchases)
    assert result["recall@1"] == 1.0 and result["mrr@1"] == 1.0


def test_users_subset_and_users_without_test_items():
    train = csr([[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    test = csr([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    model = FixedScores(np.tile([0.0, 3.0, 2.0, 1.0], (3, 1)))
    assert evaluate(model, train, test, ks=(1,))["recall@1"] == 0.5
    only_first = evaluate(model, train, test, ks=(1,), users=np.array([0]))
    assert only_first["recall@1"] == 1.0 and only_first["n_test_users"] == 1.0
    with_empty = evaluate(model, train, test, ks=(1,), users=np.array([0, 2]))
    assert with_empty["recall@1"] == 0.5 and with_empty["n_test_users"] == 2.0


def test_evaluate_without_eligible_users_and_with_bad_shapes():
    train, test = csr([[1, 0]]), csr([[0, 0]])
    result = evaluate(FixedScores(np.ones((1, 2))), train, test, ks=(1,))
    assert result["n_test_users"] == 0.0 and result["recall@1"] == 0.0 and result["coverage@1"] == 0.0
    with pytest.raises(DataError, match="one shape"):
        evaluate(FixedScores(np.ones((1, 2))), train, csr([[0, 0, 1]]), ks=(1,))


def random_protocol(seed: int, n_users: int = 200, n_items: int = 300) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Random train and disjoint held-out sets; a few users without training history or without test items."""
    rng = np.random.default_rng(seed)
    chosen = rng.random((n_users, n_items))  # (n_users, n_items)
    train = (chosen < 0.05) & (rng.random((n_users, 1)) > 0.05)
    test = (chosen > 0.97) & (rng.random((n_users, 1)) > 0.05)
    return sp.csr_matrix(train.astype(np.float32)), sp.csr_matrix(test.astype(np.float32))


# ranx's numba kernels warn once while compiling (cached afterwards): not ours to fix, named narrowly.
@pytest.mark.filterwarnings("ignore:unsafe cast from uint64 to int64. Precision may be lost.:Warning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_metrics_agree_with_ranx(seed):
    import ranx
    train, test = random_protocol(seed)
    model = FixedScores(np.random.default_rng(seed + 100).random(train.shape))  # a random scoring model
    ks = (1, 5, 10, 20, 50)
    ours = evaluate(model, train, test, ks=ks)
    users = default_users(train, test)
    lists = recommend_lists(model, train, users, max(ks))
    qrels = ranx.Qrels({f"u{u}": {f"i{i}": 1 for i in test[u].indices} for u in users})
    run = ranx.Run({f"u{u}": {f"i{i}": float(max(ks) - r) for r, i in enumerate(row) if i >= 0}
                    for u, row in zip(users, lists, strict=True)})
    # With relevance 1, ranx's `ndcg` (Järvelin & Kekäläinen: gain rel / log2(rank + 1)) and `ndcg_burges`
    # (gain 2^rel − 1) both give our binary gain of 1, and both take the ideal DCG over the top
    # min(|relevant|, K) judged items: the same definition as ours, so both must agree.
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "ndcg_burges", "hit_rate", "mrr", "precision")]
    theirs = ranx.evaluate(qrels, run, names)
    assert len(users) == ours["n_test_users"] > 150
    for name in names:
        ours_name = name.replace("ndcg_burges", "ndcg")
        assert ours[ours_name] == pytest.approx(float(theirs[name]), abs=1e-6), name
