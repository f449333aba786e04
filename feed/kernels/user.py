"""A request's user facts from the training window: latest videos, engagement per category, what never to show.

`Stats.recent_of`, `Stats.categories_of` and the bundle's `seen` / `bought` rows say the same in numpy, a dozen
calls of a few µs each per request; here they are two compiled calls over the CSR arrays (`History`), gathered
once per service (`feed.service.FeedService`). A test holds them equal for every user of a trained bundle.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from feed.kernels.base import jit
from feed.kernels.sources import Groups, group_top


class Rows(NamedTuple):
    """One CSR matrix's arrays (`scipy.sparse.csr_matrix`): row r's columns are indices[indptr[r]:indptr[r + 1]]."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray


class History(NamedTuple):
    """Per-user rows of the training window (`feed.stats.Stats`, `feed.bundle.Bundle`)."""

    recent: Rows  # (n_users, n_videos) the newest videos; data = 1 for the newest, 2, …
    categories: Rows  # (n_users, n_categories) engaged events per category
    seen: Rows  # (n_users, n_videos) watched to the end or bought
    bought: Rows  # (n_users, n_products) bought
    by_product: Groups  # every video of each product (`feed.candidates.Grouped`)


@jit
def _row_range(rows: Rows, row: int) -> tuple[int, int]:
    """Where a row's entries are; empty for -1 and for rows past the matrix."""
    if row < 0 or row + 1 >= len(rows.indptr):
        return 0, 0
    return rows.indptr[row], rows.indptr[row + 1]


@jit
def recent_and_categories(h: History, row: int, n_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """The user's latest video rows, newest first (ties in storage order), and (n_categories,) float32 engaged
    events per category (categories beyond n_categories left out)."""
    lo, hi = _row_range(h.recent, row)
    rank = h.recent.data[lo:hi]
    order = np.argsort(rank, kind="mergesort")  # stable: ties keep the column order
    recent = np.empty(hi - lo, np.int64)
    for i in range(hi - lo):
        recent[i] = h.recent.indices[lo + order[i]]
    categories = np.zeros(n_categories, np.float32)
    lo, hi = _row_range(h.categories, row)
    for i in range(lo, hi):
        column = h.categories.indices[i]
        if column < n_categories:
            categories[column] = h.categories.data[i]
    return recent, categories


@jit
def never_shown(h: History, row: int, n_videos: int) -> np.ndarray:
    """The video rows the training window rules out for the user: those watched to the end or bought, then every
    video of every product bought."""
    lo, hi = _row_range(h.seen, row)
    bought_lo, bought_hi = _row_range(h.bought, row)
    products = np.empty(bought_hi - bought_lo, np.int64)
    for i in range(bought_hi - bought_lo):
        products[i] = h.bought.indices[bought_lo + i]
    of_products = group_top(h.by_product, products, n_videos)[0]
    out = np.empty(hi - lo + len(of_products), np.int64)
    for i in range(hi - lo):
        out[i] = h.seen.indices[lo + i]
    out[hi - lo:] = of_products
    return out
