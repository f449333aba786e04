"""Build a user's feed from a loaded bundle: candidates → features → ranker → value → filters, diversity, slots.

`FeedService.feed` runs the whole pipeline for one page:

1. the user's view: vectors (refreshed from events since training when there are some), latest videos,
   followed creators, category history and segment;
2. what must never be shown: watched to the end, bought (and every video of a bought product), the user's own
   videos, out-of-stock products, blocked creators, videos shown in the last hours, `exclude=` ids, and
   everything earlier pages of the same cursor showed;
3. candidates from every source (`feed.candidates`), fused;
4. relevance: the rank of the ranker's value (`feed.ranker`) fused with the rank of the retrieval score
   (`ranker_weight`; the ranker learns from logged impressions, which come from whatever policy was serving, so
   retrieval's rank keeps what it knows about the user's candidates); in `retrieval` mode or without a ranker,
   the fused retrieval score alone;
5. the page (`feed.rerank`): caps, MMR, a fresh-video slot and a new-creator slot (Thompson sampling), each
   item with the reason it is there and its disclosure flags.
"""

from __future__ import annotations

import math
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from feed.bundle import Bundle
from feed.candidates import (
    SOURCES,
    CandidateConfig,
    Candidates,
    CandidateSources,
    Grouped,
    UserView,
    isin,
)
from feed.cursor import Cursor, id_hashes
from feed.dataset import Catalog
from feed.errors import FeedError
from feed.features import FeatureTables, PairContext
from feed.live import LiveUser, LiveUsers
from feed.ranker import ValueFormula
from feed.rerank import PageConfig, PageInput, assemble, thompson_pick
from feed.stats import Stats

Ranking = Literal["ranker", "retrieval", "popular"]
LAST_READS = 100_000  # per-user store reads remembered for outages
MAX_EXTRA = 5_000  # how far global sources (popular, trending, fresh) widen to make up for filtered videos
STAGES = ("candidates", "ranking", "page")  # the timed parts of a feed request


@dataclass(frozen=True)
class FeedConfig:
    """The ranking pipeline's settings."""

    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    page: PageConfig = field(default_factory=PageConfig)
    ranking: Ranking = "ranker"  # falls back to "retrieval" when the bundle has no ranker
    ranker_weight: float = 0.5  # ranker mode: weight of the value's rank against the fused retrieval rank
    rank_k: float = 10.0  # relevance = w/(k + value rank) + (1 − w)/(k + retrieval rank)
    hide_out_of_stock: bool = True
    max_depth: int = 500  # items a cursor can page through; after that the feed ends
    prior_strength: float = 20.0


@dataclass(frozen=True)
class ProductInfo:
    """The product a video sells."""

    product_id: str
    price: float | None
    commission_rate: float | None


@dataclass(frozen=True)
class FeedItem:
    """One ranked video of a feed."""

    video_id: str
    creator_id: str | None
    product: ProductInfo | None
    score: float
    reason: str
    source: str
    sponsored: bool = False  # the merchant itself posted it (a brand's own video)
    earns_commission: bool = False  # a purchase through it pays the creator a commission
    predicted: dict[str, float] | None = None  # p(watch), p(share), p(purchase) when a ranker scored it


@dataclass(frozen=True)
class Feed:
    """A ranked page for one user."""

    request_id: str
    user_id: str
    items: list[FeedItem]
    model_version: str
    cold_start: bool
    seed: int = 0
    next_cursor: str | None = None
    ranking: str = "retrieval"
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (candidates, ranking, page)
    sources: dict[str, int] = field(default_factory=dict)  # candidates per (best-contributing) source


@dataclass(frozen=True)
class UserSignals:
    """Per-request reads from the store: who the user follows and blocked, what was shown recently."""

    follows: Callable[[str], list[str]] | None = None
    blocks: Callable[[str], list[str]] | None = None
    recently_shown: Callable[[str], list[str]] | None = None


class FeedService:
    """Ranks feeds from one immutable bundle (and, when given, live state); safe to share between requests."""

    def __init__(self, bundle: Bundle, config: FeedConfig | None = None, model_version: str | None = None,
                 catalog: Catalog | None = None, live: LiveUsers | None = None,
                 signals: UserSignals | None = None) -> None:
        self.bundle, self.live, self.signals = bundle, live, signals or UserSignals()
        self.degraded = 0  # requests served without real-time state because the store failed
        self.config = config or FeedConfig()
        self.model_version = model_version or bundle.bundle_id
        self.catalog = cat = catalog or bundle.catalog
        stats = bundle.stats or Stats.empty(len(bundle.users), len(bundle.catalog.videos), len(cat.categories))
        factors = {name: rel.item_factors for name, rel in bundle.relations.items()}
        self.tables = FeatureTables(factors, cat, stats, self.config.prior_strength)
        self.sources = CandidateSources(bundle, cat, self.tables, self.config.candidates)
        self.formula = ValueFormula.from_dict(bundle.manifest["value_formula"]) if "value_formula" in \
            bundle.manifest else ValueFormula()
        self.ranking = self.config.ranking if bundle.ranker is not None else (
            "popular" if self.config.ranking == "popular" else "retrieval")
        self.hashes = id_hashes(cat.videos.ids)  # (n_videos,) for cursors
        self._all_by_creator = Grouped(cat.video_creator, len(cat.creators), np.zeros(len(cat.videos)))
        # (n_videos,) never shown to anyone; a mask, not a list: at catalog scale it holds tens of thousands
        self._hidden = self._out_of_stock() if self.config.hide_out_of_stock else np.zeros(len(cat.videos), bool)
        self._new_creators = self._find_new_creators()
        self._last_read: dict[tuple[str, str], list[str]] = {}  # (signal, user) -> last values read

    def with_catalog(self, catalog: Catalog) -> FeedService:
        """The same model and settings over a newer catalog."""
        live = self.live.with_catalog(catalog) if self.live else None
        service = FeedService(self.bundle, self.config, self.model_version, catalog, live, self.signals)
        service._last_read = self._last_read  # what the store said last stays known across catalog refreshes
        return service

    def _out_of_stock(self) -> np.ndarray:
        """(n_videos,) True where the video's product is out of stock."""
        cat = self.catalog
        if len(cat.products) == 0:
            return np.zeros(len(cat.videos), dtype=bool)
        return (cat.video_product >= 0) & ~cat.product_in_stock[np.maximum(cat.video_product, 0)]

    def _find_new_creators(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Creators with few training views: (creator rows, views, purchases), newest publishers first."""
        cat, counts = self.catalog, self.tables.stats.video_counts
        has = cat.video_creator >= 0
        n = len(cat.creators)
        views = np.bincount(cat.video_creator[has], weights=counts["views"][has], minlength=n)
        buys = np.bincount(cat.video_creator[has], weights=counts["purchases"][has], minlength=n)
        latest = np.full(n, -np.inf)
        np.maximum.at(latest, cat.video_creator[has], np.nan_to_num(cat.video_published_ms[has], nan=-np.inf))
        new = np.flatnonzero(views < self.config.page.new_creator_max_views)
        new = new[np.argsort(-latest[new], kind="stable")][:500]  # the pool Thompson sampling draws from
        return new, views[new], buys[new]

    # ---- the request path -------------------------------------------------------------------------------

    def feed(self, user_id: str, limit: int = 20, exclude: tuple[str, ...] = (), cursor: Cursor | None = None,
             seed: int | None = None, now_ms: float | None = None, request_id: str | None = None) -> Feed:
        """One page of the user's feed; pass the returned `next_cursor` back for the next page."""
        cursor = cursor or Cursor.first(seed if seed is not None else int(np.random.default_rng().integers(2**31)))
        clock = [time.perf_counter()]
        state = self._live_state(user_id)
        user = self._user_view(user_id, state)
        blocked = self._blocked(user_id, state, exclude)
        cands = self._candidates(user, blocked, cursor, limit)
        rng = np.random.default_rng([zlib.crc32(user_id.encode()), cursor.seed, cursor.page])
        cands = self._with_new_creator(cands, blocked, cursor, rng)
        clock.append(time.perf_counter())
        relevance, probs = self._relevance(user, cands, now_ms)
        clock.append(time.perf_counter())
        chosen = self._assemble(cands, relevance, limit)
        items = self._items(cands, chosen, relevance, probs)
        shown = self.hashes[cands.videos[chosen]]
        following = cursor.next(cursor.seed, shown, self.config.max_depth) if len(chosen) == limit else None
        clock.append(time.perf_counter())
        return Feed(request_id or uuid.uuid4().hex, user_id, items, self.model_version, cold_start=not user.vectors,
                    seed=cursor.seed, next_cursor=following.encode() if following else None, ranking=self.ranking,
                    timings=dict(zip(STAGES, np.diff(clock).tolist(), strict=True)),
                    sources=self._source_counts(cands))

    def _source_counts(self, cands: Candidates) -> dict[str, int]:
        """How many candidates each source contributed most to."""
        counts = np.bincount(cands.source, minlength=len(SOURCES))
        return {name: int(n) for name, n in zip(SOURCES, counts, strict=False) if n}

    def candidates(self, user_id: str, n: int = 50) -> dict[str, list[str]]:
        """Each source's ranked candidate video ids for a user, before fusion and filters (for inspection)."""
        user = self._user_view(user_id, self._live_state(user_id))
        lists = self.sources.lists(user, 0)
        return {name: [str(v) for v in self.catalog.videos.ids[rows[:n]]] for name, (rows, _) in lists.items()}

    def _live_state(self, user_id: str) -> LiveUser | None:
        """The user's real-time state; None (serve as trained) when there is none or the store fails."""
        if self.live is None:
            return None
        try:
            return self.live.get(user_id)
        except FeedError:
            self.degraded += 1  # counted on /metrics; the feed itself must not fail
            return None

    def _read(self, name: str, user_id: str) -> list[str]:
        """One per-request store read; when the store fails, the last answer this process saw for the user
        (a blocked creator must stay blocked through an outage), else nothing."""
        read = getattr(self.signals, name)
        if read is None:
            return []
        try:
            values = read(user_id)
        except FeedError:  # the store is down: counted once per request by _live_state
            return self._last_read.get((name, user_id), [])
        self._remember_read((name, user_id), values)
        return values

    def _remember_read(self, key: tuple[str, str], values: list[str]) -> None:
        """Keep the latest non-empty reads, a bounded number of them (oldest dropped first)."""
        if not values:
            self._last_read.pop(key, None)
            return
        self._last_read[key] = values
        if len(self._last_read) > LAST_READS:
            self._last_read.pop(next(iter(self._last_read)))

    def _user_view(self, user_id: str, state: LiveUser | None) -> UserView:
        """Vectors, latest videos, follows, category history and segment of the user."""
        row = self.bundle.users.row(user_id)
        vectors = {name: rel.user_factors[row] for name, rel in self.bundle.relations.items()} if row >= 0 else {}
        vectors.update(state.vectors if state else {})
        stats, n_categories = self.tables.stats, len(self.catalog.categories)
        categories = stats.categories_of(row, n_categories)
        recent = stats.recent_of(row)
        if state is not None and len(state.recent):
            recent = np.concatenate([state.recent, recent[~isin(recent, state.recent)]])
            categories[:len(state.categories)] += state.categories[:n_categories]
        fresh_vector = state is not None and "video" in state.vectors
        segment = stats.segment_of(vectors.get("video")) if fresh_vector or row < 0 else (
            int(stats.user_segment[row]) if row < len(stats.user_segment) else -1)
        follows = self.catalog.creators.rows(self._read("follows", user_id))
        return UserView(user_id, vectors, recent, follows[follows >= 0], categories, segment)

    def _blocked(self, user_id: str, state: LiveUser | None, exclude: tuple[str, ...]) -> np.ndarray:
        """Video rows never to show this user now (see the module docstring)."""
        row, cat, everything = self.bundle.users.row(user_id), self.catalog, len(self.catalog.videos)
        seen = _row_of(self.bundle.seen, row)
        bought = _row_of(self.bundle.bought, row)
        creators = cat.creators.rows([user_id, *self._read("blocks", user_id)])
        own_or_blocked, _ = self._all_by_creator.top(creators, everything)
        of_bought, _ = self.sources.by_product.top(bought, everything)
        shown = cat.videos.rows(self._read("recently_shown", user_id))
        excluded = cat.videos.rows(list(exclude)) if exclude else np.zeros(0, dtype=np.int64)
        live = state.blocked if state else np.zeros(0, dtype=np.int64)
        parts = [seen, live, own_or_blocked, of_bought, shown[shown >= 0], excluded[excluded >= 0]]
        return np.concatenate(parts).astype(np.int64)

    def _candidates(self, user: UserView, blocked: np.ndarray, cursor: Cursor, limit: int) -> Candidates:
        """Fused candidates without blocked rows or anything an earlier page showed."""
        extra = min(len(blocked) + len(cursor.shown) + limit, MAX_EXTRA)
        cands = self.sources.gather(user, blocked, extra, self._hidden)
        if len(cursor.shown):
            keep = ~isin(self.hashes[cands.videos], cursor.shown)
            cands = Candidates(cands.videos[keep], cands.rrf[keep], cands.source[keep], cands.detail[keep])
        return cands

    def _with_new_creator(self, cands: Candidates, blocked: np.ndarray, cursor: Cursor,
                          rng: np.random.Generator) -> Candidates:
        """Add one video of a new creator drawn by Thompson sampling (source `new_creator`)."""
        if not self.config.page.new_creator_slot or len(self._new_creators[0]) == 0:
            return cands
        creators, views, buys = self._new_creators
        arm = thompson_pick(buys, views, self.config.page.explore_prior, rng)
        videos, _ = self.sources.newest_by_creator.top(creators[arm:arm + 1], 5)
        shown = isin(self.hashes[videos], cursor.shown)
        videos = videos[~isin(videos, blocked) & ~self._hidden[videos] & ~shown]
        if len(videos) == 0:
            return cands
        video = videos[0]
        at = np.flatnonzero(cands.videos == video)
        source = SOURCES.index("new_creator")
        if len(at):
            cands.source[at[0]] = source
            return cands
        return Candidates(np.append(cands.videos, video), np.append(cands.rrf, 0.0),
                          np.append(cands.source, source), np.append(cands.detail, -1))

    def _relevance(self, user: UserView, cands: Candidates, now_ms: float | None) -> tuple[np.ndarray, np.ndarray]:
        """(n,) relevance and (n, 3) probabilities (empty without a ranker)."""
        if self.ranking == "popular":
            return self.tables.log_views[cands.videos].astype(np.float64), np.zeros((0, 3))
        if self.ranking == "retrieval":
            return cands.rrf, np.zeros((0, 3))
        now = now_ms if now_ms is not None else self.tables.stats.end_ms
        x = self.tables.features(cands.videos, self._pairs(user, cands.videos), now)
        probs = self.bundle.ranker.predict(x)
        value = self.formula.value(probs, self.tables.price[cands.videos], self.tables.commission[cands.videos])
        w, k = self.config.ranker_weight, self.config.rank_k
        return w / (k + _ranks(value)) + (1.0 - w) / (k + _ranks(cands.rrf)), probs

    def _pairs(self, user: UserView, videos: np.ndarray) -> PairContext:
        """Per-pair context for one user and many videos."""
        n = len(videos)
        affinity = {name: self.tables.affinity(name, vector, videos) for name, vector in user.vectors.items()}
        creator = self.catalog.video_creator[videos]
        return PairContext(
            affinity=affinity, follows=isin(creator, user.follows).astype(np.float32),
            session_sim=self.tables.session_similarity(user.recent, videos),
            segment=np.full(n, user.segment, dtype=np.int64),
            category_share=self.tables.category_share(user.categories, videos),
            activity=np.full(n, float(user.categories.sum()), dtype=np.float32))

    def _assemble(self, cands: Candidates, relevance: np.ndarray, limit: int) -> list[int]:
        """The page's candidate indices: MMR over the most relevant `page.pool` candidates (and the slots),
        over all of them when the caps leave that pool short of a full page."""
        slots = self._slots(cands, limit)
        pool = np.arange(len(relevance))
        if len(pool) > self.config.page.pool:
            top = np.argpartition(-relevance, self.config.page.pool)[:self.config.page.pool]
            pool = np.sort(np.concatenate([top, np.fromiter(slots.values(), dtype=np.int64, count=len(slots))]))
            pool = pool[np.r_[True, pool[1:] != pool[:-1]]]  # np.union1d without numpy 2's slow hashed unique
        chosen = assemble(self._page_input(cands.videos[pool], relevance[pool]), limit, self.config.page,
                          {pos: int(np.searchsorted(pool, i)) for pos, i in slots.items()})  # pool is sorted
        if len(chosen) < limit and len(pool) < len(relevance):
            return assemble(self._page_input(cands.videos, relevance), limit, self.config.page, slots)
        return [int(pool[j]) for j in chosen]

    def _page_input(self, videos: np.ndarray, relevance: np.ndarray) -> PageInput:
        """The arrays page assembly needs."""
        cat, unit = self.catalog, self.tables.unit_video
        known = videos < len(unit)
        if not len(unit):
            vectors = np.zeros((len(videos), 1))
        elif known.all():  # the usual case: no video added since training among them
            vectors = unit[videos]
        else:
            vectors = np.where(known[:, None], unit[np.where(known, videos, 0)], 0.0)
        return PageInput(relevance, cat.video_creator[videos], cat.video_product[videos],
                         cat.video_merchant(videos), vectors)

    def _slots(self, cands: Candidates, limit: int) -> dict[int, int]:
        """Positions reserved for exploration: the new-creator pick and the newest video not yet shown."""
        config, slots = self.config.page, {}
        new = np.flatnonzero(cands.source == SOURCES.index("new_creator"))
        if config.new_creator_slot and len(new) and config.new_creator_position < limit:
            slots[config.new_creator_position] = int(new[0])
        if config.fresh_slot and config.fresh_position < limit and len(cands.videos):
            published = self.sources.published[cands.videos]  # a copy: −inf where unknown
            published[list(slots.values())] = -np.inf
            newest = int(np.argmax(published))
            if np.isfinite(published[newest]):
                slots[config.fresh_position] = newest
        return slots

    def _items(self, cands: Candidates, chosen: list[int], relevance: np.ndarray,
               probs: np.ndarray) -> list[FeedItem]:
        """Response items for the chosen candidates (one gather per column, then plain Python per item)."""
        cat, at = self.catalog, np.asarray(chosen, dtype=np.int64)
        videos = cands.videos[at]
        creators, products = cat.video_creator[videos], cat.video_product[videos]
        has_product = products >= 0
        product_rows = np.where(has_product, products, 0)
        merchants = np.where(has_product, cat.product_merchant[product_rows], -1) if len(cat.products) else \
            np.full(len(at), -1)
        creator_ids = [str(c) if r >= 0 else None for r, c in zip(
            creators.tolist(), cat.creators.ids[np.maximum(creators, 0)].tolist() if len(cat.creators) else
            [None] * len(at), strict=True)]
        merchant_ids = cat.merchants.ids[np.maximum(merchants, 0)].tolist() if len(cat.merchants) else [None] * len(
            at)
        merchants = merchants.tolist()
        infos = self._products(products)
        heads = probs[at].tolist() if len(probs) else None
        items = []
        for j, (video, source, detail, score) in enumerate(zip(
                cat.videos.ids[videos].tolist(), cands.source[at].tolist(), cands.detail[at].tolist(),
                relevance[at].tolist(), strict=True)):
            creator_id, info, name = creator_ids[j], infos[j], SOURCES[source]
            sponsored = creator_id is not None and merchants[j] >= 0 and str(merchant_ids[j]) == creator_id
            earns = info is not None and (info.commission_rate or 0.0) > 0 and not sponsored
            predicted = dict(zip(("watch", "share", "purchase"), heads[j], strict=True)) if heads else None
            items.append(FeedItem(str(video), creator_id, info, score, self._reason(name, detail, creator_id), name,
                                  sponsored, earns, predicted))
        return items

    def _reason(self, source: str, detail: int, creator_id: str | None) -> str:
        """Why a candidate is on the page, in the user's words."""
        if source == "following":
            return f"you follow {creator_id}"
        if source == "trending" and detail >= 0:
            return f"trending in {self.catalog.categories.ids[detail]}"
        if source == "session" and detail >= 0:
            return "like the video you just watched"
        return REASONS[source]

    def _products(self, rows: np.ndarray) -> list[ProductInfo | None]:
        """Product info per product row, None for -1."""
        cat = self.catalog
        if not len(cat.products):
            return [None] * len(rows)
        safe = np.maximum(rows, 0)
        return [ProductInfo(str(pid), None if math.isnan(price) else price, None if math.isnan(rate) else rate)
                if row >= 0 else None for row, pid, price, rate in zip(
                    rows.tolist(), cat.products.ids[safe].tolist(), cat.product_price[safe].astype(np.float64).tolist(),
                    cat.product_commission[safe].astype(np.float64).tolist(), strict=True)]


REASONS = {
    "video": "similar to videos you watched",
    "creator": "a creator you trust",
    "product": "a product for you, from the creator you trust most for it",
    "following": "from a creator you follow",
    "trending": "trending now",
    "fresh": "new video",
    "session": "like what you just watched",
    "popular": "popular now",
    "new_creator": "new creator",
}


def _ranks(values: np.ndarray) -> np.ndarray:
    """0-based rank of each value, highest first (ties by position)."""
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(-values, kind="stable")] = np.arange(len(values))
    return ranks


def _row_of(matrix: object, row: int) -> np.ndarray:
    """Column indices of one CSR row (empty for -1)."""
    if row < 0:
        return np.zeros(0, dtype=np.int64)
    return matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]].astype(np.int64)
