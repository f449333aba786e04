"""Each candidate source on a trained bundle, checked against a direct computation; stats on crafted events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feed.bundle import load_bundle
from feed.candidates import SOURCES, CandidateConfig, fuse
from feed.dataset import IdMap, build_catalog
from feed.schema import Dataset
from feed.service import FeedService, UserSignals
from feed.stats import DAY_MS, StatsConfig, compute_stats, smoothed


@pytest.fixture(scope="module")
def service(small_bundle_dir):
    return FeedService(load_bundle(small_bundle_dir))


@pytest.fixture(scope="module")
def user(service):
    return service._user_view(service.read(service.bundle.manifest["sample_user_ids"][0]))


def source(service, user, name, n=30):
    rows, detail = service.sources._source(name, user, n, 0)
    return rows, detail


def test_video_source_is_the_index_search_of_the_users_vector(service, user):
    rows, _ = source(service, user, "video")
    exact = np.argsort(-(service.bundle.relations["video"].item_factors @ user.vectors["video"]), kind="stable")
    assert list(rows[:10]) == list(exact[:10])


def test_creator_source_gives_the_nearest_creators_videos(service, user):
    rows, _ = source(service, user, "creator", 10)
    creators = service.catalog.video_creator[rows]
    scores = service.bundle.relations["creator"].item_factors @ user.vectors["creator"]
    top = set(np.argsort(-scores)[:10])
    assert set(creators) <= top and np.bincount(creators).max() <= service.config.candidates.videos_per_creator


def test_product_source_picks_each_products_most_trusted_video(service, user):
    rows, _ = source(service, user, "product", 20)
    cat, tables = service.catalog, service.tables
    products = cat.video_product[rows]
    assert len(products) == len(set(products)) > 5  # one video per product
    creator_vectors = service.bundle.relations["creator"].item_factors
    for video, product in zip(rows, products, strict=True):
        siblings = np.flatnonzero(cat.video_product == product)
        prior = tables.segment_buy[user.segment, siblings] if user.segment >= 0 else tables.buy_prior[siblings]
        trust = creator_vectors[cat.video_creator[siblings]] @ user.vectors["creator"] + np.log(prior)
        considered = siblings[np.isin(siblings, service.sources.by_product.top(
            np.array([product]), service.config.candidates.videos_per_product)[0])]
        best = considered[np.argmax(trust[np.isin(siblings, considered)])]
        assert video == best


def test_following_source_is_the_newest_videos_of_followed_creators(service, small_bundle_dir):
    bundle = service.bundle
    creators = [str(bundle.catalog.creators.ids[i]) for i in (3, 7)]
    followed = FeedService(bundle, signals=UserSignals(follows=lambda _: creators))
    view = followed._user_view(followed.read("someone"))
    rows, _ = followed.sources._source("following", view, 50, 0)
    cat = followed.catalog
    assert set(cat.creators.ids[cat.video_creator[rows]]) == set(creators)
    for creator in creators:
        mine = rows[cat.creators.ids[cat.video_creator[rows]] == creator]
        published = cat.video_published_ms[mine]
        assert list(published) == sorted(published, reverse=True)
        assert len(mine) == min(followed.config.candidates.videos_per_creator,
                                int((cat.video_creator == cat.creators.row(creator)).sum()))


def test_trending_source_leads_with_the_users_categories_then_overall(service, user):
    rows, detail = source(service, user, "trending", 10)
    favourite = int(np.argmax(user.categories))
    in_category = rows[detail >= 0]
    assert len(in_category) and set(service.tables.category[in_category]) <= set(
        np.argsort(-user.categories)[:service.config.candidates.trending_categories])
    assert favourite in set(detail)
    overall = rows[detail < 0]
    trend = service.tables.stats.trend
    assert list(overall) == list(np.argsort(-trend, kind="stable")[:10])


def test_fresh_and_popular_sources_are_ordered(service, user):
    fresh, _ = source(service, user, "fresh", 20)
    published = service.catalog.video_published_ms[fresh]
    assert list(published) == sorted(published, reverse=True)
    popular, _ = source(service, user, "popular", 20)
    assert list(service.bundle.popularity[popular]) == sorted(service.bundle.popularity[popular], reverse=True)


def test_session_source_finds_neighbours_of_the_latest_videos(service, user):
    rows, detail = source(service, user, "session", 20)
    assert len(user.recent) and set(detail) <= set(user.recent[:service.config.candidates.session_seeds])
    unit = service.tables.unit_video
    near = np.einsum("nd,nd->n", unit[rows], unit[detail])
    random = unit[np.random.default_rng(0).integers(0, len(unit), 500)] @ unit[detail[0]]
    assert np.median(near) > np.percentile(random, 90)


def test_a_user_nobody_knows_gets_only_global_sources(service):
    view = service._user_view(service.read("brand-new-user"))
    lists = service.sources.lists(view, 0)
    assert set(lists) == {"trending", "fresh", "popular"} and view.segment == -1


def test_quota_zero_turns_a_source_off(service, user):
    from dataclasses import replace

    sources = service.sources
    config = replace(sources.config, quotas={**sources.config.quotas, "video": 0, "session": 0})
    original = sources.config
    sources.config = config
    try:
        assert not {"video", "session"} & set(sources.lists(user, 0))
    finally:
        sources.config = original


def test_fuse_sums_reciprocal_ranks_and_keeps_the_strongest_source():
    config = CandidateConfig(weights={"video": 1.0, "popular": 0.5}, rrf_k=0)
    lists = {"video": (np.array([5, 6]), np.array([-1, -1])), "popular": (np.array([6, 7, 8]), np.array([-1, 4, -1]))}
    cands = fuse(lists, config, blocked=np.array([8]))
    assert list(cands.videos) == [5, 6, 7]
    np.testing.assert_allclose(cands.rrf, [1.0, 1 / 2 + 0.5, 0.5 / 2])
    assert [SOURCES[s] for s in cands.source] == ["video", "video", "popular"] and list(cands.detail) == [-1, -1, 4]


def crafted_events() -> Dataset:
    rows = [  # ts in days, user, video, event, watch_ms
        (0, "a", "v1", "view", 900), (0, "a", "v1", "purchase", None), (1, "b", "v1", "view", 100),
        (2, "a", "v2", "view", 1000), (2, "b", "v2", "share", None), (2, "c", "v2", "impression", None),
        (3, "a", "v3", "view", 50),
    ]
    events = pd.DataFrame(rows, columns=["ts", "user_id", "video_id", "event", "watch_ms"])
    events["ts"] = pd.to_datetime(events["ts"] * DAY_MS, unit="ms", utc=True).astype("datetime64[ms, UTC]")
    events["watch_ms"] = events["watch_ms"].astype(np.float64)
    videos = pd.DataFrame({"video_id": ["v1", "v2", "v3"], "creator_id": ["c1", "c1", "c2"],
                           "product_id": ["p1", "p2", pd.NA], "duration_ms": [1000.0] * 3,
                           "published_at": pd.Series([pd.NaT] * 3, dtype="datetime64[ms, UTC]")})
    products = pd.DataFrame({"product_id": ["p1", "p2"], "merchant_id": ["m", "m"], "category": ["books", "toys"],
                             "price": [10.0, 20.0], "commission_rate": [0.1, 0.2], "in_stock": [True, True]})
    return Dataset(events=events, videos=videos, products=products)


def test_stats_count_decay_and_order_recent_videos():
    ds = crafted_events()
    catalog = build_catalog(ds)
    users = IdMap(["a", "b", "c"])
    stats = compute_stats(ds.events, catalog, users, None, StatsConfig(half_life_days=1.0, segments=0))
    v1, v2, v3 = catalog.videos.rows(["v1", "v2", "v3"])
    assert stats.video_counts["views"][[v1, v2, v3]].tolist() == [2, 1, 1]
    assert stats.video_counts["full_views"][[v1, v2, v3]].tolist() == [1, 1, 0]  # 900/1000 ≥ 0.9
    # trend at day 3, half-life 1 day: v1 = (1 + 10)·2^-3 + 1·2^-2; v2 = (1 + 3)·2^-1; v3 = 1
    np.testing.assert_allclose(stats.trend[[v1, v2, v3]], [11 / 8 + 1 / 4, 4 / 2, 1.0], rtol=1e-6)
    assert list(stats.recent_of(users.row("a"))) == [v3, v2, v1]
    books, toys = catalog.categories.rows(["books", "toys"])
    assert stats.categories_of(users.row("a"), 2)[[books, toys]].tolist() == [2, 1]  # v3 has no product


def test_smoothing_shrinks_small_counts_to_the_global_rate():
    rates = smoothed(np.array([1.0, 300.0]), np.array([2.0, 2000.0]), strength=20.0)
    global_rate = 301 / 2002
    assert abs(rates[0] - global_rate) < abs(0.5 - global_rate) and rates[1] == pytest.approx(0.15, abs=0.002)


def test_session_similarity_is_the_same_per_user_and_per_pair(service, user):
    videos = np.arange(40)
    per_user = service.tables.session_similarity(user.recent, videos)
    table = np.tile(np.pad(user.recent, (0, 2), constant_values=-1), (len(videos), 1))  # padded like training's
    np.testing.assert_allclose(service.tables.pair_session_similarity(table, videos), per_user, atol=1e-6)


def test_the_three_searches_are_each_relations_nearest_whichever_index_it_has(small_bundle_dir):
    """The video and product indexes scanned by `feed.kernels.ivf` in one call, the creator index (Flat) by
    FAISS: each source's rows are its index's `nearest` for the user's vector, with the quota as k."""
    from feed.index import VectorIndex

    bundle = load_bundle(small_bundle_dir)
    for relation, factory in (("video", "IVF16,Flat"), ("product", "IVF8,Flat")):
        model = bundle.relations[relation]
        model.index = VectorIndex.build(model.item_factors, factory, "nprobe=3")
    assert not bundle.relations["creator"].index.compiled
    service = FeedService(bundle)
    quotas = service.config.candidates.quotas
    for user_id in bundle.manifest["sample_user_ids"][:5]:
        user = service._user_view(service.read(user_id))
        request = service.sources.request(user, 0)
        for relation, rows in (("video", request.video_rows), ("creator", request.creator_rows),
                               ("product", request.product_rows)):
            index = bundle.relations[relation].index
            assert rows.tolist() == index.nearest(user.vectors[relation], quotas[relation]).tolist()
            assert 0 < len(rows) <= min(quotas[relation], index.ntotal) and rows.dtype == np.int64
    nobody = service.sources.request(service._user_view(service.read("nobody-at-all")), 0)
    assert len(nobody.video_rows) == len(nobody.creator_rows) == len(nobody.product_rows) == 0
