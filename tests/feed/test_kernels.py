"""The compiled helpers every stage sorts and searches with, against numpy on data whose answer is known."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from feed.kernels.base import contains, order_desc, ranks_desc, sort_by_key

FLOATS = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5, np.inf, -np.inf]), st.floats(-1e6, 1e6, width=32))


@settings(max_examples=200, deadline=None)
@given(values=arrays(np.float64, st.integers(0, 80), elements=FLOATS))
def test_order_desc_is_a_stable_descending_sort(values):
    expected = np.lexsort((np.arange(len(values)), -values))  # largest first, ties by position
    assert order_desc(values).tolist() == expected.tolist()
    ranks = ranks_desc(values)
    assert ranks[expected].tolist() == list(range(len(values)))


@settings(max_examples=200, deadline=None)
@given(keys=arrays(np.int64, st.integers(0, 80), elements=st.integers(0, 2**40 - 1)))
def test_sort_by_key_is_a_stable_ascending_argsort(keys):
    assert sort_by_key(keys).tolist() == np.argsort(keys, kind="stable").tolist()


@given(pool=st.lists(st.integers(-5, 50), max_size=30), value=st.integers(-10, 60))
def test_contains_is_membership_in_a_sorted_array(pool, value):
    assert contains(np.sort(np.array(pool, dtype=np.int64)), value) == (value in pool)
