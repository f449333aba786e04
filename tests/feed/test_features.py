"""Serving computes one user's features in a compiled pass over the per-video record; training computes them per
pair from a PairContext. Both must give the same numbers, or the ranker would score what it never saw."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.bundle import load_bundle
from feed.candidates import isin
from feed.cursor import Cursor
from feed.features import FEATURES, PairContext
from feed.service import FeedService, UserRead


@pytest.fixture(scope="module")
def service(small_bundle_dir):
    return FeedService(load_bundle(small_bundle_dir))


def training_features(service: FeedService, user, videos: np.ndarray, now_ms: float) -> np.ndarray:
    """The features of (user, video) pairs as training builds them (`PairContext`, numpy)."""
    tables, n = service.tables, len(videos)
    affinity = {name: tables.affinity(name, vector, videos) for name, vector in user.vectors.items()}
    context = PairContext(
        affinity=affinity, follows=isin(service.catalog.video_creator[videos], user.follows).astype(np.float32),
        session_sim=tables.session_similarity(user.recent, videos), segment=np.full(n, user.segment),
        category_share=tables.category_share(user.categories, videos),
        activity=np.full(n, float(user.categories.sum()), dtype=np.float32))
    return tables.features(videos, context, now_ms)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), follows=st.integers(0, 5), now_days=st.floats(-3.0, 40.0))
def test_serving_features_equal_training_features(service, data, follows, now_days):
    users = list(service.bundle.users.ids[:200]) + ["somebody-new"]
    user = service._user_view(UserRead(data.draw(st.sampled_from(users)), None, [], [], []))
    user.follows = np.sort(np.random.default_rng(follows).choice(len(service.catalog.creators), follows))
    cands, _ = service._candidates(user, np.zeros(0, dtype=np.int64), Cursor.first(1), 20)
    now_ms = service.tables.stats.end_ms + now_days * 86_400_000
    served = service.tables.user_features(cands.videos, user.vectors, user.recent, user.follows, user.categories,
                                          user.segment, now_ms)
    expected = training_features(service, user, cands.videos, now_ms)
    assert served.shape == expected.shape == (len(cands.videos), len(FEATURES))
    for j, name in enumerate(FEATURES):
        np.testing.assert_allclose(served[:, j], expected[:, j], rtol=2e-5, atol=2e-6, err_msg=name)


def test_the_record_holds_what_the_tables_hold(service):
    tables, layout = service.tables, service.tables.layout
    np.testing.assert_array_equal(layout.keys[:, 0], service.catalog.video_creator)
    np.testing.assert_array_equal(layout.keys[:, 1], service.catalog.video_product)
    np.testing.assert_array_equal(layout.keys[:, 2], tables.category)
    np.testing.assert_array_equal(layout.record[:, :10], tables.static)
    segments = tables.segment_buy.shape[0]
    np.testing.assert_array_equal(layout.record[:, 14:14 + segments], tables.segment_buy.T)
