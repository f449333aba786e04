"""The ranking stage: one user's pair features, the ranker network, the value formula and the rank fusion.

The same functions serve `feed.features.FeatureTables.user_features`, `feed.ranker.Ranker` and
`feed.ranker.ValueFormula`, so training's evaluation and serving run one implementation of the network and of the
value; the per-pair features of training (`FeatureTables.features`) are held equal to `user_features` by a test.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from feed.kernels.base import (K_CATEGORY, K_CREATOR, K_PRODUCT, R_BUY, R_COMMISSION, R_LOG_VIEWS, R_PRICE,
                               R_PUBLISHED, R_SEGMENTS, contains, dot, inline, jit, ranks_desc,
                               record_cosine)

DAY_MS = 86_400_000.0
UNKNOWN_AGE_DAYS = 365.0
RANKER, RETRIEVAL, POPULAR = range(3)  # what orders a page


class Tables(NamedTuple):
    """Per-model arrays the ranking stage reads (`feed.layout`)."""

    record: np.ndarray  # (n_videos, width) float32, columns R_*: static features first
    keys: np.ndarray  # (n_videos, 4) int32, columns K_*
    static_columns: np.ndarray  # (n_static,) int64 where record columns 0… go in FEATURES
    columns: np.ndarray  # (9,) int64 columns of the per-pair features (see `user_features`)
    n_features: int
    n_segments: int
    epoch_ms: float  # R_PUBLISHED counts days from here
    factors: tuple  # video, creator and product item vectors (n_items, dim) float32; (0, 1) when absent


class Model(NamedTuple):
    """The ranker's arrays and the value formula as numbers (`feed.ranker`)."""

    network: tuple  # mean, scale, w1, b1, w2, b2, calib_a, calib_b, all float32
    clip: float
    head_weights: np.ndarray  # (n_heads,) float32
    purchase: int  # the purchase head
    price_weight: float
    commission_weight: float
    commission_cap: float
    mode: int  # RANKER, RETRIEVAL or POPULAR
    ranker_weight: float  # relevance = w/(k + value rank) + (1 − w)/(k + retrieval rank)
    rank_k: float


class User(NamedTuple):
    """What the features know about the user of a request."""

    vectors: tuple  # video, creator, product vectors (dim,) float32; empty when the user has none
    recent: np.ndarray  # (k,) int64 latest video rows that have vectors
    follows: np.ndarray  # (f,) int64 sorted creator rows
    categories: np.ndarray  # (n_categories,) float32 engaged events per category
    segment: int
    now_ms: float


@inline
def affinity(vector: np.ndarray, factors: np.ndarray, item: int) -> float:
    """user·item; 0 for row -1, a row beyond the factors, or without a vector."""
    if len(vector) == 0 or not 0 <= item < len(factors):
        return 0.0
    return dot(factors[item], vector)


@inline
def session_similarity(factors: np.ndarray, record: np.ndarray, video: int, recent: np.ndarray) -> float:
    """Max cosine between a video and the user's latest videos; 0 without either vector."""
    if len(recent) == 0 or video >= len(factors):
        return 0.0
    best = -np.inf
    for r in recent:
        best = max(best, record_cosine(factors, record, video, r))
    return best


@jit
def _touch(t: Tables, videos: np.ndarray) -> float:
    """Read every row the features will read, in independent passes: the loads of one pass overlap (the
    compute pass then finds them in cache instead of waiting for each candidate's chain of misses in turn)."""
    record, keys, factors = t.record, t.keys, t.factors
    last_record, last_factor = record.shape[1] - 1, factors[0].shape[1] - 1
    total = 0.0
    for v in videos:
        total += record[v, 0] + record[v, last_record] + keys[v, K_CREATOR]
        if v < len(factors[0]):
            total += factors[0][v, 0] + factors[0][v, last_factor]
    for v in videos:
        creator, product = keys[v, K_CREATOR], keys[v, K_PRODUCT]
        if 0 <= creator < len(factors[1]):
            total += factors[1][creator, 0] + factors[1][creator, last_factor]
        if 0 <= product < len(factors[2]):
            total += factors[2][product, 0] + factors[2][product, last_factor]
    return total


@jit
def user_features(t: Tables, u: User, videos: np.ndarray) -> np.ndarray:
    """(n, n_features) float32 features of one user's candidate videos, what `FeatureTables.features` computes
    from a `PairContext`. t.columns: where aff_video, aff_creator, aff_product, follows, session_sim,
    segment_buy_prior, log_age_days, category_share and log_user_activity go. Every read of a video is in its
    record and keys rows (a few cache lines per candidate)."""
    x = np.empty((len(videos), t.n_features), np.float32)
    record, keys, col, static_columns = t.record, t.keys, t.columns, t.static_columns
    video_factors, creator_factors, product_factors = t.factors[0], t.factors[1], t.factors[2]
    total = 0.0
    for c in range(len(u.categories)):
        total += u.categories[c]
    now_days, activity = (u.now_ms - t.epoch_ms) / DAY_MS, np.log1p(total)
    segment = R_SEGMENTS + u.segment if 0 <= u.segment < t.n_segments else R_BUY
    _touch(t, videos)
    for i in range(len(videos)):
        v = videos[i]
        for j in range(len(static_columns)):
            x[i, static_columns[j]] = record[v, j]
        creator, product, category = keys[v, K_CREATOR], keys[v, K_PRODUCT], keys[v, K_CATEGORY]
        x[i, col[0]] = affinity(u.vectors[0], video_factors, v)
        x[i, col[1]] = affinity(u.vectors[1], creator_factors, creator)
        x[i, col[2]] = affinity(u.vectors[2], product_factors, product)
        x[i, col[3]] = 1.0 if creator >= 0 and contains(u.follows, creator) else 0.0
        x[i, col[4]] = session_similarity(video_factors, record, v, u.recent)
        x[i, col[5]] = record[v, segment]
        published = record[v, R_PUBLISHED]
        x[i, col[6]] = np.log1p(max(now_days - published, 0.0) if np.isfinite(published) else UNKNOWN_AGE_DAYS)
        x[i, col[7]] = u.categories[category] / total if total > 0 and category >= 0 else 0.0
        x[i, col[8]] = activity
    return x


@jit
def logits(x: np.ndarray, network: tuple, clip: float) -> np.ndarray:
    """(n, n_heads) uncalibrated logits: standardize and clip → ReLU layer → one logit per head."""
    mean, scale, w1, b1, w2, b2 = network[0], network[1], network[2], network[3], network[4], network[5]
    z = np.empty(x.shape, np.float32)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            z[i, j] = min(max((x[i, j] - mean[j]) / scale[j], -clip), clip)
    hidden = np.dot(z, w1)  # (n, hidden), BLAS
    for i in range(hidden.shape[0]):
        for j in range(hidden.shape[1]):
            hidden[i, j] = max(hidden[i, j] + b1[j], 0.0)
    out = np.dot(hidden, w2)  # (n, n_heads)
    for i in range(out.shape[0]):
        for h in range(out.shape[1]):
            out[i, h] += b2[h]
    return out


@jit
def predict(x: np.ndarray, network: tuple, clip: float) -> np.ndarray:
    """(n, n_heads) calibrated probabilities: Platt scaling of each head's logit, then the sigmoid."""
    calib_a, calib_b = network[6], network[7]
    out = logits(x, network, clip)
    for i in range(out.shape[0]):
        for h in range(out.shape[1]):
            z = min(max(out[i, h] * calib_a[h] + calib_b[h], -30.0), 30.0)
            out[i, h] = 1.0 / (1.0 + np.exp(-z))
    return out


@jit
def value(m: Model, probs: np.ndarray, price: np.ndarray, commission: np.ndarray) -> np.ndarray:
    """(n,) Σ w·p + λ·p(purchase)·price + the commission term, capped at `commission_cap` of the value."""
    out = np.empty(len(probs), np.float32)
    weights, buy, lam, gamma, cap = m.head_weights, m.purchase, m.price_weight, m.commission_weight, m.commission_cap
    for i in range(len(probs)):
        out[i] = _value(probs, i, weights, buy, lam, gamma, cap, price[i], commission[i])
    return out


@inline
def _value(probs: np.ndarray, i: int, weights: np.ndarray, purchase: int, price_weight: float,
           commission_weight: float, cap: float, price: float, commission: float) -> float:
    """Candidate i's value (see `value`)."""
    buy = probs[i, purchase]
    base = price_weight * buy * price
    for h in range(len(weights)):
        base += probs[i, h] * weights[h]
    ceiling = cap / (1.0 - cap) * max(base, 0.0)
    return base + min(commission_weight * buy * price * commission, ceiling)


@jit
def relevance(t: Tables, m: Model, u: User, videos: np.ndarray,
              retrieval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) relevance of the candidates and (n, n_heads) probabilities ((0, n_heads) without the ranker)."""
    n_heads, record = len(m.head_weights), t.record
    if m.mode == POPULAR:
        views = np.empty(len(videos))
        for i in range(len(videos)):
            views[i] = record[videos[i], R_LOG_VIEWS]
        return views, np.zeros((0, n_heads), np.float32)
    if m.mode == RETRIEVAL or len(videos) == 0:
        return retrieval.copy(), np.zeros((0, n_heads), np.float32)
    probs = predict(user_features(t, u, videos), m.network, m.clip)
    worth = np.empty(len(videos))
    weights, buy, lam, gamma, cap = m.head_weights, m.purchase, m.price_weight, m.commission_weight, m.commission_cap
    for i in range(len(videos)):
        v = videos[i]
        worth[i] = _value(probs, i, weights, buy, lam, gamma, cap, record[v, R_PRICE], record[v, R_COMMISSION])
    by_value, by_retrieval = ranks_desc(worth), ranks_desc(retrieval)
    w, k = m.ranker_weight, m.rank_k
    return w / (k + by_value) + (1.0 - w) / (k + by_retrieval), probs
