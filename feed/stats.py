"""What the event log says about videos, creators and users beyond the embeddings: counts, trends, user context.

Computed once per training run from the training events (and stored in the bundle as `stats.npz`):

- per video: impressions, views, views watched to the end, shares and purchases, and a time-decayed `trend`
  (views + 3·shares + 10·purchases, halving every `half_life_days` before the window's end);
- per user segment (k-means over the users' video vectors) and video: views and purchases, so that a video's
  conversion can be read "for users like this one" (the same book converts one kind of reader, not another);
- per user: counts of their events by category and their most recent videos (newest first).

Smoothed rates (`smoothed`) shrink each count ratio towards the global rate with `prior_strength` pseudo-events,
so a video with 2 views and 1 purchase does not outrank one with 2,000 views and 300.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feed.dataset import Catalog, IdMap, watch_ratio

DAY_MS = 86_400_000
TREND_WEIGHTS = {"view": 1.0, "share": 3.0, "purchase": 10.0}
ENGAGED = ("view", "like", "share", "cart", "purchase")  # events that say what a user is into


@dataclass(frozen=True)
class StatsConfig:
    """How stats are computed."""

    half_life_days: float = 3.0
    segments: int = 8
    recent: int = 5
    full_watch_ratio: float = 0.9
    seed: int = 0


@dataclass
class Stats:
    """Counts per video and context per user over one training window."""

    end_ms: float  # the window's last event time: "now" for trends and ages at training time
    video_counts: dict[str, np.ndarray]  # name -> (n_videos,) float32: impressions, views, full_views, shares, purchases
    trend: np.ndarray  # (n_videos,) float32 decayed activity at end_ms
    segment_views: np.ndarray  # (n_segments, n_videos) float32
    segment_purchases: np.ndarray  # (n_segments, n_videos) float32
    centroids: np.ndarray  # (n_segments, dim) float32 over the video relation's user vectors
    user_segment: np.ndarray  # (n_users,) int64, -1 for users without a vector
    user_category: sp.csr_matrix  # (n_users, n_categories) float32 engaged events per category
    recent: sp.csr_matrix  # (n_users, n_videos) the user's newest videos; data = 1 for the newest, 2, …

    COUNTS = ("impressions", "views", "full_views", "shares", "purchases")

    def padded(self, n_videos: int) -> Stats:
        """The same stats over a catalog grown to n_videos (videos added later count zero)."""
        extra = n_videos - len(self.trend)
        if extra <= 0:
            return self
        grow = (lambda a: np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)]))
        recent = sp.csr_matrix((self.recent.data, self.recent.indices, self.recent.indptr),
                               shape=(self.recent.shape[0], n_videos))
        return Stats(self.end_ms, {k: grow(v) for k, v in self.video_counts.items()}, grow(self.trend),
                     grow(self.segment_views), grow(self.segment_purchases), self.centroids, self.user_segment,
                     self.user_category, recent)

    @classmethod
    def empty(cls, n_users: int, n_videos: int, n_categories: int) -> Stats:
        """No counts at all (a bundle trained without stats): every prior falls back to its global rate."""
        zeros = np.zeros(n_videos, dtype=np.float32)
        return cls(0.0, {k: zeros for k in cls.COUNTS}, zeros, np.zeros((0, n_videos), np.float32),
                   np.zeros((0, n_videos), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.int64),
                   sp.csr_matrix((n_users, n_categories), dtype=np.float32),
                   sp.csr_matrix((n_users, n_videos), dtype=np.float32))

    def recent_of(self, user_row: int) -> np.ndarray:
        """The user's most recent video rows, newest first (empty for -1); the request path reads the same through
        `feed.kernels.user`, tested against this."""
        if user_row < 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = self.recent.indptr[user_row], self.recent.indptr[user_row + 1]
        rows = self.recent.indices[lo:hi].astype(np.int64)
        ranks = self.recent.data[lo:hi]
        return rows if hi - lo < 2 or (ranks[1:] > ranks[:-1]).all() else rows[np.argsort(ranks, kind="stable")]

    def categories_of(self, user_row: int, n_categories: int) -> np.ndarray:
        """(n_categories,) the user's engaged events per category (zeros for -1 or categories added later); the
        request path reads the same through `feed.kernels.user`, tested against this."""
        out = np.zeros(n_categories, dtype=np.float32)
        if 0 <= user_row < self.user_category.shape[0]:
            lo, hi = self.user_category.indptr[user_row], self.user_category.indptr[user_row + 1]
            cols, values = self.user_category.indices[lo:hi], self.user_category.data[lo:hi]
            if len(cols) and cols.max() >= n_categories:
                cols, values = cols[cols < n_categories], values[cols < n_categories]
            out[cols] = values
        return out

    def segment_of(self, vector: np.ndarray | None) -> int:
        """The segment whose centroid is nearest to a user vector (-1 without one)."""
        if vector is None or len(self.centroids) == 0:
            return -1
        return int(np.argmin(((self.centroids - vector) ** 2).sum(axis=1)))


def smoothed(hits: np.ndarray, trials: np.ndarray, strength: float) -> np.ndarray:
    """(hits + strength·rate) / (trials + strength), rate = the global hits / trials; same shape as hits."""
    total = float(trials.sum())
    rate = float(hits.sum()) / total if total > 0 else 0.0
    return ((hits + strength * rate) / (trials + strength)).astype(np.float32)


def compute_stats(events: pd.DataFrame, catalog: Catalog, users: IdMap, user_vectors: np.ndarray | None,
                  config: StatsConfig) -> Stats:
    """Stats of a training window; `user_vectors` (n_users, dim) are the video relation's, when there is one."""
    n_videos = len(catalog.videos)
    kind = events["event"].to_numpy(dtype=object)
    video = catalog.videos.rows(events["video_id"].to_numpy(dtype=object))
    user = users.rows(events["user_id"].to_numpy(dtype=object))
    ts = epoch_ms(events["ts"])
    end_ms = float(ts.max()) if len(ts) else 0.0
    full = (kind == "view") & (np.nan_to_num(watch_ratio(events, catalog)) >= config.full_watch_ratio)
    masks = {"impressions": kind == "impression", "views": kind == "view", "full_views": full,
             "shares": kind == "share", "purchases": kind == "purchase"}
    counts = {name: _count(video, mask, n_videos) for name, mask in masks.items()}
    segments, centroids = _segments(user_vectors, config)
    seg = np.where(user >= 0, segments[np.maximum(user, 0)], -1) if len(segments) else np.full(len(user), -1)
    return Stats(
        end_ms=end_ms, video_counts=counts, trend=_trend(kind, video, ts, end_ms, n_videos, config.half_life_days),
        segment_views=_segment_counts(seg, video, masks["views"], len(centroids), n_videos),
        segment_purchases=_segment_counts(seg, video, masks["purchases"], len(centroids), n_videos),
        centroids=centroids, user_segment=segments,
        user_category=_user_categories(user, video, kind, catalog, len(users)),
        recent=_recent(user, video, ts, kind, len(users), n_videos, config.recent),
    )


def epoch_ms(times: pd.Series) -> np.ndarray:
    """Epoch milliseconds of a timestamp column as float64."""
    return times.astype("datetime64[ms, UTC]").astype("int64").to_numpy(dtype=np.float64)


def _count(video: np.ndarray, mask: np.ndarray, n_videos: int) -> np.ndarray:
    """Events per video row among the masked ones; (n_videos,) float32."""
    keep = mask & (video >= 0)
    return np.bincount(video[keep], minlength=n_videos).astype(np.float32)


def _trend(kind: np.ndarray, video: np.ndarray, ts: np.ndarray, end_ms: float, n_videos: int,
           half_life_days: float) -> np.ndarray:
    """Time-decayed weighted activity per video at end_ms; (n_videos,) float32."""
    weight = pd.Series(kind).map(TREND_WEIGHTS).fillna(0.0).to_numpy(dtype=np.float64)
    decay = np.exp2(-(end_ms - ts) / (half_life_days * DAY_MS))
    keep = (video >= 0) & (weight > 0)
    return np.bincount(video[keep], weights=(weight * decay)[keep], minlength=n_videos).astype(np.float32)


def _segments(vectors: np.ndarray | None, config: StatsConfig) -> tuple[np.ndarray, np.ndarray]:
    """k-means segment per user and the centroids; empty when there are no vectors or too few users."""
    if vectors is None or len(vectors) < 2 * config.segments or config.segments < 1:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0 if vectors is None else vectors.shape[1]), np.float32)
    import faiss

    data = np.ascontiguousarray(vectors, dtype=np.float32)
    kmeans = faiss.Kmeans(data.shape[1], config.segments, niter=20, seed=config.seed + 1, verbose=False)
    kmeans.train(data)
    _, labels = kmeans.index.search(data, 1)
    return labels.ravel().astype(np.int64), kmeans.centroids.astype(np.float32)


def _segment_counts(seg: np.ndarray, video: np.ndarray, mask: np.ndarray, n_segments: int,
                    n_videos: int) -> np.ndarray:
    """(n_segments, n_videos) float32 counts of the masked events."""
    keep = mask & (video >= 0) & (seg >= 0)
    flat = np.bincount(seg[keep] * n_videos + video[keep], minlength=n_segments * n_videos)
    return flat.reshape(n_segments, n_videos).astype(np.float32)


def _user_categories(user: np.ndarray, video: np.ndarray, kind: np.ndarray, catalog: Catalog,
                     n_users: int) -> sp.csr_matrix:
    """(n_users, n_categories) engaged events per category."""
    category = np.where(video >= 0, catalog.video_category(np.maximum(video, 0)), -1)
    keep = np.isin(kind, ENGAGED) & (user >= 0) & (category >= 0)
    shape = (n_users, len(catalog.categories))
    return sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (user[keep], category[keep])), shape=shape)


def _recent(user: np.ndarray, video: np.ndarray, ts: np.ndarray, kind: np.ndarray, n_users: int,
            n_videos: int, k: int) -> sp.csr_matrix:
    """(n_users, n_videos) each user's k newest distinct engaged videos, data = recency rank (1 = newest)."""
    keep = np.flatnonzero(np.isin(kind, ENGAGED) & (user >= 0) & (video >= 0))
    order = keep[np.lexsort((-ts[keep], user[keep]))]  # by user, newest first
    pairs = pd.DataFrame({"u": user[order], "v": video[order]}).drop_duplicates()
    rank = pairs.groupby("u", sort=False).cumcount().to_numpy() + 1
    first = rank <= k
    return sp.csr_matrix((rank[first].astype(np.float32), (pairs["u"].to_numpy()[first],
                                                            pairs["v"].to_numpy()[first])), shape=(n_users, n_videos))


def save_stats(stats: Stats, path: object) -> None:
    """Write stats as one npz (no pickles)."""
    np.savez(path, end_ms=np.float64(stats.end_ms), trend=stats.trend, segment_views=stats.segment_views,
             segment_purchases=stats.segment_purchases, centroids=stats.centroids, user_segment=stats.user_segment,
             **{f"count_{k}": v for k, v in stats.video_counts.items()},
             **_csr_arrays("user_category", stats.user_category), **_csr_arrays("recent", stats.recent))


def load_stats(path: object) -> Stats:
    """Read stats written by `save_stats` (KeyError/ValueError on a malformed file)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return Stats(float(arrays["end_ms"]), {k: arrays[f"count_{k}"] for k in Stats.COUNTS}, arrays["trend"],
                 arrays["segment_views"], arrays["segment_purchases"], arrays["centroids"], arrays["user_segment"],
                 _csr_from("user_category", arrays), _csr_from("recent", arrays))


def _csr_arrays(name: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain named arrays."""
    return {f"{name}_data": matrix.data, f"{name}_indices": matrix.indices, f"{name}_indptr": matrix.indptr,
            f"{name}_shape": np.asarray(matrix.shape, dtype=np.int64)}


def _csr_from(name: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """A CSR matrix from the arrays `_csr_arrays` wrote."""
    shape = tuple(int(x) for x in arrays[f"{name}_shape"])
    return sp.csr_matrix((arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]), shape=shape)
