"""The assembled feed on a trained bundle of a world whose tastes are known: Hypothesis properties of a page,
pagination, exploration slots, reasons and disclosure."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.bundle import load_bundle
from feed.candidates import SOURCES, Candidates
from feed.cursor import Cursor, CursorError
from feed.rerank import PageConfig
from feed.service import FeedConfig, FeedService, UserSignals


@pytest.fixture(scope="module")
def bundle(small_bundle_dir):
    return load_bundle(small_bundle_dir)


@pytest.fixture(scope="module")
def service(bundle):
    return FeedService(bundle)


def filtered_ids(service: FeedService, user_id: str, blocked_creators=(), shown=()) -> set[str]:
    """Every video the user must not see, computed from the catalog and history directly."""
    bundle, cat, row = service.bundle, service.catalog, service.bundle.users.row(user_id)
    seen = set(cat.videos.ids[bundle.seen[row].indices]) if row >= 0 else set()
    bought = set(bundle.bought[row].indices) if row >= 0 else set()
    of_bought = np.isin(cat.video_product, list(bought)) & (cat.video_product >= 0)
    out = (cat.video_product >= 0) & ~cat.product_in_stock[np.maximum(cat.video_product, 0)]
    creators = cat.creators.rows([user_id, *blocked_creators])
    own = np.isin(cat.video_creator, creators[creators >= 0])
    return seen | set(cat.videos.ids[out | own | of_bought]) | set(shown)


def users_of(bundle) -> list[str]:
    return list(bundle.users.ids[:80]) + list(bundle.catalog.creators.ids[:20])


def assert_caps(service: FeedService, ids: list[str]) -> None:
    cat, config = service.catalog, service.config.page
    rows = cat.videos.rows(ids)
    for keys, cap in ((cat.video_creator[rows], config.max_per_creator),
                      (cat.video_product[rows], config.max_per_product),
                      (cat.video_merchant(rows), config.max_per_merchant)):
        known = keys[keys >= 0]
        assert len(known) == 0 or np.bincount(known).max() <= cap


def test_the_bundle_ships_a_ranker_and_stats(bundle, service):
    assert bundle.ranker is not None and bundle.stats is not None
    assert service.ranking == "ranker" and bundle.manifest["value_formula"]["version"] == 1


@settings(max_examples=60, deadline=None)
@given(data=st.data(), limit=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_page_properties(bundle, data, limit, seed):
    pool = users_of(bundle)
    user = data.draw(st.one_of(st.sampled_from(pool), st.text(min_size=1, max_size=20)))
    blocked = data.draw(st.lists(st.sampled_from(list(bundle.catalog.creators.ids)), max_size=3))
    recent = data.draw(st.lists(st.sampled_from(list(bundle.catalog.videos.ids)), max_size=20))
    exclude = tuple(data.draw(st.lists(st.sampled_from(list(bundle.catalog.videos.ids)), max_size=5)))
    signals = UserSignals(blocks=lambda _: blocked, recently_shown=lambda _: recent)
    service = FeedService(bundle, signals=signals)
    feed = service.feed(user, limit, exclude=exclude, seed=seed)
    ids = [i.video_id for i in feed.items]
    assert len(ids) == len(set(ids)) == limit  # the small world always has enough eligible videos
    assert not set(ids) & filtered_ids(service, user, blocked, (*recent, *exclude))
    assert_caps(service, ids)
    assert all(i.reason and i.source for i in feed.items)
    again = service.feed(user, limit, exclude=exclude, seed=seed)
    assert [i.video_id for i in again.items] == ids  # deterministic for (user, seed)
    assert feed.cold_start == (bundle.users.row(user) < 0)


def test_pages_never_repeat_and_the_feed_ends(bundle):
    service = FeedService(bundle, FeedConfig(max_depth=120))
    user = bundle.manifest["sample_user_ids"][0]
    cursor, pages = None, []
    for _ in range(20):
        feed = service.feed(user, 25, cursor=cursor, seed=7)
        pages.append([i.video_id for i in feed.items])
        if feed.next_cursor is None:
            break
        cursor = Cursor.decode(feed.next_cursor)
        assert cursor.seed == 7
    shown = [v for page in pages for v in page]
    assert len(shown) == len(set(shown)) and len(pages) > 2
    assert len(shown) <= 120 + 25 and feed.next_cursor is None
    assert not set(shown) & filtered_ids(service, user)


def test_a_cursor_keeps_its_seed_across_pages(service, bundle):
    user = bundle.manifest["sample_user_ids"][1]
    first = service.feed(user, 10, seed=3)
    second = service.feed(user, 10, cursor=Cursor.decode(first.next_cursor))
    assert second.seed == 3
    assert service.feed(user, 10, cursor=Cursor.decode(first.next_cursor)).items == second.items


@pytest.mark.parametrize("text", ["", "not base64!", "AAAA", "eJwBVwCo_wEBAAAAAQDF5GuRCLpK74"])
def test_a_damaged_cursor_is_refused(text):
    with pytest.raises(CursorError):
        Cursor.decode(text)


def test_a_changed_cursor_is_refused(service, bundle):
    text = service.feed(bundle.manifest["sample_user_ids"][0], 10, seed=1).next_cursor
    flipped = text[:10] + ("A" if text[10] != "A" else "B") + text[11:]
    with pytest.raises(CursorError, match="checksum|damaged|base64"):
        Cursor.decode(flipped)


def test_exploration_slots_sit_at_their_positions(service, bundle):
    user = bundle.manifest["sample_user_ids"][0]
    config = service.config.page
    items = service.feed(user, 20, seed=11).items
    assert items[config.new_creator_position].source == "new_creator"
    assert items[config.new_creator_position].reason == "new creator"
    new_creators = set(service.catalog.creators.ids[service._new_creators[0]])
    assert items[config.new_creator_position].creator_id in new_creators
    cat = service.catalog
    shown = {i.video_id for i in items}
    fresh = cat.video_published_ms[cat.videos.row(items[config.fresh_position].video_id)]
    others = set(cat.videos.ids) - shown - filtered_ids(service, user)
    assert fresh >= max(cat.video_published_ms[cat.videos.row(v)] for v in others)  # the newest the page lacks


def test_thompson_sampling_explores_different_new_creators_across_seeds(service, bundle):
    user = bundle.manifest["sample_user_ids"][0]
    position = service.config.page.new_creator_position
    picks = {service.feed(user, 10, seed=s).items[position].creator_id for s in range(30)}
    assert len(picks) > 3


def test_slots_can_be_turned_off(bundle):
    page = replace(PageConfig(), fresh_slot=False, new_creator_slot=False)
    service = FeedService(bundle, FeedConfig(page=page))
    items = service.feed(bundle.manifest["sample_user_ids"][0], 20, seed=1).items
    assert "new_creator" not in {i.source for i in items}


def test_items_carry_predictions_reasons_and_disclosure(service, bundle):
    feed = service.feed(bundle.manifest["sample_user_ids"][0], 30, seed=2)
    assert feed.ranking == "ranker"
    for item in feed.items:
        assert set(item.predicted) == {"watch", "share", "purchase"}
        assert all(0.0 <= p <= 1.0 for p in item.predicted.values())
        assert item.earns_commission == (item.product is not None and (item.product.commission_rate or 0) > 0
                                         and not item.sponsored)
    scores = [i.score for i in feed.items]
    assert scores[0] >= np.median(scores)  # the head of the page is the most valuable (MMR trades a little)


def test_a_merchants_own_video_is_sponsored(bundle):
    cat = bundle.catalog
    video = int(np.flatnonzero(cat.video_product >= 0)[0])
    merchant = cat.merchants.ids[cat.product_merchant[cat.video_product[video]]]
    creators = cat.creators.ids.copy()
    creators[cat.video_creator[video]] = merchant  # the brand posted this video itself
    from feed.dataset import IdMap

    sponsored_cat = replace(cat, creators=IdMap(creators))
    service = FeedService(bundle, FeedConfig(ranking="retrieval"), catalog=sponsored_cat)
    item = service._items(_single(service, video), np.zeros(1, dtype=np.int64), np.zeros(1), np.zeros((0, 3)))[0]
    assert item.sponsored and not item.earns_commission


def _single(service, video):
    from feed.candidates import SOURCES, Candidates

    return Candidates(np.array([video]), np.zeros(1), np.array([SOURCES.index("video")]), np.array([-1]))


def test_following_reason_names_the_creator(bundle):
    user = bundle.manifest["sample_user_ids"][0]
    creator = str(bundle.catalog.creators.ids[5])
    service = FeedService(bundle, signals=UserSignals(follows=lambda _: [creator]))
    items = service.feed(user, 40, seed=1).items
    followed = [i for i in items if i.source == "following"]
    assert followed and all(i.reason == f"you follow {i.creator_id}" and i.creator_id == creator for i in followed)


def test_retrieval_mode_ranks_by_fused_score(bundle):
    service = FeedService(bundle, FeedConfig(ranking="retrieval", page=PageConfig(mmr_lambda=1.0)))
    feed = service.feed(bundle.manifest["sample_user_ids"][0], 20, seed=1)
    assert feed.ranking == "retrieval" and all(i.predicted is None for i in feed.items)
    slots = {service.config.page.fresh_position, service.config.page.new_creator_position}
    free = [i.score for n, i in enumerate(feed.items) if n not in slots]
    assert free == sorted(free, reverse=True)


def test_feed_follows_true_taste(service, small_world):
    truth = small_world.truth
    top_category = truth.taste.argmax(axis=1)
    strength = truth.taste.max(axis=1)
    bundle = service.bundle
    rows = bundle.users.rows(truth.user_ids)
    candidates = [u for u in np.argsort(-strength) if rows[u] >= 0 and bundle.seen[rows[u]].nnz >= 3][:20]
    video_cat = dict(zip(truth.video_ids, truth.video_category, strict=True))
    shares = []
    for u in candidates:
        items = service.feed(str(truth.user_ids[u]), 20, seed=0).items
        shares.append(np.mean([video_cat[i.video_id] == top_category[u] for i in items]))
    assert np.mean(shares) > 0.4  # chance is ~1/categories; diversity and exploration take a few places


def test_blocked_creators_stay_blocked_when_the_store_fails(bundle):
    from feed.errors import FeedError

    user = bundle.manifest["sample_user_ids"][0]
    first = FeedService(bundle).feed(user, 20, seed=1)
    blocked = first.items[0].creator_id
    state = {"down": False}

    def blocks(_):
        if state["down"]:
            raise FeedError("store unreachable")
        return [blocked]

    service = FeedService(bundle, signals=UserSignals(blocks=blocks))
    assert blocked not in {i.creator_id for i in service.feed(user, 20, seed=1).items}
    state["down"] = True
    assert blocked not in {i.creator_id for i in service.feed(user, 20, seed=1).items}


def test_the_session_source_never_proposes_the_seed_itself(service):
    user = service._user_view(service.read(service.bundle.manifest["sample_user_ids"][0]))
    rows, _ = service.sources._source("session", user, 30, 0)
    assert len(rows) and not set(rows) & set(user.recent[:service.config.candidates.session_seeds])


def test_a_video_added_after_training_is_not_scored_as_an_outlier(bundle):
    from feed.features import FEATURES

    assert FEATURES[-1] == "has_views"
    x = np.tile(np.asarray(bundle.ranker.mean, dtype=np.float32), (2, 1))
    x[1, -1] = 0.0  # has_views = 0: a video nobody has watched yet
    probs = bundle.ranker.predict(x)
    assert probs[1, 0] > 1e-3  # not saturated to zero


def test_last_reads_keep_the_newest_and_survive_concurrent_writers():
    import threading

    from feed.service import LastReads

    reads = LastReads(50)
    reads.remember(("blocks", "old"), ["c1"])

    def write(worker: int) -> None:
        for i in range(2000):
            reads.remember(("blocks", f"{worker}-{i}"), [f"c{i}"])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == 50 and reads.get(("blocks", "old")) == []  # the oldest went first
    reads.remember(("blocks", "3-1999"), [])
    assert reads.get(("blocks", "3-1999")) == []  # an empty read forgets


def test_a_rank_depth_scores_fewer_candidates_and_keeps_the_slots(bundle):
    service, shallow = FeedService(bundle, FeedConfig(rank_depth=0)), FeedService(bundle, FeedConfig(rank_depth=30))
    user, config = bundle.manifest["sample_user_ids"][0], service.config.page
    full, cut = service.feed(user, 20, seed=11), shallow.feed(user, 20, seed=11)
    assert cut.sources == full.sources  # counted before the cut: what the sources gave
    for position in (config.new_creator_position, config.fresh_position):
        assert cut.items[position].video_id == full.items[position].video_id
    user_view = service._user_view(service.read(user))

    def candidates(of: FeedService) -> tuple[Candidates, np.ndarray]:
        return of._candidates(user_view, of._blocked(of.read(user), ()), Cursor.first(11), 20)

    (cands, counts), (ranked, ranked_counts) = candidates(service), candidates(shallow)
    assert len(cands.videos) > 60 and len(ranked.videos) <= 30 + 3 and np.all(np.diff(ranked.videos) > 0)
    assert counts.tolist() == ranked_counts.tolist() == np.bincount(cands.source, minlength=len(SOURCES)).tolist()
    best = set(cands.videos[np.argsort(-cands.rrf, kind="stable")[:25]].tolist())
    assert best <= set(ranked.videos.tolist())  # the best by retrieval (clear of float32 ties at the cut)
    at = np.searchsorted(cands.videos, ranked.videos)
    assert cands.videos[at].tolist() == ranked.videos.tolist() and cands.rrf[at].tolist() == ranked.rrf.tolist()
    assert cands.source[at].tolist() == ranked.source.tolist() and cands.detail[at].tolist() == ranked.detail.tolist()
    deep = FeedService(bundle, FeedConfig(rank_depth=len(cands.videos))).feed(user, 20, seed=11)
    assert [i.video_id for i in deep.items] == [i.video_id for i in full.items]  # deep enough: nothing is cut
    retrieval = candidates(FeedService(bundle, FeedConfig(rank_depth=30, ranking="retrieval")))[0]
    assert retrieval.videos.tolist() == cands.videos.tolist()  # retrieval ranking scores no candidate: no cut


def test_the_compiled_user_facts_are_what_the_stats_and_the_bundle_say(bundle):
    """feed.kernels.user against the numpy reading of the same rows, for every user and one unknown."""
    service = FeedService(bundle)
    stats, n_categories = service.tables.stats, len(service.catalog.categories)
    everything, found = len(service.catalog.videos), set()
    for row in [*range(len(bundle.users)), -1]:
        recent, categories = service._recent_and_categories(service._history, row, n_categories)
        assert recent.tolist() == stats.recent_of(row).tolist()
        assert categories.tolist() == stats.categories_of(row, n_categories).tolist()
        seen = bundle.seen.indices[bundle.seen.indptr[row]:bundle.seen.indptr[row + 1]] if row >= 0 else []
        bought = bundle.bought.indices[bundle.bought.indptr[row]:bundle.bought.indptr[row + 1]] if row >= 0 else []
        expected = {*seen, *np.flatnonzero(np.isin(service.catalog.video_product, bought))}
        assert set(service._never_shown(service._history, row, everything).tolist()) == expected
        found |= {name for name, rows in (("recent", recent), ("seen", seen), ("bought", bought)) if len(rows) > 1}
    assert found == {"recent", "seen", "bought"}  # each reading was compared on rows with several entries
    beyond = len(bundle.users) + 5  # a row past the matrices (a user added after them): nothing known
    recent, categories = service._recent_and_categories(service._history, beyond, n_categories)
    assert len(recent) == 0 and categories.tolist() == [0.0] * n_categories
    assert len(service._never_shown(service._history, beyond, everything)) == 0
    for row in range(len(bundle.users)):  # fewer categories than the matrix has (a smaller catalog)
        fewer = service._recent_and_categories(service._history, row, n_categories - 1)[1]
        assert fewer.tolist() == stats.categories_of(row, n_categories - 1).tolist()
