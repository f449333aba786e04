"""The recommender contract on data whose answer is known."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from feed.models.als import ALSRecommender
from feed.models.base import top_n
from feed.models.popularity import PopularityRecommender


def checkerboard(n: int = 20) -> sp.csr_matrix:
    """Users like items of their own parity; the diagonal (user i, item i) is withheld."""
    rows, cols = np.nonzero((np.add.outer(np.arange(n), np.arange(n)) % 2 == 0) & ~np.eye(n, dtype=bool))
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))


def test_als_returns_the_withheld_diagonal_first():
    matrix = checkerboard()
    model = ALSRecommender(factors=8, regularization=0.01, iterations=20, random_state=1).fit(matrix)
    ids, scores = model.recommend(np.arange(20), matrix, N=3)
    assert ids.shape == (20, 3)
    np.testing.assert_array_equal(ids[:, 0], np.arange(20))
    assert np.all(scores[:, 0] > scores[:, 1])


def test_als_single_user_is_1d_and_filters_liked_items():
    matrix = checkerboard()
    model = ALSRecommender(factors=8, iterations=10).fit(matrix)
    ids, scores = model.recommend(3, matrix[3], N=5)
    assert ids.shape == scores.shape == (5,)
    assert not set(ids) & set(matrix[3].indices)


def test_als_similar_items_share_parity(tmp_path):
    model = ALSRecommender(factors=8, iterations=15, random_state=2).fit(checkerboard())
    ids, _ = model.similar_items(4, N=5)
    assert ids[0] == 4 and np.all(ids % 2 == 0)
    model.save(tmp_path / "als.npz")
    loaded = ALSRecommender.load(tmp_path / "als.npz")
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.params == model.params


def test_popularity_ranks_by_distinct_users_and_skips_seen():
    matrix = sp.csr_matrix(np.array([[5, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]], dtype=np.float32))
    model = PopularityRecommender().fit(matrix)
    np.testing.assert_array_equal(model.item_counts, [2, 3, 1, 0])
    ids, _ = model.recommend(np.array([0, 2]), matrix[[0, 2]], N=2)
    np.testing.assert_array_equal(ids, [[2, 3], [0, 3]])


def test_top_n_pads_when_everything_is_excluded():
    exclude = sp.csr_matrix(np.ones((1, 3)))
    ids, scores = top_n(np.array([[1.0, 2.0, 3.0]]), 2, exclude)
    np.testing.assert_array_equal(ids, [[-1, -1]])
    assert np.all(np.isneginf(scores))


def test_fold_in_matches_implicits_recalculate_user():
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from feed.models.als import fold_in, gram

    rng = np.random.default_rng(3)
    matrix = sp.random(200, 80, density=0.08, format="csr", random_state=4, dtype=np.float32) * 5
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=12, regularization=0.1, alpha=3.0, iterations=5, random_state=0)
        model.fit(matrix, show_progress=False)
    for user in rng.choice(200, 10, replace=False):
        row = matrix[user]
        expected = model.recalculate_user(user, row)
        ours = fold_in(model.item_factors, gram(model.item_factors), row.indices, row.data, 3.0, 0.1)
        np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=2e-4)


def test_a_folded_in_new_user_gets_the_checkerboard_answer():
    from feed.models.als import fold_in, gram

    matrix = checkerboard()
    model = ALSRecommender(factors=8, regularization=0.05, alpha=2.0, iterations=20, random_state=1).fit(matrix)
    liked = np.array([0, 2, 4, 8])  # a new user with a few even items: the other even items should come first
    vector = fold_in(model.item_factors, gram(model.item_factors), liked, np.ones(4), 2.0, 0.05)
    scores = model.item_factors @ vector
    even, odd = np.array([6, 10, 12, 14, 16, 18]), np.arange(1, 20, 2)
    assert scores[even].mean() > scores[odd].mean() + 0.2
    scores[liked] = -np.inf
    assert np.argmax(scores) % 2 == 0
