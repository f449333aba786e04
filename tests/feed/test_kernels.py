"""The compiled helpers every stage sorts and searches with, against numpy on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
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


@settings(deadline=None)  # the first example may compile the kernel
@given(pool=st.lists(st.integers(-5, 50), max_size=30), value=st.integers(-10, 60))
def test_contains_is_membership_in_a_sorted_array(pool, value):
    assert contains(np.sort(np.array(pool, dtype=np.int64)), value) == (value in pool)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 60), depth=st.integers(1, 70), data=st.data())
def test_the_ranked_subset_is_the_best_by_retrieval_and_every_slot_candidate(n, depth, data):
    from feed.kernels.scoring import NEW_CREATOR, ranked_subset

    draw = lambda elements: np.array(data.draw(st.lists(elements, min_size=n, max_size=n)))  # noqa: E731
    retrieval = draw(st.sampled_from([0.0, 0.01, 0.02, 0.5, 1.0])).astype(np.float64)  # many ties
    published = draw(st.sampled_from([np.nan, 1.0, 2.0, 3.0])).astype(np.float32)
    source = draw(st.sampled_from([0, 1, NEW_CREATOR])).astype(np.int64)
    videos = np.arange(n, dtype=np.int64)[::-1].copy()  # candidate i is record row n − 1 − i
    by_row = np.zeros(n, dtype=np.float32)
    by_row[videos] = published
    kept = ranked_subset(by_row, videos, retrieval, source, depth)
    by_retrieval = np.lexsort((np.arange(n), -retrieval.astype(np.float32)))[:depth]  # ties: the earlier
    order = [i for i in np.lexsort((np.arange(n), -np.nan_to_num(published, nan=-np.inf))) if not np.isnan(published[i])]
    expected = set(by_retrieval.tolist()) | set(np.flatnonzero(source == NEW_CREATOR).tolist()) | set(order[:2])
    assert kept.tolist() == sorted(expected)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 20), width=st.integers(0, 5), rows=st.lists(st.integers(-3, 25), max_size=30))
def test_gather_rows_is_indexing_with_zeros_out_of_range(n, width, rows):
    from feed.kernels.base import gather_rows

    table = np.arange(n * width, dtype=np.float32).reshape(n, width) + 1
    at = np.array(rows, dtype=np.int64)
    expected = np.zeros((len(at), width), dtype=np.float32)
    valid = (at >= 0) & (at < n)
    expected[valid] = table[at[valid]]
    np.testing.assert_array_equal(gather_rows(table, at), expected)


def test_a_bound_kernel_answers_as_the_dispatcher_and_checks_its_types(monkeypatch):
    from feed.kernels import base
    from feed.kernels.page import Tables, candidate_facts

    record = np.arange(64, dtype=np.float32).reshape(4, 16)  # every column the kernel reads
    keys = np.arange(16, dtype=np.int32).reshape(4, 4)
    tables = Tables(record, keys, np.ones((4, 2), dtype=np.float32))
    bound = base.Bound(candidate_facts)
    videos = np.array([2, 0, 3], dtype=np.int64)
    for _ in range(2):  # the first call binds, the second goes straight to the compiled version
        got, expected = bound(tables, videos), candidate_facts(tables, videos)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    monkeypatch.setattr(base, "CHECK_TYPES", True)
    bound(tables, videos)  # the same types pass the check
    with pytest.raises(TypeError, match=r"candidate_facts: argument 1 is array\(int32"):
        bound(tables, videos.astype(np.int32))
    with pytest.raises(TypeError, match="argument 0"):
        bound(tables._replace(record=record.astype(np.float64)), videos)


def test_a_bound_kernel_checks_one_call_in_so_many_even_without_the_switch(monkeypatch):
    from feed.kernels import base
    from feed.kernels.page import Tables, candidate_facts

    tables = Tables(np.zeros((4, 16), np.float32), np.zeros((4, 4), np.int32), np.ones((4, 2), np.float32))
    videos = np.array([1, 2], dtype=np.int64)
    monkeypatch.setattr(base, "CHECK_TYPES", False)
    monkeypatch.setattr(base, "CHECK_EVERY", 3)
    bound = base.Bound(candidate_facts)
    bound(tables, videos)  # binds
    bound(tables, videos)  # calls 1 and 2 of 3: trusted
    bound(tables, videos)
    with pytest.raises(TypeError, match=r"argument 1 is array\(int32"):  # call 3: checked (numba's own unboxing
        bound(tables, videos.astype(np.int32))  # error would read "can't unbox")
    with pytest.raises(TypeError, match="1 arguments, the bound version takes 2"):
        monkeypatch.setattr(base, "CHECK_TYPES", True)
        bound(tables)
