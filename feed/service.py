"""Build a user's feed from a loaded bundle: candidates from each relation's index, fused, filtered.

Sources: the user's video vector against the video index; the creator vector against the creator index, then
those creators' most popular videos; the product vector against the product index, then each product's most
popular videos; and popularity, which fills any gap and is the whole feed for a user the model has not seen.
Scores of different models are not comparable, so sources are fused by weighted reciprocal rank.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from feed.bundle import Bundle
from feed.dataset import Catalog
from feed.errors import FeedError
from feed.live import LiveUser, LiveUsers

REASONS = MappingProxyType({
    "video": "similar to videos you watched",
    "creator": "from a creator you like",
    "product": "a product you may like",
    "popular": "popular now",
    "following": "new from a creator you follow",
    "fresh": "new video",
})


@dataclass(frozen=True)
class FeedConfig:
    """How candidates are gathered and fused."""

    candidates_per_source: int = 200
    source_weights: Mapping[str, float] = field(default_factory=lambda: {
        "video": 1.0, "creator": 0.8, "product": 0.8, "popular": 0.15, "following": 1.2})
    rrf_k: float = 60.0
    videos_per_creator: int = 3
    videos_per_product: int = 2
    hide_out_of_stock: bool = True
    fresh_slot: bool = True  # one position per page for the newest video not yet in it
    fresh_position: int = 3  # 0-based


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


@dataclass(frozen=True)
class Feed:
    """A ranked page for one user."""

    request_id: str
    user_id: str
    items: list[FeedItem]
    model_version: str
    cold_start: bool


class Grouped:
    """Videos grouped by an owner row (creator or product), most popular first within each group."""

    def __init__(self, owner: np.ndarray, n_owners: int, popularity: np.ndarray) -> None:
        valid = np.flatnonzero(owner >= 0)
        order = valid[np.lexsort((-popularity[valid], owner[valid]))]
        self.videos = order  # (n_grouped_videos,) video rows sorted by owner, then popularity
        self.indptr = np.searchsorted(owner[order], np.arange(n_owners + 1))  # (n_owners + 1,)

    def top(self, owners: np.ndarray, per_owner: int) -> np.ndarray:
        """Up to `per_owner` videos of each owner, owners in the given order (-1 owners skipped)."""
        owners = owners[owners >= 0]
        starts = self.indptr[owners]  # (n_owners,)
        counts = np.minimum(self.indptr[owners + 1] - starts, per_owner)
        ends = np.cumsum(counts)
        offsets = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)
        return self.videos[np.repeat(starts, counts) + offsets]


class FeedService:
    """Ranks feeds from one immutable bundle (and, when given, live state); safe to share between requests."""

    def __init__(
        self,
        bundle: Bundle,
        config: FeedConfig | None = None,
        model_version: str | None = None,
        catalog: Catalog | None = None,
        live: LiveUsers | None = None,
        follows: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.bundle, self.live, self.follows = bundle, live, follows
        self.degraded = 0  # requests served without real-time state because the store failed
        self.config = config or FeedConfig()
        self.model_version = model_version or bundle.bundle_id
        self.catalog = cat = catalog or bundle.catalog
        n_videos, n_trained = len(cat.videos), len(bundle.catalog.videos)
        self._popularity = np.zeros(n_videos, dtype=np.float32)  # (n_videos,) videos added later count 0
        self._popularity[:n_trained] = bundle.popularity
        # within a creator or product, videos added after training come first: they have no vector of their own
        priority = self._popularity + (np.arange(n_videos) >= n_trained) * (self._popularity.max(initial=0) + 1)
        published = np.nan_to_num(cat.video_published_ms, nan=-np.inf)  # (n_videos,)
        self._by_creator = Grouped(cat.video_creator, len(cat.creators), priority)
        self._by_product = Grouped(cat.video_product, len(cat.products), priority)
        self._newest_by_creator = Grouped(cat.video_creator, len(cat.creators), published)
        self._popular = np.argsort(-self._popularity, kind="stable")
        self._newest = np.argsort(-published, kind="stable")
        hidden = self._out_of_stock() if self.config.hide_out_of_stock else np.zeros(n_videos, bool)
        self._hidden = np.flatnonzero(hidden)  # (n_hidden,) video rows never shown

    def with_catalog(self, catalog: Catalog) -> FeedService:
        """The same model and settings over a newer catalog."""
        live = self.live.with_catalog(catalog) if self.live else None
        return FeedService(self.bundle, self.config, self.model_version, catalog, live, self.follows)

    def _out_of_stock(self) -> np.ndarray:
        """(n_videos,) True where the video's product is out of stock."""
        cat = self.catalog
        if len(cat.products) == 0:
            return np.zeros(len(cat.videos), dtype=bool)
        return (cat.video_product >= 0) & ~cat.product_in_stock[np.maximum(cat.video_product, 0)]

    def _live_state(self, user_id: str) -> LiveUser | None:
        """The user's real-time state; None (serve as trained) when there is none or the store fails."""
        if self.live is None:
            return None
        try:
            return self.live.get(user_id)
        except FeedError:
            self.degraded += 1  # counted on /metrics; the feed itself must not fail
            return None

    def feed(self, user_id: str, limit: int = 20, exclude: tuple[str, ...] = ()) -> Feed:
        """The user's ranked feed; a user with no vector at all gets the popularity feed."""
        state = self._live_state(user_id)
        vectors = self._vectors(user_id, state)
        blocked = self._blocked(user_id, state, exclude)
        ranked = self._candidates(user_id, vectors, limit + len(blocked))
        videos, scores, sources = fuse(ranked, self.config, blocked, limit)
        videos, scores, sources = self._fresh_slot(videos, scores, sources, blocked, limit)
        items = [self._item(v, s, src) for v, s, src in zip(videos, scores, sources, strict=True)]
        return Feed(uuid.uuid4().hex, user_id, items, self.model_version, cold_start=not vectors)

    def candidates(self, user_id: str, n: int = 50) -> dict[str, list[str]]:
        """Each source's ranked candidate video ids for a user, before fusion and filters (for inspection)."""
        state = self._live_state(user_id)
        ranked = self._candidates(user_id, self._vectors(user_id, state), n)
        return {name: [str(v) for v in self.catalog.videos.ids[rows[:n]]] for name, rows in ranked.items()}

    def _vectors(self, user_id: str, state: LiveUser | None) -> dict[str, np.ndarray]:
        """The user's vector per relation: refreshed from new events when there are some, else as trained."""
        row = self.bundle.users.row(user_id)
        vectors = {name: rel.user_factors[row] for name, rel in self.bundle.relations.items()} if row >= 0 else {}
        return {**vectors, **(state.vectors if state else {})}

    def _blocked(self, user_id: str, state: LiveUser | None, exclude: tuple[str, ...]) -> np.ndarray:
        """Video rows never to show this user: seen to the end, bought, their own, excluded, out of stock."""
        row = self.bundle.users.row(user_id)
        seen_ptr = self.bundle.seen.indptr
        seen = self.bundle.seen.indices[seen_ptr[row]:seen_ptr[row + 1]] if row >= 0 else seen_ptr[:0]
        own = self._by_creator.top(np.array([self.catalog.creators.row(user_id)]), len(self._popular))
        bought_ptr = self.bundle.bought.indptr
        bought = self.bundle.bought.indices[bought_ptr[row]:bought_ptr[row + 1]] if row >= 0 else bought_ptr[:0]
        own = np.concatenate([own, self._by_product.top(bought.astype(np.int64), len(self._popular))])  # + bought
        excluded = self.catalog.videos.rows(list(exclude)) if exclude else np.zeros(0, dtype=np.int64)
        live = state.blocked if state else seen_ptr[:0]
        return np.concatenate([seen, live, own, excluded[excluded >= 0], self._hidden]).astype(np.int64)

    def _candidates(self, user_id: str, vectors: dict[str, np.ndarray], extra: int) -> dict[str, np.ndarray]:
        """Ranked video rows from each source."""
        n = self.config.candidates_per_source + extra
        ranked = {"popular": self._popular[:n]}
        if self.follows is not None:
            ranked["following"] = self._following(user_id)
        for name, vector in vectors.items():
            items, _ = self.bundle.relations[name].index.search(vector, n)
            ranked[name] = self._videos_of(name, items[0][items[0] >= 0])
        return ranked

    def _following(self, user_id: str) -> np.ndarray:
        """The newest videos of the creators the user follows (none when the store fails)."""
        try:
            followed = self.follows(user_id)
        except FeedError:  # the store is down: already counted by _live_state for this request
            followed = []
        creators = self.catalog.creators.rows(followed)
        return self._newest_by_creator.top(creators, self.config.videos_per_creator)

    def _videos_of(self, relation: str, items: np.ndarray) -> np.ndarray:
        """Map a relation's ranked items to ranked video rows."""
        if relation == "creator":
            return self._by_creator.top(items, self.config.videos_per_creator)
        if relation == "product":
            return self._by_product.top(items, self.config.videos_per_product)
        return items

    def _fresh_slot(self, videos: np.ndarray, scores: np.ndarray, sources: list[str], blocked: np.ndarray,
                    limit: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Give one position to the newest video the page lacks (exploration for new content)."""
        position = self.config.fresh_position
        if not self.config.fresh_slot or len(videos) <= position:
            return videos, scores, sources
        candidates = self._newest[:len(blocked) + len(videos) + 1]
        fresh = candidates[~np.isin(candidates, blocked) & ~np.isin(candidates, videos)][:1]
        if len(fresh) == 0:
            return videos, scores, sources
        videos = np.insert(videos, position, fresh[0])[:limit]
        scores = np.insert(scores, position, scores[position])[:limit]  # ties with the item it displaces
        return videos, scores, (sources[:position] + ["fresh"] + sources[position:])[:limit]

    def _item(self, video: int, score: float, source: str) -> FeedItem:
        """A response item for one video row."""
        cat = self.catalog
        creator = int(cat.video_creator[video])
        return FeedItem(
            video_id=str(cat.videos.ids[video]),
            creator_id=str(cat.creators.ids[creator]) if creator >= 0 else None,
            product=self._product(int(cat.video_product[video])),
            score=float(score), reason=REASONS[source], source=source,
        )

    def _product(self, row: int) -> ProductInfo | None:
        """Product info for a product row, None for -1."""
        if row < 0:
            return None
        cat = self.catalog
        price, rate = float(cat.product_price[row]), float(cat.product_commission[row])
        return ProductInfo(str(cat.products.ids[row]), None if np.isnan(price) else price,
                           None if np.isnan(rate) else rate)


def fuse(
    ranked: dict[str, np.ndarray], config: FeedConfig, blocked: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Weighted reciprocal-rank fusion of ranked video lists; returns the top `limit` videos,
    their fused scores and the source that contributed most to each. No video appears twice."""
    names = list(ranked)
    videos = np.concatenate([ranked[n] for n in names]).astype(np.int64)
    source = np.concatenate([np.full(len(ranked[n]), i) for i, n in enumerate(names)]).astype(np.int64)
    contrib = np.concatenate([config.source_weights.get(n, 0.0) / (config.rrf_k + 1 + np.arange(len(ranked[n])))
                              for n in names])
    keep = ~np.isin(videos, blocked)
    videos, source, contrib = videos[keep], source[keep], contrib[keep]
    unique, inverse = np.unique(videos, return_inverse=True)
    cells = np.bincount(inverse * len(names) + source, weights=contrib, minlength=len(unique) * len(names))
    per_source = cells.reshape(len(unique), len(names))  # (n_unique_videos, n_sources)
    total = per_source.sum(axis=1)
    order = np.lexsort((unique, -total))[:limit]
    best = per_source[order].argmax(axis=1)
    return unique[order], total[order], [names[s] for s in best]
