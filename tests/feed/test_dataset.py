"""Interaction matrices, weights, refunds, the time split and held-out positives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feed.dataset import (IdMap, build_catalog, build_interactions, holdout_positives, relation_items,
                          time_split)
from feed.errors import DataError
from feed.schema import Dataset

WEIGHTS = {"impression": 0.0, "view": 1.0, "share": 4.0, "purchase": 8.0, "refund": -8.0}


def events(rows: list[tuple]) -> pd.DataFrame:
    """Events from (day, user, video, event, watch_ms, product) tuples in canonical dtypes."""
    frame = pd.DataFrame(rows, columns=["day", "user_id", "video_id", "event", "watch_ms", "product_id"])
    frame["ts"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(frame.pop("day"), unit="D")
    frame["ts"] = frame["ts"].astype("datetime64[ms, UTC]")
    frame["watch_ms"] = frame["watch_ms"].astype("float64")
    return frame


def catalog_dataset(ev: pd.DataFrame) -> Dataset:
    videos = pd.DataFrame({"video_id": ["v1", "v2", "v3"], "creator_id": ["c1", "c1", "c2"],
                           "product_id": ["p1", pd.NA, "p2"], "duration_ms": [10_000.0, 20_000.0, np.nan]})
    products = pd.DataFrame({"product_id": ["p1", "p2"], "price": [10.0, 20.0],
                             "commission_rate": [0.1, 0.2], "in_stock": [True, False]})
    return Dataset(events=ev, videos=videos, products=products)


def test_views_scale_by_watch_ratio_and_refunds_cancel_purchases():
    ev = events([(0, "u1", "v1", "view", 5_000, None), (0, "u1", "v1", "purchase", None, "p1"),
                 (1, "u1", "v1", "refund", None, "p1"), (0, "u2", "v2", "view", 20_000, None),
                 (0, "u2", "v3", "view", 1, None), (0, "u2", "v2", "impression", None, None)])
    data = catalog_dataset(ev)
    inter = build_interactions(ev, build_catalog(data), WEIGHTS)
    video = inter.matrices["video"].toarray()
    np.testing.assert_allclose(video, [[0.5, 0, 0], [0, 1.0, 1.0]])  # v3 has no duration: a view counts 1
    np.testing.assert_allclose(inter.matrices["creator"].toarray(), [[0.5, 0], [1.0, 1.0]])
    np.testing.assert_allclose(inter.matrices["product"].toarray(), [[0.5, 0], [0, 1.0]])
    np.testing.assert_array_equal(inter.seen.toarray(), [[1, 0, 0], [0, 1, 0]])  # bought v1; watched v2 fully


def test_events_only_dataset_has_just_the_video_relation():
    ev = events([(0, "u1", "v9", "view", None, None), (1, "u2", "v8", "share", None, None)])
    catalog = build_catalog(Dataset(events=ev))
    inter = build_interactions(ev, catalog, WEIGHTS)
    assert list(inter.matrices) == ["video"]
    assert list(catalog.videos.ids) == ["v8", "v9"]
    assert np.all(catalog.video_creator == -1) and np.all(catalog.video_product == -1)


def test_purchase_product_comes_from_the_event_before_the_catalog():
    ev = events([(0, "u1", "v2", "purchase", None, "p2")])
    catalog = build_catalog(catalog_dataset(ev))
    np.testing.assert_array_equal(relation_items(ev, catalog, "product"), [1])


def test_time_split_has_one_cutoff_and_no_leak():
    ev = events([(d, f"u{d % 3}", f"v{d % 2 + 1}", "view", None, None) for d in range(10)])
    split = time_split(ev, 0.3)
    assert split.train["ts"].max() < split.cutoff <= split.test["ts"].min()
    assert len(split.train) + len(split.test) == len(ev)
    with pytest.raises(DataError, match="test_fraction"):
        time_split(ev, 1.5)


def test_holdout_positives_drop_training_items_and_unknown_users():
    ev = events([(0, "u1", "v1", "view", 10_000, None), (5, "u1", "v1", "view", 10_000, None),
                 (5, "u1", "v2", "purchase", None, None), (5, "u1", "v3", "view", 1_000, None),
                 (5, "u9", "v2", "purchase", None, None)])
    data = catalog_dataset(ev)
    split = time_split(ev, 0.5)
    train = build_interactions(split.train, build_catalog(data), WEIGHTS)
    test = holdout_positives(split.test, train, "video", WEIGHTS, min_weight=1.0)
    assert test.shape == (1, 3)  # u9 is unknown to the training data
    np.testing.assert_array_equal(test.toarray(), [[0, 1, 1]])  # v1 was trained on; v3's view weighs 1 (no duration)


def test_id_map_rows_and_uniqueness():
    ids = IdMap.from_values(pd.Series(["b", "a", None, "b"]))
    assert list(ids.ids) == ["a", "b"]
    np.testing.assert_array_equal(ids.rows(["b", "zz"]), [1, -1])
    with pytest.raises(DataError):
        IdMap(["x", "x"])


def test_purchases_without_a_catalog_record_no_bought_products():
    ev = events([(0, "u1", "v1", "purchase", None, None), (1, "u2", "v2", "view", None, None)])
    inter = build_interactions(ev, build_catalog(Dataset(events=ev)), WEIGHTS)
    assert inter.bought.shape == (2, 0) and inter.seen.toarray().tolist() == [[1, 0], [0, 0]]


def test_bought_products_are_recorded_per_user():
    ev = events([(0, "u1", "v1", "purchase", None, "p1"), (0, "u2", "v3", "view", None, None)])
    inter = build_interactions(ev, build_catalog(catalog_dataset(ev)), WEIGHTS)
    np.testing.assert_array_equal(inter.bought.toarray(), [[1, 0], [0, 0]])
