"""Per-video tables laid out for the request path: one float32 record and one int32 key row per video.

A feed reads a few hundred random videos of a catalog that does not fit in any cache, so each separate per-video
array it reads costs about one cache miss per candidate. The record puts what the ranking and the page read about a
video side by side (its static features, price, publication time, 1/‖vector‖, conversion priors overall and per
user segment); the keys table holds its creator, product, category and merchant rows. Columns are named in
`feed.kernels.base` (R_*, K_*).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feed.dataset import Catalog
from feed.kernels.base import R_BUY, R_COMMISSION, R_INV_NORM, R_LOG_VIEWS, R_PRICE, R_PUBLISHED, R_SEGMENTS

DAY_MS = 86_400_000.0


@dataclass(frozen=True)
class VideoLayout:
    """The record and key tables of one model and catalog."""

    record: np.ndarray  # (n_videos, width) float32, columns R_* (width ≥ R_SEGMENTS + n_segments)
    keys: np.ndarray  # (n_videos, 4) int32 creator, product, category, merchant rows (-1 unknown)
    epoch_ms: float  # R_PUBLISHED counts days from here: float32 resolves |days|·2⁻²⁴ (0.2 s a month away)
    n_segments: int


def video_layout(static: np.ndarray, static_names: tuple[str, ...], price: np.ndarray, buy_prior: np.ndarray,
                 segment_buy: np.ndarray, inv_norm: np.ndarray, catalog: Catalog, category: np.ndarray,
                 epoch_ms: float) -> VideoLayout:
    """Both tables from the feature tables' arrays: static (n_videos, n_static) in `static_names` order,
    segment_buy (n_segments, n_videos), inv_norm (n_trained,) (videos beyond have no vector: 0)."""
    assert static_names[R_LOG_VIEWS] == "log_views" and static_names[R_COMMISSION] == "commission_rate"
    assert len(static_names) == R_PRICE
    n, n_segments = len(catalog.videos), segment_buy.shape[0]
    width = -(-(R_SEGMENTS + n_segments) // 8) * 8  # whole 32-byte blocks
    record = np.zeros((n, width), dtype=np.float32)
    record[:, :static.shape[1]] = static
    record[:, R_PRICE] = price
    record[:, R_PUBLISHED] = (catalog.video_published_ms - epoch_ms) / DAY_MS  # NaN stays NaN: unknown
    record[:len(inv_norm), R_INV_NORM] = inv_norm
    record[:, R_BUY] = buy_prior
    record[:, R_SEGMENTS:R_SEGMENTS + n_segments] = segment_buy.T
    keys = np.column_stack([catalog.video_creator, catalog.video_product, category,
                            catalog.video_merchant(np.arange(n))]).astype(np.int32)
    return VideoLayout(record, np.ascontiguousarray(keys), float(epoch_ms), int(n_segments))
