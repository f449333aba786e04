"""Build a user's feed from a loaded bundle: candidates from each relation's index, fused, filtered.

Sources: the user's video vector against the video index; the creator vector against the creator index, then
those creators' most popular videos; the product vector against the product index, then each product's most
popular videos; and popularity, which fills any gap and is the whole feed for a user the model has not seen.
Scores of different models are not comparable, so sources are fused by weighted reciprocal rank.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from feed.bundle import Bundle

REASONS = MappingProxyType({
    "video": "similar to videos you watched",
    "creator": "from a creator you like",
    "product": "a product you may like",
    "popular": "popular now",
})


@dataclass(frozen=True)
class FeedConfig:
    """How candidates are gathered and fused."""

    candidates_per_source: int = 200
    source_weights: Mapping[str, float] = field(default_factory=lambda: {
        "video": 1.0, "creator": 0.8, "product": 0.8, "popular": 0.15})
    rrf_k: float = 60.0
    videos_per_creator: int = 3
    videos_per_product: int = 2
    hide_out_of_stock: bool = True


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
    """Ranks feeds from one immutable bundle; safe to share between concurrent requests."""

    def __init__(self, bundle: Bundle, config: FeedConfig | None = None, model_version: str | None = None) -> None:
        self.bundle = bundle
        self.config = config or FeedConfig()
        self.model_version = model_version or bundle.bundle_id
        cat = bundle.catalog
        self._by_creator = Grouped(cat.video_creator, len(cat.creators), bundle.popularity)
        self._by_product = Grouped(cat.video_product, len(cat.products), bundle.popularity)
        self._popular = np.argsort(-bundle.popularity, kind="stable")  # (n_videos,)
        hidden = self._out_of_stock() if self.config.hide_out_of_stock else np.zeros(len(cat.videos), bool)
        self._hidden = np.flatnonzero(hidden)  # (n_hidden,) video rows never shown

    def _out_of_stock(self) -> np.ndarray:
        """(n_videos,) True where the video's product is out of stock."""
        cat = self.bundle.catalog
        if len(cat.products) == 0:
            return np.zeros(len(cat.videos), dtype=bool)
        return (cat.video_product >= 0) & ~cat.product_in_stock[np.maximum(cat.video_product, 0)]

    def feed(self, user_id: str, limit: int = 20, exclude: tuple[str, ...] = ()) -> Feed:
        """The user's ranked feed; an unknown user gets the popularity feed."""
        row = self.bundle.users.row(user_id)
        blocked = self._blocked(user_id, row, exclude)
        ranked = self._candidates(row, limit + len(blocked))
        videos, scores, sources = fuse(ranked, self.config, blocked, limit)
        items = [self._item(v, s, src) for v, s, src in zip(videos, scores, sources, strict=True)]
        return Feed(uuid.uuid4().hex, user_id, items, self.model_version, cold_start=row < 0)

    def _blocked(self, user_id: str, row: int, exclude: tuple[str, ...]) -> np.ndarray:
        """Video rows never to show this user: seen to the end, bought, their own, excluded, out of stock."""
        seen_ptr = self.bundle.seen.indptr
        seen = self.bundle.seen.indices[seen_ptr[row]:seen_ptr[row + 1]] if row >= 0 else seen_ptr[:0]
        own = self._by_creator.top(np.array([self.bundle.catalog.creators.row(user_id)]), len(self._popular))
        excluded = self.bundle.catalog.videos.rows(list(exclude)) if exclude else np.zeros(0, dtype=np.int64)
        return np.concatenate([seen, own, excluded[excluded >= 0], self._hidden])

    def _candidates(self, row: int, extra: int) -> dict[str, np.ndarray]:
        """Ranked video rows from each source."""
        n = self.config.candidates_per_source + extra
        ranked = {"popular": self._popular[:n]}
        if row < 0:
            return ranked
        for name, rel in self.bundle.relations.items():
            items, _ = rel.index.search(rel.user_factors[row], n)
            ranked[name] = self._videos_of(name, items[0][items[0] >= 0])
        return ranked

    def _videos_of(self, relation: str, items: np.ndarray) -> np.ndarray:
        """Map a relation's ranked items to ranked video rows."""
        if relation == "creator":
            return self._by_creator.top(items, self.config.videos_per_creator)
        if relation == "product":
            return self._by_product.top(items, self.config.videos_per_product)
        return items

    def _item(self, video: int, score: float, source: str) -> FeedItem:
        """A response item for one video row."""
        cat = self.bundle.catalog
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
        cat = self.bundle.catalog
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
