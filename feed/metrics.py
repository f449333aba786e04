"""Full-ranking evaluation: every item scored, masked items skipped, users batched.

Accuracy metrics are per user, then averaged over the evaluated users; relevance is binary.
With R_u the user's held-out items and rel_r = 1 when the item at rank r (from 1) is in R_u:

- ``recall@K``    = Σ_{r≤K} rel_r / |R_u|
- ``precision@K`` = Σ_{r≤K} rel_r / K  (K, not the list length: a short list is not rewarded)
- ``hit_rate@K``  = 1 if rel_r = 1 for some r ≤ K, else 0
- ``mrr@K``       = 1 / (rank of the first hit) when that rank is ≤ K, else 0
- ``ndcg@K``      = Σ_{r≤K} rel_r / log2(r + 1)  ÷  Σ_{r≤min(|R_u|, K)} 1 / log2(r + 1)

A user without held-out items scores 0 on all of them (only possible with an explicit ``users=``).

Beyond-accuracy metrics describe the set of all evaluated users' top-K lists:

- ``coverage@K`` = |∪_u top-K(u)| / n_items
- ``gini@K``     = Gini coefficient of c_i, the number of top-K lists showing item i, over the whole
  catalog (items never shown count 0): with c sorted ascending and i = 1..n,
  G = Σ_i (2i − n − 1) c_i / (n Σ_i c_i). 0 = every item shown equally often; (n − 1)/n = one item
  takes all exposure. 0 when nothing is shown at all.
- ``novelty@K``  = mean self-information of the recommended items (Zhou et al., PNAS 2010): over every
  filled (user, rank ≤ K) slot, −log2 p(i) = log2(n_users / max(pop_i, 1)), pop_i the number of
  distinct training users of item i and n_users the users with any training interaction. Items no
  training user touched get log2(n_users), the largest finite value, instead of infinity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from feed.errors import DataError
from feed.models.base import Recommender

_SENTINEL = np.iinfo(np.int64).max  # larger than every (row, item) key


def hit_matrix(recommended: np.ndarray, test: sp.csr_matrix) -> np.ndarray:
    """(n_users, K) booleans: is the item at each rank one of the user's held-out items."""
    recommended, test = np.asarray(recommended, dtype=np.int64), sp.csr_matrix(test)
    n_items = test.shape[1]
    relevant = _relevant_keys(test)  # (n_relevant + 1,) sorted row·n_items + item, then the sentinel
    keys = np.arange(len(recommended), dtype=np.int64)[:, None] * n_items + np.maximum(recommended, 0)
    found = relevant[np.searchsorted(relevant, keys)]  # (n_users, K); the sentinel keeps it in range
    return (found == keys) & (recommended >= 0)


def _relevant_keys(test: sp.csr_matrix) -> np.ndarray:
    """Sorted row·n_items + item of the positive entries, with a sentinel appended."""
    rows = np.repeat(np.arange(test.shape[0], dtype=np.int64), np.diff(test.indptr))  # (nnz,)
    keys = rows * test.shape[1] + test.indices
    return np.append(np.unique(keys[test.data > 0]), _SENTINEL)


def relevant_counts(test: sp.csr_matrix) -> np.ndarray:
    """(n_users,) number of positive held-out entries per row."""
    test = sp.csr_matrix(test)
    rows = np.repeat(np.arange(test.shape[0]), np.diff(test.indptr))  # (nnz,)
    return np.bincount(rows[test.data > 0], minlength=test.shape[0])


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user recall, ndcg, hit_rate, mrr and precision at each K (definitions in the module doc)."""
    n_relevant = np.asarray(n_relevant)
    some = n_relevant > 0  # users without held-out items score 0
    denominator = np.maximum(n_relevant, 1)
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))  # (K_max,)
    ideal_dcg = np.cumsum(1.0 / np.log2(np.arange(2, max([*ks, 1]) + 2)))  # (max K,)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.iinfo(np.int64).max)  # (n_users,) rank
    out: dict[str, np.ndarray] = {}
    for k in ks:
        top = hits[:, :k]  # (n_users, ≤k)
        n_hits = top.sum(axis=1)
        ideal = ideal_dcg[np.clip(np.minimum(n_relevant, k) - 1, 0, None)]
        out[f"recall@{k}"] = np.where(some, n_hits / denominator, 0.0)
        out[f"ndcg@{k}"] = np.where(some, (top * discounts[:k]).sum(axis=1) / ideal, 0.0)
        out[f"hit_rate@{k}"] = (n_hits > 0).astype(np.float64)
        out[f"mrr@{k}"] = np.where(first <= k, 1.0 / np.minimum(first, k), 0.0)
        out[f"precision@{k}"] = n_hits / k
    return out


def recommend_lists(
    model: Recommender, mask: sp.csr_matrix, users: np.ndarray, n: int, batch_size: int = 1024
) -> np.ndarray:
    """(len(users), n) recommended item rows (-1 pads), asking the model one batch of users at a time."""
    mask = sp.csr_matrix(mask)
    users = np.asarray(users, dtype=np.int64)
    lists = np.full((len(users), n), -1, dtype=np.int64)
    for start in range(0, len(users), batch_size):
        rows = users[start:start + batch_size]
        ids, _ = model.recommend(rows, mask[rows], N=n)
        ids = np.asarray(ids, dtype=np.int64).reshape(len(rows), -1)[:, :n]  # (batch, ≤n)
        lists[start:start + len(rows), :ids.shape[1]] = ids
    return lists


def beyond_accuracy(
    lists: np.ndarray,
    n_items: int,
    item_popularity: np.ndarray,
    ks: Sequence[int],
    n_users: int | None = None,
) -> dict[str, float]:
    """Catalog coverage, Gini of exposure and self-information novelty of the top-K lists.

    `item_popularity` is (n_items,) distinct training users per item; `n_users` the population it is
    counted over (users with any training interaction), by default the number of lists.
    """
    population = len(lists) if n_users is None else n_users
    self_info = np.log2(max(population, 1) / np.maximum(np.asarray(item_popularity, np.float64), 1.0))
    out: dict[str, float] = {}
    for k in ks:
        top = lists[:, :k]
        shown = top[top >= 0]  # (n_filled_slots,) item rows
        counts = np.bincount(shown, minlength=n_items)  # (n_items,) exposure
        out[f"coverage@{k}"] = float(np.count_nonzero(counts)) / max(n_items, 1)
        out[f"gini@{k}"] = gini(counts)
        out[f"novelty@{k}"] = float(self_info[shown].mean()) if len(shown) else 0.0
    return out


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal (or all zero), → 1 when one has all."""
    x = np.sort(np.asarray(values, dtype=np.float64))  # (n,) ascending
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def default_users(train: sp.csr_matrix, test: sp.csr_matrix) -> np.ndarray:
    """Rows with at least one held-out item and at least one training interaction."""
    return np.flatnonzero((relevant_counts(test) > 0) & (np.diff(sp.csr_matrix(train).indptr) > 0))


def evaluate(
    model: Recommender,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    ks: Sequence[int] = (10, 20, 50),
    batch_size: int = 1024,
    mask: sp.csr_matrix | None = None,
    users: np.ndarray | None = None,
    item_popularity: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean accuracy metrics, beyond-accuracy metrics and `n_test_users` over the evaluated users.

    `mask` (default `train`) holds the items each user must not be recommended; `users` defaults to
    `default_users`; `item_popularity` defaults to the number of distinct training users per item.
    """
    train, test = sp.csr_matrix(train), sp.csr_matrix(test)
    mask = train if mask is None else sp.csr_matrix(mask)
    _check_shapes(train, test, mask)
    users = default_users(train, test) if users is None else np.asarray(users, dtype=np.int64)
    lists = recommend_lists(model, mask, users, max(ks), batch_size)  # (n_eval_users, max K)
    test_rows = test[users]  # (n_eval_users, n_items), sparse
    per_user = ranking_metrics(hit_matrix(lists, test_rows), relevant_counts(test_rows), ks)
    result = {name: float(values.mean()) if len(users) else 0.0 for name, values in per_user.items()}
    popularity = _user_counts(train) if item_popularity is None else item_popularity
    n_trained = int(np.count_nonzero(np.diff(train.indptr)))
    result.update(beyond_accuracy(lists, train.shape[1], popularity, ks, n_users=n_trained))
    result["n_test_users"] = float(len(users))
    return result


def _user_counts(train: sp.csr_matrix) -> np.ndarray:
    """(n_items,) distinct users with a positive training entry per item."""
    return np.asarray((train > 0).sum(axis=0)).ravel()


def _check_shapes(train: sp.csr_matrix, test: sp.csr_matrix, mask: sp.csr_matrix) -> None:
    """Train, test and mask must describe the same users and items."""
    if not train.shape == test.shape == mask.shape:
        raise DataError(f"train {train.shape}, test {test.shape} and mask {mask.shape} must have one shape")
