"""Build a user's feed from a loaded bundle: candidates → features → ranker → value → filters, diversity, slots.

`FeedService.feed` runs the whole pipeline for one page:

1. the user's view: vectors (refreshed from events since training when there are some), latest videos,
   followed creators, category history and segment;
2. what must never be shown: watched to the end, bought (and every video of a bought product), the user's own
   videos, out-of-stock products, blocked creators, videos shown in the last hours, `exclude=` ids, and
   everything earlier pages of the same cursor showed;
3. candidates from every source (`feed.candidates`), fused;
4. relevance of the best `rank_depth` candidates by fused retrieval score and the slots' picks (all of them at 0):
   the rank of the ranker's value (`feed.ranker`) fused with the rank of the retrieval score
   (`ranker_weight`; the ranker learns from logged impressions, which come from whatever policy was serving, so
   retrieval's rank keeps what it knows about the user's candidates); in `retrieval` mode or without a ranker,
   the fused retrieval score alone;
5. the page (`feed.rerank`): caps, MMR, a fresh-video slot and a new-creator slot (Thompson sampling), each
   item with the reason it is there and its disclosure flags.
"""

from __future__ import annotations

import math
import random
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, NamedTuple

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
from feed.features import FeatureTables
from feed.kernels import page as kernel_page
from feed.kernels.base import K_CREATOR, K_PRODUCT, Bound
from feed.kernels import scoring as kernel_scoring
from feed.kernels import user as kernel_user
from feed.live import LiveUser, LiveUsers
from feed.ranker import ValueFormula
from feed.rerank import PageConfig
from feed.stats import Stats

Ranking = Literal["ranker", "retrieval", "popular"]
RANKINGS = ("ranker", "retrieval", "popular")  # in feed.kernels.scoring's order
LAST_READS = 100_000  # per-user store reads remembered for outages
MAX_EXTRA = 5_000  # how far global sources (popular, trending, fresh) widen to make up for filtered videos
STAGES = ("candidates", "ranking", "page")  # the timed parts of a feed request
NO_ROWS = np.zeros(0, dtype=np.int64)


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
    rank_depth: int = 300  # the ranker scores the best this many by fused retrieval score (and the slots' picks); 0: all
    prior_strength: float = 20.0


class ProductInfo(NamedTuple):
    """The product a video sells."""

    product_id: str
    price: float | None
    commission_rate: float | None


class FeedItem(NamedTuple):
    """One ranked video of a feed (a named tuple: ~20 are made per request)."""

    video_id: str
    creator_id: str | None
    product: ProductInfo | None
    score: float
    reason: str
    source: str
    sponsored: bool = False  # the merchant itself posted it (a brand's own video)
    earns_commission: bool = False  # a purchase through it pays the creator a commission
    predicted: dict[str, float] | None = None  # keys watch, share, purchase (in that order) when a ranker scored it


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


class LastReads:
    """The latest non-empty store reads per (signal, user), at most `size` (oldest dropped first). Thread-safe: store
    reads run in several worker threads, and a catalog refresh's new service shares it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> list[str]:
        """The last values read for the key, else nothing."""
        with self._lock:
            return self._values.get(key, [])

    def remember(self, key: tuple[str, str], values: list[str]) -> None:
        """Keep a read (an empty one forgets the key)."""
        with self._lock:
            if not values:
                self._values.pop(key, None)
                return
            self._values[key] = values
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)

    def __len__(self) -> int:
        return len(self._values)


SIGNALS = ("follows", "blocks", "recently_shown")  # the per-request store reads of UserSignals


@dataclass(frozen=True)
class UserRead:
    """What the store said about one user for one request (`FeedService.read`)."""

    user_id: str
    state: LiveUser | None  # events since training folded in; None: serve as trained
    follows: list[str]  # creator ids
    blocks: list[str]  # blocked creator ids
    recently_shown: list[str]  # video ids shown in the last hours


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
        self.hashes = id_hashes(cat.videos.ids)  # (n_videos,) for cursors
        # (n_videos,) never shown to anyone; a mask, not a list: at catalog scale it holds tens of thousands
        self._hidden = self._out_of_stock() if self.config.hide_out_of_stock else np.zeros(len(cat.videos), bool)
        self._new_creators = self._find_new_creators() if self.config.page.new_creator_slot else None
        self.sources = CandidateSources(bundle, cat, self.tables, self.config.candidates, self._hidden, self.hashes,
                                        self._new_creators, self.config.page.explore_prior)
        self.formula = ValueFormula.from_dict(bundle.manifest["value_formula"]) if "value_formula" in \
            bundle.manifest else ValueFormula()
        self.ranking = self.config.ranking if bundle.ranker is not None else (
            "popular" if self.config.ranking == "popular" else "retrieval")
        self._all_by_creator = Grouped(cat.video_creator, len(cat.creators), np.zeros(len(cat.videos)))
        self._last_read = LastReads(LAST_READS)  # (signal, user) -> last values read
        self._product_infos: dict[int, tuple[ProductInfo | None, str | None]] = {}  # product row -> _product
        self._numbers = self._kernel_numbers()
        self._relevance_kernel, self._page_kernel = Bound(kernel_scoring.relevance), Bound(kernel_page.page)
        self._history = kernel_user.History(_csr(self.tables.stats.recent), _csr(self.tables.stats.user_category),
                                            _csr(bundle.seen), _csr(bundle.bought), self.sources.by_product.groups)
        self._recent_and_categories = Bound(kernel_user.recent_and_categories)
        self._never_shown = Bound(kernel_user.never_shown)
        self._warm_up()

    def _kernel_numbers(self) -> tuple[object, object, object]:
        """The settings and per-model arrays of the three stage kernels, made once."""
        config, tables = self.config, self.tables
        model = self.formula.numbers(self.bundle.ranker, RANKINGS.index(self.ranking), config.ranker_weight,
                                     config.rank_k)
        page = kernel_page.Tables(tables.layout.record, tables.layout.keys, tables.factors_of("video"))
        return model, page, config.page.numbers()

    def _warm_up(self) -> None:
        """One feed through the three stages for nobody, without the store: compiles (or loads) the kernels
        before the first request needs them, and binds this service's (`Bound`: every later call passes the
        argument types of this one). The candidate sources copied the IVF-Flat indexes' lists when they were made."""
        nobody = UserRead("", None, [], [], [])
        user = self._user_view(nobody)
        cands, _ = self._candidates(user, self._blocked(nobody, ()), Cursor.first(0), 1)
        relevance, _ = self._relevance(user, cands, None)
        self._page(cands, relevance, 1)

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
        return self.rank(self.read(user_id), limit, exclude, cursor, seed, now_ms, request_id)

    @property
    def reads_store(self) -> bool:
        """True when `read` talks to the store (blocking I/O: callers on an event loop run it in a thread)."""
        return self.live is not None or any(getattr(self.signals, name) is not None for name in SIGNALS)

    def read(self, user_id: str) -> UserRead:
        """What the store says about the user now: real-time state, follows, blocks, recently shown videos.
        Never raises: when the store fails, the user is served as trained (see `_live_state`, `_read`)."""
        if not self.reads_store:
            return UserRead(user_id, None, [], [], [])
        return UserRead(user_id, self._live_state(user_id), *(self._read(name, user_id) for name in SIGNALS))

    def rank(self, read: UserRead, limit: int = 20, exclude: tuple[str, ...] = (), cursor: Cursor | None = None,
             seed: int | None = None, now_ms: float | None = None, request_id: str | None = None) -> Feed:
        """One page for a user whose store reads are done (`read`): CPU only, no I/O."""
        cursor = cursor or Cursor.first(seed if seed is not None else random.getrandbits(31))
        clock = [time.perf_counter()]
        user = self._user_view(read)
        blocked = self._blocked(read, exclude)
        cands, counts = self._candidates(user, blocked, cursor, limit)
        clock.append(time.perf_counter())
        relevance, probs = self._relevance(user, cands, now_ms)
        clock.append(time.perf_counter())
        chosen = self._page(cands, relevance, limit)
        items = self._items(cands, chosen, relevance, probs)
        shown = self.hashes[cands.videos[chosen]]
        following = cursor.next(cursor.seed, shown, self.config.max_depth) if len(chosen) == limit else None
        clock.append(time.perf_counter())
        return Feed(request_id or uuid.uuid4().hex, read.user_id, items, self.model_version,
                    cold_start=not user.vectors, seed=cursor.seed,
                    next_cursor=following.encode() if following else None, ranking=self.ranking,
                    timings={STAGES[i]: clock[i + 1] - clock[i] for i in range(len(STAGES))},
                    sources={name: n for name, n in zip(SOURCES, counts.tolist(), strict=True) if n})

    def candidates(self, user_id: str, n: int = 50) -> dict[str, list[str]]:
        """Each source's ranked candidate video ids for a user, before fusion and filters (for inspection)."""
        user = self._user_view(self.read(user_id))
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
            return self._last_read.get((name, user_id))
        self._last_read.remember((name, user_id), values)
        return values

    def _user_view(self, read: UserRead) -> UserView:
        """Vectors, latest videos, follows, category history and segment of the user."""
        state, row = read.state, self.bundle.users.row(read.user_id)
        vectors = {name: rel.user_factors[row] for name, rel in self.bundle.relations.items()} if row >= 0 else {}
        vectors.update(state.vectors if state else {})
        stats, n_categories = self.tables.stats, len(self.catalog.categories)
        recent, categories = self._recent_and_categories(self._history, row, n_categories)
        if state is not None and len(state.recent):
            recent = np.concatenate([state.recent, recent[~isin(recent, state.recent)]])
            categories[:len(state.categories)] += state.categories[:n_categories]
        fresh_vector = state is not None and "video" in state.vectors
        segment = stats.segment_of(vectors.get("video")) if fresh_vector or row < 0 else (
            int(stats.user_segment[row]) if row < len(stats.user_segment) else -1)
        follows = self.catalog.creators.rows(read.follows) if read.follows else NO_ROWS
        return UserView(read.user_id, vectors, recent, follows[follows >= 0], categories, segment)

    def _blocked(self, read: UserRead, exclude: tuple[str, ...]) -> np.ndarray:
        """Video rows never to show this user now (see the module docstring)."""
        row, cat, everything = self.bundle.users.row(read.user_id), self.catalog, len(self.catalog.videos)
        parts = [self._never_shown(self._history, row, everything)]  # watched, bought, a bought product's videos
        creators = [c for c in map(cat.creators.row, (read.user_id, *read.blocks)) if c >= 0]
        if creators:  # the user's own videos and blocked creators'
            parts.append(self._all_by_creator.top(np.array(creators, dtype=np.int64), everything)[0])
        for ids in (read.recently_shown, exclude):
            rows = cat.videos.rows(list(ids)) if ids else NO_ROWS
            parts.append(rows[rows >= 0])
        if read.state is not None:
            parts.append(read.state.blocked)
        return np.concatenate(parts).astype(np.int64) if len(parts) > 1 else parts[0]

    def _candidates(self, user: UserView, blocked: np.ndarray, cursor: Cursor,
                    limit: int) -> tuple[Candidates, np.ndarray]:
        """Fused candidates without blocked rows or anything an earlier page showed, with the new-creator pick
        (drawn by Thompson sampling, seeded by the user, the request seed and the page), cut to those the ranking
        stage scores (`FeedConfig.rank_depth`; all of them at 0, in `retrieval` ranking or without a ranker);
        and how many of them each source contributed most to, before the cut."""
        extra = min(len(blocked) + len(cursor.shown) + limit, MAX_EXTRA)
        user_hash = zlib.crc32(user.user_id.encode("utf-8", "surrogatepass"))
        draw_seed = zlib.crc32(struct.pack("<III", user_hash, cursor.seed & 0xFFFFFFFF, cursor.page))
        depth = self.config.rank_depth if self.ranking == "ranker" else 0
        return self.sources.gather(user, blocked, extra, cursor.shown, draw_seed, depth)

    def _relevance(self, user: UserView, cands: Candidates, now_ms: float | None) -> tuple[np.ndarray, np.ndarray]:
        """(n,) relevance and (n, 3) probabilities (empty without a ranker)."""
        now = now_ms if now_ms is not None else self.tables.stats.end_ms
        scoring_user = self.tables.user(user.vectors, user.recent, user.follows, user.categories, user.segment, now)
        return self._relevance_kernel(self.tables.kernel_tables, self._numbers[0], scoring_user,
                                      _int64(cands.videos), np.ascontiguousarray(cands.rrf, dtype=np.float64))

    def _page(self, cands: Candidates, relevance: np.ndarray, limit: int) -> np.ndarray:
        """The page's (≤ limit,) int64 candidate indices: slots, caps and MMR (`feed.kernels.page`)."""
        _, tables, numbers = self._numbers
        return self._page_kernel(tables, numbers, _int64(cands.videos), _int64(cands.source),
                                 np.ascontiguousarray(relevance, dtype=np.float64), int(limit))

    def _items(self, cands: Candidates, at: np.ndarray, relevance: np.ndarray,
               probs: np.ndarray) -> list[FeedItem]:
        """Response items for the chosen candidates (one gather per column, then plain Python per item)."""
        cat, videos = self.catalog, cands.videos[at]
        keys = self.tables.layout.keys[videos]  # the catalog's creator and product rows; the page stage read them
        creator_ids, known, product, reason = self._creator_ids, self._product_infos, self._product, self._reason
        heads = probs[at].tolist() if len(probs) else [None] * len(at)
        items = []
        for video, creator, product_row, source, detail, score, head in zip(
                cat.videos.ids[videos].tolist(), keys[:, K_CREATOR].tolist(), keys[:, K_PRODUCT].tolist(),
                cands.source[at].tolist(), cands.detail[at].tolist(), relevance[at].tolist(), heads, strict=True):
            creator_id, name = creator_ids[creator] if creator >= 0 else None, SOURCES[source]
            info, merchant_id = known.get(product_row) or product(product_row)  # the cache read inline first
            sponsored = creator_id is not None and merchant_id == creator_id
            earns = info is not None and (info.commission_rate or 0.0) > 0 and not sponsored
            predicted = None if head is None else {"watch": head[0], "share": head[1], "purchase": head[2]}
            why = REASONS_BY_SOURCE.get(name) or reason(name, detail, creator_id)
            items.append(FeedItem(str(video), creator_id, info, score, why, name, sponsored, earns, predicted))
        return items

    @cached_property
    def _creator_ids(self) -> list[str]:
        """Creator ids by row, as Python strings."""
        return [str(c) for c in self.catalog.creators.ids.tolist()]

    def _product(self, row: int) -> tuple[ProductInfo | None, str | None]:
        """A product row's info and merchant id (None for -1), remembered per row: the catalog does not change."""
        if row < 0:
            return None, None
        known = self._product_infos.get(row)
        if known is None:
            cat = self.catalog
            price, rate = float(cat.product_price[row]), float(cat.product_commission[row])
            merchant = int(cat.product_merchant[row])
            known = (ProductInfo(str(cat.products.ids[row]), None if math.isnan(price) else price,
                                 None if math.isnan(rate) else rate),
                     str(cat.merchants.ids[merchant]) if merchant >= 0 else None)
            self._product_infos[row] = known
        return known

    def _reason(self, source: str, detail: int, creator_id: str | None) -> str:
        """Why a candidate is on the page, in the user's words."""
        if source in REASONS_BY_SOURCE:
            return REASONS_BY_SOURCE[source]
        if source == "following":
            return f"you follow {creator_id}"
        if source == "trending" and detail >= 0:
            return f"trending in {self.catalog.categories.ids[detail]}"
        if source == "session" and detail >= 0:
            return "like the video you just watched"
        return REASONS[source]


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


REASONS_BY_SOURCE = {s: r for s, r in REASONS.items() if s not in ("following", "trending", "session")}


def _int64(values: np.ndarray) -> np.ndarray:
    """values as a C-contiguous int64 array (what the kernels are compiled for; no copy when they already are)."""
    return np.ascontiguousarray(values, dtype=np.int64)


def _csr(matrix: object) -> kernel_user.Rows:
    """A sparse matrix's CSR arrays, as `feed.kernels.user` reads them."""
    matrix = matrix.tocsr()
    return kernel_user.Rows(matrix.indptr, matrix.indices, matrix.data)
