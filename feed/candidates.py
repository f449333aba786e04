"""Candidate sources: each proposes ranked video rows for a user, every candidate records where it came from.

Sources (quotas per source in `CandidateConfig.quotas`; a source with quota 0 is off):

- `video`: the user's video vector against the video index;
- `creator`: the creator vector against the creator index, then those creators' best videos;
- `product`: the product vector against the product index, then for each product the one video whose creator
  this user trusts most: user×creator affinity plus the video's conversion among users like this one;
- `following`: the newest videos of the creators the user follows;
- `trending`: time-decayed views, shares and purchases, overall and in the user's favourite categories;
- `fresh`: the newest videos (exploration for new content);
- `session`: neighbours of the videos the user just watched or bought;
- `popular`: most viewers, the whole feed for a user nobody knows.

Scores of different sources are not comparable, so they are fused by weighted reciprocal rank; the fused score is
the retrieval-only ranking and one input of the ranker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from feed.bundle import Bundle
from feed.dataset import Catalog
from feed.features import FeatureTables

SOURCES: tuple[str, ...] = ("video", "creator", "product", "following", "trending", "fresh", "session", "popular",
                           "new_creator")  # new_creator: the exploration slot, not a fused list
FUSED_SOURCES = SOURCES[:-1]


@dataclass(frozen=True)
class CandidateConfig:
    """Quotas, fusion weights and per-source settings."""

    quotas: Mapping[str, int] = field(default_factory=lambda: {
        "video": 200, "creator": 60, "product": 60, "following": 30, "trending": 40, "fresh": 20, "session": 40,
        "popular": 60})
    weights: Mapping[str, float] = field(default_factory=lambda: {
        "video": 1.0, "creator": 0.8, "product": 0.8, "following": 1.2, "trending": 0.3, "fresh": 0.1,
        "session": 0.6, "popular": 0.15})
    rrf_k: float = 60.0
    videos_per_creator: int = 3
    videos_per_product: int = 8  # videos compared when picking a product's most trusted one
    trust_conversion_weight: float = 1.0  # β in affinity(user, creator) + β·log conversion(video | segment)
    trending_categories: int = 2  # the user's favourite categories that get their own trending list
    session_seeds: int = 3  # how many of the latest videos seed the session source


@dataclass
class UserView:
    """What the candidate stage knows about one user at request time."""

    user_id: str
    vectors: dict[str, np.ndarray]  # relation -> (dim,)
    recent: np.ndarray  # (k,) video rows, newest first
    follows: np.ndarray  # (f,) creator rows
    categories: np.ndarray  # (n_categories,) engaged events per category
    segment: int


@dataclass
class Candidates:
    """Distinct candidate video rows with their fused retrieval score and best source."""

    videos: np.ndarray  # (n,) int64
    rrf: np.ndarray  # (n,) float64 fused reciprocal-rank score
    source: np.ndarray  # (n,) int64 index into SOURCES of the source that contributed most
    detail: np.ndarray  # (n,) int64 what the source keyed on: category row (trending), seed video (session), -1


class Grouped:
    """Videos grouped by an owner row (creator, product, category), highest priority first within each group."""

    def __init__(self, owner: np.ndarray, n_owners: int, priority: np.ndarray) -> None:
        valid = np.flatnonzero(owner >= 0)
        order = valid[np.lexsort((-priority[valid], owner[valid]))]
        self.videos = order  # (n_grouped_videos,) video rows sorted by owner, then priority
        self.indptr = np.searchsorted(owner[order], np.arange(n_owners + 1))  # (n_owners + 1,)

    def top(self, owners: np.ndarray, per_owner: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to `per_owner` videos of each owner, owners in the given order, and each video's position in
        `owners`; owners out of range (-1, or added after this grouping) are skipped."""
        if len(owners) == 1:  # one creator (the new-creator slot, a user's own videos): two slices, no passes
            return self._top_one(int(owners[0]), per_owner)
        position = np.flatnonzero((owners >= 0) & (owners < len(self.indptr) - 1))
        owners = owners[position]
        starts = self.indptr[owners]  # (n_owners,)
        counts = np.minimum(self.indptr[owners + 1] - starts, per_owner)
        ends = np.cumsum(counts)
        offsets = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)
        return self.videos[np.repeat(starts, counts) + offsets], np.repeat(position, counts)


    def _top_one(self, owner: int, per_owner: int) -> tuple[np.ndarray, np.ndarray]:
        """`top` for a single owner."""
        if not 0 <= owner < len(self.indptr) - 1:
            return self.videos[:0].copy(), np.zeros(0, dtype=np.int64)
        lo = int(self.indptr[owner])
        hi = min(int(self.indptr[owner + 1]), lo + per_owner)
        return self.videos[lo:hi].copy(), np.zeros(hi - lo, dtype=np.int64)


class CandidateSources:
    """Every source over one bundle and catalog; immutable and shared between requests."""

    def __init__(self, bundle: Bundle, catalog: Catalog, tables: FeatureTables, config: CandidateConfig) -> None:
        self.bundle, self.catalog, self.tables, self.config = bundle, catalog, tables, config
        n_videos = len(catalog.videos)
        popularity = np.zeros(n_videos, dtype=np.float32)  # videos added after training count 0
        popularity[:len(bundle.popularity)] = bundle.popularity
        # within a creator or product, videos added after training come first: they have no vector of their own
        fresh_first = popularity + (np.arange(n_videos) >= len(bundle.popularity)) * (popularity.max(initial=0) + 1)
        self.published = published = np.nan_to_num(catalog.video_published_ms, nan=-np.inf)  # (n_videos,)
        self.by_creator = Grouped(catalog.video_creator, len(catalog.creators), fresh_first)
        self.by_product = Grouped(catalog.video_product, len(catalog.products), fresh_first)
        self.newest_by_creator = Grouped(catalog.video_creator, len(catalog.creators), published)
        self.trending_by_category = Grouped(tables.category, len(catalog.categories), tables.stats.trend)
        self.popular = np.argsort(-popularity, kind="stable")
        self.trending = np.argsort(-tables.stats.trend, kind="stable")
        self.newest = np.argsort(-published, kind="stable")

    def gather(self, user: UserView, blocked: np.ndarray, extra: int, hidden: np.ndarray | None = None) -> Candidates:
        """Each source's ranked videos for the user, fused; blocked rows and hidden ones (a mask) never appear."""
        lists = self.lists(user, extra)
        return fuse(lists, self.config, blocked, hidden)

    def lists(self, user: UserView, extra: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Source -> (ranked video rows, detail per row), before filters; `extra` widens global lists."""
        quota = self.config.quotas
        lists = {name: self._source(name, user, quota.get(name, 0), extra) for name in FUSED_SOURCES
                 if quota.get(name, 0) > 0}
        return {name: rows for name, rows in lists.items() if len(rows[0])}

    def _source(self, name: str, user: UserView, n: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
        """One source's ranked rows and details."""
        if name in ("video", "creator", "product"):
            return self._retrieval(name, user, n)
        if name == "following":
            return _no_detail(self.newest_by_creator.top(user.follows, self.config.videos_per_creator)[0][:n])
        if name == "trending":
            return self._trending(user, n + extra)
        if name == "session":
            return self._session(user, n)
        order = {"fresh": self.newest, "popular": self.popular}[name]
        return _no_detail(order[:n + extra])

    def _retrieval(self, relation: str, user: UserView, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest items of a relation to the user's vector, mapped to videos."""
        vector = user.vectors.get(relation)
        if vector is None or relation not in self.bundle.relations:
            return _no_detail(np.zeros(0, dtype=np.int64))
        items, _ = self.bundle.relations[relation].index.search(vector, n)
        items = items[0][items[0] >= 0].astype(np.int64)
        if relation == "creator":
            return _no_detail(self.by_creator.top(items, self.config.videos_per_creator)[0])
        if relation == "product":
            return _no_detail(self._trusted_videos(items, user))
        return _no_detail(items)

    def _trusted_videos(self, products: np.ndarray, user: UserView) -> np.ndarray:
        """For each product (in order) the video whose creator this user trusts most."""
        videos, group = self.by_product.top(products, self.config.videos_per_product)
        if len(videos) == 0:
            return videos
        score = self.config.trust_conversion_weight * np.log(
            np.maximum(self.tables.segment_prior(np.full(len(videos), user.segment), videos), 1e-6))
        if "creator" in user.vectors:
            score = score + self.tables.affinity("creator", user.vectors["creator"], videos)
        order = np.lexsort((-score, group))  # by product position, best video first
        first = np.r_[True, group[order][1:] != group[order][:-1]]
        return videos[order[first]]

    def _trending(self, user: UserView, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Trending overall, then trending in the user's favourite categories (detail: the category row)."""
        overall = self.trending[:n]
        favourite = np.argsort(-user.categories, kind="stable")[:self.config.trending_categories]
        favourite = favourite[user.categories[favourite] > 0] if len(favourite) else favourite
        per, _ = self.trending_by_category.top(favourite, n)
        details = self.tables.category[per]
        return np.concatenate([per, overall]), np.concatenate([details, np.full(len(overall), -1)])

    def _session(self, user: UserView, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours (by cosine among the index's best matches) of the latest videos (detail: the seed video)."""
        model = self.bundle.relations.get("video")
        seeds = user.recent[user.recent < self.tables.n_trained][:self.config.session_seeds]
        if model is None or len(seeds) == 0:
            return _no_detail(np.zeros(0, dtype=np.int64))
        items, _ = model.index.search(model.item_factors[seeds], n)  # (n_seeds, n)
        unit = self.tables.unit_video
        cosine = np.einsum("skd,sd->sk", unit[np.maximum(items, 0)], unit[seeds])  # (n_seeds, 2n)
        cosine[items < 0] = -np.inf
        order = np.argsort(-cosine, axis=1, kind="stable")[:, :n]
        rows = np.take_along_axis(items, order, axis=1).T.ravel()  # interleaved: best of each seed first
        detail = np.tile(seeds, order.shape[1])
        keep = (rows >= 0) & ~isin(rows, seeds)  # a seed is its own nearest neighbour
        return rows[keep].astype(np.int64), detail[keep]


def isin(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """(len(values),) True where a value is in pool: `np.isin` for the request path's small arrays.

    numpy 2.x's `np.isin` deduplicates both sides through a hash table, ~5× slower at these sizes (hundreds of
    ids) than one sort and a binary search; a handful of ids are compared directly."""
    if len(values) == 0 or len(pool) == 0:
        return np.zeros(len(values), dtype=bool)
    if len(pool) <= 8:
        return (values[:, None] == pool[None, :]).any(axis=1)
    pool = np.sort(pool)
    at = np.minimum(np.searchsorted(pool, values), len(pool) - 1)
    return pool[at] == values


def _no_detail(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with detail -1."""
    return rows.astype(np.int64), np.full(len(rows), -1, dtype=np.int64)


def fuse(lists: dict[str, tuple[np.ndarray, np.ndarray]], config: CandidateConfig, blocked: np.ndarray,
         hidden: np.ndarray | None = None) -> Candidates:
    """Weighted reciprocal-rank fusion: each video once, with its fused score, best source and that detail."""
    names = list(lists)
    if not names:
        empty = np.zeros(0, dtype=np.int64)
        return Candidates(empty, np.zeros(0), empty, empty)
    lengths = np.array([len(lists[n][0]) for n in names])
    videos = np.concatenate([lists[n][0] for n in names])
    detail = np.concatenate([lists[n][1] for n in names])
    source = np.repeat(np.array([SOURCES.index(n) for n in names], dtype=np.int64), lengths)
    position = np.arange(len(videos)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # rank within its list
    weight = np.repeat(np.array([config.weights.get(n, 0.0) for n in names], dtype=np.float64), lengths)
    contrib = weight / (config.rrf_k + 1 + position)
    keep = ~isin(videos, blocked)
    if hidden is not None:
        keep &= ~hidden[videos]
    videos, source, contrib, detail = videos[keep], source[keep], contrib[keep], detail[keep]
    if len(videos) == 0:
        return Candidates(videos, np.zeros(0), source, detail)
    order = np.lexsort((-contrib, videos))  # by video, then its largest contribution first (ties: list order)
    ordered = videos[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # (n,) each video's first entry in `order`
    inverse = np.empty(len(videos), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    total = np.bincount(inverse, weights=contrib, minlength=int(first.sum()))  # summed in list order
    best = order[first]
    return Candidates(ordered[first], total, source[best], detail[best])
