"""Ranking features of (user, video) pairs, the same function at training time (logged impressions) and serving.

Every candidate gets the same features whichever source proposed it: the score each source ranks by (the user's
affinity to the video, its creator and its product; following; similarity to the user's latest videos; trend and
popularity) plus smoothed priors (watch-through, share and purchase rates of the video, the creator's conversion,
the video's conversion among users of the same segment), price, commission rate, freshness and the user's history
in the video's category. Features are plain float32 arrays of shape (n_pairs, len(FEATURES)).

Training computes them per pair from a `PairContext` (`FeatureTables.features`); serving computes the same
columns for one user's candidates in one compiled pass (`FeatureTables.user_features`, `feed.kernels`), and a
test holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from feed.kernels import scoring
from feed.dataset import Catalog
from feed.layout import video_layout
from feed.stats import DAY_MS, Stats, smoothed

FEATURES: tuple[str, ...] = (
    "aff_video", "aff_creator", "aff_product", "follows", "session_sim", "log_views", "log_trend",
    "watch_prior", "share_prior", "buy_prior", "creator_buy_prior", "segment_buy_prior", "log_price", "has_price",
    "commission_rate", "log_age_days", "category_share", "log_user_activity", "has_views",
)
UNKNOWN_AGE_DAYS = 365.0
# features that depend on the video alone: one (n_videos, len(STATIC)) table, gathered once per request
STATIC: tuple[str, ...] = ("log_views", "log_trend", "watch_prior", "share_prior", "buy_prior", "creator_buy_prior",
                           "log_price", "has_price", "commission_rate", "has_views")
_STATIC_COLUMNS = np.array([FEATURES.index(name) for name in STATIC], dtype=np.int64)
# the columns `kernels.user_features` computes per pair, in the order it expects them
_USER_COLUMNS = np.array([FEATURES.index(name) for name in (
    "aff_video", "aff_creator", "aff_product", "follows", "session_sim", "segment_buy_prior", "log_age_days",
    "category_share", "log_user_activity")], dtype=np.int64)
RELATIONS = ("video", "creator", "product")


@dataclass
class PairContext:
    """Per-pair facts about the users: each array has one entry per (user, video) pair."""

    affinity: dict[str, np.ndarray]  # relation -> (n,) user·item inner product, 0 when either has no vector
    follows: np.ndarray  # (n,) 1 when the user follows the video's creator
    session_sim: np.ndarray  # (n,) max cosine between the video and the user's latest videos
    segment: np.ndarray  # (n,) int64 user segment, -1 when unknown
    category_share: np.ndarray  # (n,) share of the user's engaged events in the video's category
    activity: np.ndarray  # (n,) the user's engaged events in training


class FeatureTables:
    """Per-video arrays the features read, precomputed once per model and catalog."""

    def __init__(self, item_factors: dict[str, np.ndarray], catalog: Catalog, stats: Stats,
                 prior_strength: float = 20.0) -> None:
        n = len(catalog.videos)
        self.catalog, self.item_factors, self.stats = catalog, item_factors, stats.padded(n)
        counts = self.stats.video_counts
        self.n_trained = len(item_factors["video"]) if "video" in item_factors else 0
        watch_trials = counts["impressions"] if counts["impressions"].sum() > 0 else counts["views"]
        self.watch_prior = smoothed(counts["full_views"], watch_trials, prior_strength)  # (n_videos,)
        self.share_prior = smoothed(counts["shares"], counts["views"], prior_strength)
        self.buy_prior = smoothed(counts["purchases"], counts["views"], prior_strength)
        self.creator_buy_prior = self._creator_prior(counts, prior_strength)
        seg_v, seg_p = self.stats.segment_views, self.stats.segment_purchases  # (n_segments, n_videos)
        self.segment_buy = ((seg_p + prior_strength * self.buy_prior) / (seg_v + prior_strength)).astype(np.float32)
        self.log_views = np.log1p(counts["views"]).astype(np.float32)
        self.has_views = (counts["views"] > 0).astype(np.float32)  # (n_videos,) 0 for videos new since training
        self.log_trend = np.log1p(self.stats.trend).astype(np.float32)
        self.category = catalog.video_category(np.arange(n))  # (n_videos,)
        self._product_arrays(catalog)
        self.static = np.column_stack([  # (n_videos, len(STATIC)) float32, in STATIC order
            self.log_views, self.log_trend, self.watch_prior, self.share_prior, self.buy_prior, self.creator_buy_prior,
            np.log1p(self.price), self.has_price, self.commission, self.has_views]).astype(np.float32)
        self._kernel_arrays()

    def _kernel_arrays(self) -> None:
        """The arrays the compiled kernels read, each in the one dtype and layout they are compiled for."""
        self.segment_buy = np.ascontiguousarray(self.segment_buy, dtype=np.float32)  # (n_segments, n_videos)
        self.buy_prior = np.ascontiguousarray(self.buy_prior, dtype=np.float32)
        self.category = np.ascontiguousarray(self.category, dtype=np.int64)
        self.video_creator = np.ascontiguousarray(self.catalog.video_creator, dtype=np.int64)
        self.video_product = np.ascontiguousarray(self.catalog.video_product, dtype=np.int64)
        self._factors = {name: np.ascontiguousarray(self.item_factors[name], dtype=np.float32)
                         for name in RELATIONS if name in self.item_factors}
        video = self.factors_of("video")
        norms = np.sqrt(np.einsum("ij,ij->i", video, video, dtype=np.float64)) if "video" in self._factors else \
            np.zeros(0)
        # (n_trained,) float32 1/‖v‖, 0 for zero vectors: cosines without a second (n_videos, dim) table
        self.inv_norm = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0).astype(np.float32)
        # the newest publication: the kernels only use now − published, and float32 days are finest near 0
        published = self.catalog.video_published_ms
        epoch = float(np.nanmax(published)) if np.isfinite(published).any() else self.stats.end_ms
        self.layout = video_layout(self.static, STATIC, self.price, self.buy_prior, self.segment_buy, self.inv_norm,
                                   self.catalog, self.category, epoch)
        self.kernel_tables = scoring.Tables(
            self.layout.record, self.layout.keys, _STATIC_COLUMNS, _USER_COLUMNS, len(FEATURES),
            self.layout.n_segments, self.layout.epoch_ms, tuple(self.factors_of(r) for r in RELATIONS))

    @cached_property
    def unit_video(self) -> np.ndarray:
        """(n_trained, dim) float32 unit video vectors (zero rows stay zero): training and evaluation read
        them; the request path computes cosines from the factors and `inv_norm`."""
        return (self.factors_of("video") * self.inv_norm[:, None]).astype(np.float32) if len(self.inv_norm) else \
            np.zeros((0, 1), np.float32)

    def factors_of(self, relation: str) -> np.ndarray:
        """(n_items, dim) float32 item vectors of a relation; (0, 1) when the bundle has none."""
        return self._factors.get(relation, _NO_FACTORS)

    def user_vector(self, relation: str, vectors: dict[str, np.ndarray]) -> np.ndarray:
        """The user's float32 vector of a relation, empty when there is none (or no items to match)."""
        vector = vectors.get(relation)
        if vector is None or relation not in self._factors:
            return _NO_VECTOR
        return np.require(vector, np.float32, ("C", "W"))  # writable: the kernels are bound to writable arrays

    def user(self, vectors: dict[str, np.ndarray], recent: np.ndarray, follows: np.ndarray,
             categories: np.ndarray, segment: int, now_ms: float) -> scoring.User:
        """What the ranking kernel knows about one user."""
        recent = recent[recent < len(self.inv_norm)]
        return scoring.User(tuple(self.user_vector(r, vectors) for r in RELATIONS), recent.astype(np.int64),
                            np.sort(np.asarray(follows, dtype=np.int64)),
                            np.ascontiguousarray(categories, dtype=np.float32), int(segment), float(now_ms))

    def user_features(self, videos: np.ndarray, vectors: dict[str, np.ndarray], recent: np.ndarray,
                      follows: np.ndarray, categories: np.ndarray, segment: int, now_ms: float) -> np.ndarray:
        """(n, len(FEATURES)) float32 features of one user's candidate videos: `features` of the same pairs."""
        user = self.user(vectors, recent, follows, categories, segment, now_ms)
        return scoring.user_features(self.kernel_tables, user, np.ascontiguousarray(videos, dtype=np.int64))

    def _creator_prior(self, counts: dict[str, np.ndarray], strength: float) -> np.ndarray:
        """(n_videos,) the smoothed purchase rate per view of each video's creator."""
        creator = self.catalog.video_creator
        n_creators = len(self.catalog.creators)
        has = creator >= 0
        views = np.bincount(creator[has], weights=counts["views"][has], minlength=n_creators)
        buys = np.bincount(creator[has], weights=counts["purchases"][has], minlength=n_creators)
        per_creator = smoothed(buys, views, strength)
        global_rate = smoothed(np.array([buys.sum()]), np.array([views.sum()]), strength)[0]
        return np.where(has, per_creator[np.maximum(creator, 0)] if n_creators else 0.0, global_rate).astype(
            np.float32)

    def _product_arrays(self, catalog: Catalog) -> None:
        """Price, its presence and commission rate per video (0 when the video sells nothing known)."""
        product = catalog.video_product
        has = product >= 0
        price = np.where(has, catalog.product_price[np.maximum(product, 0)] if len(catalog.products) else np.nan,
                         np.nan)
        rate = np.where(has, catalog.product_commission[np.maximum(product, 0)] if len(catalog.products) else 0.0,
                        0.0)
        self.price = np.nan_to_num(price, nan=0.0).astype(np.float32)  # (n_videos,)
        self.has_price = np.isfinite(price).astype(np.float32)
        self.commission = np.clip(np.nan_to_num(rate, nan=0.0), 0.0, 1.0).astype(np.float32)

    def affinity(self, relation: str, vectors: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """User·item inner products for each video's item of a relation; vectors (dim,) or (n, dim); (n,)."""
        factors = self.item_factors.get(relation)
        if factors is None:
            return np.zeros(len(videos), dtype=np.float32)
        items = self.items_of(relation, videos)
        known = (items >= 0) & (items < len(factors))
        everything = bool(known.all())  # the usual case: skip both masks
        gathered = factors[items if everything else np.where(known, items, 0)]  # (n, dim)
        dots = gathered @ vectors if vectors.ndim == 1 else np.einsum("ij,ij->i", gathered, vectors)
        return (dots if everything else np.where(known, dots, 0.0)).astype(np.float32)

    def items_of(self, relation: str, videos: np.ndarray) -> np.ndarray:
        """The relation's item row of each video (-1 where it has none)."""
        if relation == "creator":
            return self.catalog.video_creator[videos]
        if relation == "product":
            return self.catalog.video_product[videos]
        return videos

    def session_similarity(self, recent: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """Max cosine between each video and any of one user's recent video rows; (n,)."""
        recent = recent[recent < len(self.unit_video)]
        if len(recent) == 0:
            return np.zeros(len(videos), dtype=np.float32)
        known = videos < len(self.unit_video)
        sims = self.unit_video[np.where(known, videos, 0)] @ self.unit_video[recent].T  # (n, n_recent)
        return np.where(known, sims.max(axis=1), 0.0).astype(np.float32)

    def pair_session_similarity(self, recent: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """The same per pair (training): recent is (n, k) each pair's user's latest video rows, -1 = none; (n,)."""
        unit = self.unit_video
        if len(unit) == 0:
            return np.zeros(len(videos), dtype=np.float32)
        valid = (recent >= 0) & (recent < len(unit))
        known = videos < len(unit)
        sims = np.einsum("nkd,nd->nk", unit[np.where(valid, recent, 0)], unit[np.where(known, videos, 0)])
        best = np.where(valid, sims, -np.inf).max(axis=1)
        return np.where(known & np.isfinite(best), best, 0.0).astype(np.float32)

    def category_share(self, history: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """Share of one user's engaged events (history: (n_categories,) counts) in each video's category; (n,)."""
        total = float(history.sum())
        if total <= 0:
            return np.zeros(len(videos), dtype=np.float32)
        category = self.category[videos]
        return np.where(category >= 0, history[np.maximum(category, 0)] / total, 0.0).astype(np.float32)

    def segment_prior(self, segment: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """The video's smoothed conversion in the pair's segment, its overall prior for segment -1; (n,)."""
        if len(self.segment_buy) == 0:
            return self.buy_prior[videos]
        known = segment >= 0
        return np.where(known, self.segment_buy[np.where(known, segment, 0), videos], self.buy_prior[videos])

    def features(self, videos: np.ndarray, pairs: PairContext, now_ms: float) -> np.ndarray:
        """(n, len(FEATURES)) float32 features of the pairs (videos[i], pair i's user)."""
        published = self.catalog.video_published_ms[videos]
        age = np.where(np.isfinite(published), np.maximum(now_ms - published, 0.0) / DAY_MS, UNKNOWN_AGE_DAYS)
        out = np.empty((len(videos), len(FEATURES)), dtype=np.float32)
        out[:, _STATIC_COLUMNS] = self.static[videos]
        columns = {
            "aff_video": pairs.affinity.get("video", 0.0), "aff_creator": pairs.affinity.get("creator", 0.0),
            "aff_product": pairs.affinity.get("product", 0.0), "follows": pairs.follows,
            "session_sim": pairs.session_sim, "segment_buy_prior": self.segment_prior(pairs.segment, videos),
            "log_age_days": np.log1p(age), "category_share": pairs.category_share,
            "log_user_activity": np.log1p(pairs.activity)}
        for name, column in columns.items():
            out[:, FEATURES.index(name)] = column
        return out


_NO_FACTORS = np.zeros((0, 1), dtype=np.float32)
_NO_VECTOR = np.zeros(0, dtype=np.float32)
