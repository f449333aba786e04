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
from feed.kernels import ivf
from feed.kernels import sources as kernel
from feed.kernels.base import K_CREATOR, R_BUY, R_PUBLISHED, R_SEGMENTS, Bound

SOURCES: tuple[str, ...] = ("video", "creator", "product", "following", "trending", "fresh", "session", "popular",
                           "new_creator")  # new_creator: the exploration slot, not a fused list
FUSED_SOURCES = SOURCES[:-1]
NO_ROWS = np.zeros(0, dtype=np.int64)
NO_HASHES = np.zeros(0, dtype=np.uint32)
SEARCHED = ("video", "creator", "product")  # the relations whose index a request searches, in that order
NO_VECTOR = np.zeros(0, dtype=np.float32)
NO_LISTS = ivf.Lists(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), NO_ROWS, np.zeros(1, np.int64))


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

    def numbers(self, explore: tuple[float, float] = (1.0, 50.0), new_creator_slot: bool = True) -> kernel.Config:
        """The settings as the candidate kernel reads them (with the page's new-creator draw)."""
        return kernel.Config(
            np.array([int(self.quotas.get(n, 0)) for n in SOURCES], dtype=np.int64),
            np.array([float(self.weights.get(n, 0.0)) for n in SOURCES], dtype=np.float64), float(self.rrf_k),
            int(self.videos_per_creator), int(self.videos_per_product), float(self.trust_conversion_weight),
            int(self.trending_categories), bool(new_creator_slot), float(explore[0]), float(explore[1]))


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
        self.groups = kernel.Groups(  # videos sorted by owner, then priority; (n_owners + 1,) group starts
            order.astype(np.int64), np.searchsorted(owner[order], np.arange(n_owners + 1)).astype(np.int64))

    def top(self, owners: np.ndarray, per_owner: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to `per_owner` videos of each owner, owners in the given order, and each video's position in
        `owners`; owners out of range (-1, or added after this grouping) are skipped."""
        return kernel.group_top(self.groups, np.asarray(owners, dtype=np.int64), int(per_owner))


class CandidateSources:
    """Every source over one bundle and catalog; immutable and shared between requests."""

    def __init__(self, bundle: Bundle, catalog: Catalog, tables: FeatureTables, config: CandidateConfig,
                 hidden: np.ndarray | None = None, hashes: np.ndarray | None = None,
                 new_creators: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 explore: tuple[float, float] = (1.0, 50.0)) -> None:
        """`new_creators`: the (creator rows, views, purchases) the new-creator draw picks from, Beta(`explore`)
        priors; none: no draw."""
        self.bundle, self.catalog, self.tables, self.config = bundle, catalog, tables, config
        self.explore = explore
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
        self.kernel_tables = self._kernel_tables(hidden, hashes, new_creators)
        self._numbers: tuple[CandidateConfig, kernel.Config, list[int]] | None = None
        self._gather = Bound(kernel.ranked_candidates)  # `gather` builds every argument the same way
        # each searched relation's IVF-Flat lists and nprobe when `feed.kernels.ivf` scans its index, else None
        self._lists = {name: self._lists_of(name) for name in SEARCHED}
        self._nearest_three = Bound(ivf.nearest_three)  # `_searches` builds every argument the same way

    def _lists_of(self, relation: str) -> tuple[ivf.Lists, int] | None:
        """The relation's lists copied for `feed.kernels.ivf` now (not on a request), when it scans the index."""
        model = self.bundle.relations.get(relation)
        return model.index.prepare() if model is not None and model.index.compiled else None

    def _kernel_tables(self, hidden: np.ndarray | None, hashes: np.ndarray | None,
                       new: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> kernel.Tables:
        """The arrays the candidate kernel reads, in the dtypes it is compiled for."""
        n, tables, layout = len(self.catalog.videos), self.tables, self.tables.layout
        new = new or (NO_ROWS, np.zeros(0), np.zeros(0))
        grouped = self.by_product.groups.videos  # the product source reads its videos' facts in this order
        prior = layout.record[grouped][:, [R_BUY, *range(R_SEGMENTS, R_SEGMENTS + layout.n_segments)]]
        return kernel.Tables(
            self.by_creator.groups, self.by_product.groups, self.newest_by_creator.groups,
            self.trending_by_category.groups, self.popular.astype(np.int64), self.trending.astype(np.int64),
            self.newest.astype(np.int64), np.zeros(n, bool) if hidden is None else hidden,
            np.zeros(n, np.uint32) if hashes is None else hashes, layout.record, layout.keys,
            np.ascontiguousarray(layout.keys[grouped, K_CREATOR]), np.ascontiguousarray(prior),
            tables.factors_of("creator"), tables.factors_of("video"), new[0].astype(np.int64),
            new[1].astype(np.float64), new[2].astype(np.float64),
            np.ascontiguousarray(layout.record[:, R_PUBLISHED]))

    @property
    def numbers(self) -> kernel.Config:
        """`config` as the candidate kernel reads it (made again only when `config` is replaced)."""
        if self._numbers is None or self._numbers[0] is not self.config:
            numbers = self.config.numbers(self.explore, len(self.kernel_tables.new_creators) > 0)
            self._numbers = (self.config, numbers, numbers.quotas.tolist())
        return self._numbers[1]

    def request(self, user: UserView, extra: int, blocked: np.ndarray = NO_ROWS, shown: np.ndarray = NO_HASHES,
                draw_seed: int = 0, quotas: list[int] | None = None) -> kernel.Request:
        """One user's request: the index searches for every source that needs one, and the filters."""
        quotas = quotas or (self.numbers, self._numbers[2])[1]
        video, creator, product, session = quotas[0], quotas[1], quotas[2], quotas[SOURCES.index("session")]
        seeds = self._seeds(user) if session > 0 else NO_ROWS
        video_rows, creator_rows, product_rows = self._searches(user, (video, creator, product))
        return kernel.Request(
            video_rows, creator_rows, product_rows, self.tables.user_vector("creator", user.vectors),
            int(user.segment), user.follows.astype(np.int64, copy=False),
            user.categories.astype(np.float32, copy=False), seeds, self._seed_matches(seeds, session), int(extra),
            np.sort(blocked.astype(np.int64, copy=False)),
            np.sort(shown.astype(np.uint32, copy=False)) if len(shown) else NO_HASHES, int(draw_seed))

    def _searches(self, user: UserView, quotas: tuple[int, int, int]) -> list[np.ndarray]:
        """The nearest item rows to the user's vector in each SEARCHED relation, as many as its quota (empty
        without a vector or the quota): the indexes `feed.kernels.ivf` scans in one call, the others by FAISS."""
        queries, rows = [], []
        for relation, n in zip(SEARCHED, quotas, strict=True):
            lists, vector = self._lists[relation], user.vectors.get(relation)
            if lists is None:
                queries.append(ivf.Query(NO_LISTS, 0, NO_VECTOR, 0))
                rows.append(self._search(relation, user, n))
            elif n > 0 and vector is not None:
                queries.append(ivf.Query(lists[0], lists[1], np.ascontiguousarray(vector, dtype=np.float32), int(n)))
                rows.append(None)
            else:
                queries.append(ivf.Query(lists[0], lists[1], NO_VECTOR, 0))
                rows.append(None)
        scanned = self._nearest_three(*queries)
        return [found if found is not None else scanned[i] for i, found in enumerate(rows)]

    def _search(self, relation: str, user: UserView, n: int) -> np.ndarray:
        """The relation's n nearest item rows to the user's vector (empty without a vector or the quota)."""
        vector = user.vectors.get(relation)
        if n <= 0 or vector is None or relation not in self.bundle.relations:
            return NO_ROWS
        return self.bundle.relations[relation].index.nearest(vector, int(n))

    def _seeds(self, user: UserView) -> np.ndarray:
        """The latest videos that have a (non-zero) vector: the session source's seeds."""
        inv_norm, seeds = self.tables.inv_norm, []
        if self.config.session_seeds <= 0:
            return NO_ROWS
        for row in user.recent.tolist():  # newest first; a handful of rows
            if row < len(inv_norm) and inv_norm[row] > 0:
                seeds.append(row)
                if len(seeds) == self.config.session_seeds:
                    break
        return np.array(seeds, dtype=np.int64)

    def _seed_matches(self, seeds: np.ndarray, n: int) -> np.ndarray:
        """(n_seeds, n) each seed's nearest videos by the video index: the bundle's precomputed neighbours when
        they are deep enough, else a search."""
        video = self.bundle.relations.get("video")
        if len(seeds) == 0 or video is None:
            return np.zeros((0, max(n, 0)), dtype=np.int64)
        if video.neighbours is not None and video.neighbours.shape[1] >= n:
            return video.neighbours[seeds, :n].astype(np.int64)
        rows, _ = video.index.search(video.item_factors[seeds], n)
        return rows.astype(np.int64)

    def gather(self, user: UserView, blocked: np.ndarray, extra: int, shown: np.ndarray = NO_HASHES,
               draw_seed: int = 0, depth: int = 0) -> tuple[Candidates, np.ndarray]:
        """Each source's ranked videos for the user, fused, with the new-creator pick (blocked rows, hidden ones
        and those whose id hash is in `shown` never appear), cut to those a ranker scores
        (`feed.kernels.scoring.ranked_subset`: the `depth` best by fused score and the slots' picks; all of them
        at depth ≤ 0); and how many of the gathered candidates each source contributed most to ((len(SOURCES),)
        int64, counted before the cut)."""
        request = self.request(user, extra, blocked, shown, draw_seed)
        *cands, counts = self._gather(self.kernel_tables, self.numbers, request, int(depth))
        return Candidates(*cands), counts

    def lists(self, user: UserView, extra: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Source -> (ranked video rows, detail per row), before filters; `extra` widens global lists."""
        rows, details, lengths = kernel.all_lists(self.kernel_tables, self.numbers, self.request(user, extra))
        ends = np.cumsum(lengths)
        return {name: (rows[end - n:end], details[end - n:end])
                for name, n, end in zip(FUSED_SOURCES, lengths.tolist(), ends.tolist(), strict=True) if n}

    def _source(self, name: str, user: UserView, n: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
        """One source's ranked rows and details, with quota n."""
        quotas = np.zeros_like(self.numbers.quotas)
        quotas[SOURCES.index(name)] = n
        numbers = self.numbers._replace(quotas=quotas)
        request = self.request(user, extra, quotas=quotas.tolist())
        return kernel.source_list(self.kernel_tables, numbers, request, SOURCES.index(name))


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


def fuse(lists: dict[str, tuple[np.ndarray, np.ndarray]], config: CandidateConfig, blocked: np.ndarray,
         hidden: np.ndarray | None = None) -> Candidates:
    """Weighted reciprocal-rank fusion of source lists (fused in SOURCES order): each video once, with its fused
    score, best source and that detail; blocked rows and rows where `hidden` is True are left out."""
    named = [(n, lists[n]) for n in FUSED_SOURCES if n in lists]
    rows = np.concatenate([r for _, (r, _) in named] + [NO_ROWS]).astype(np.int64)
    details = np.concatenate([d for _, (_, d) in named] + [NO_ROWS]).astype(np.int64)
    lengths = np.array([len(lists[n][0]) if n in lists else 0 for n in FUSED_SOURCES], dtype=np.int64)
    numbers = config.numbers()
    hidden = np.zeros(int(rows.max(initial=-1)) + 1, dtype=bool) if hidden is None else hidden
    return Candidates(*kernel.fuse(rows, details, lengths, numbers.weights, numbers.rrf_k, hidden, NO_HASHES,
                                   np.unique(np.asarray(blocked, dtype=np.int64)), NO_HASHES))
