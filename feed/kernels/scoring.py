"""The ranking stage: one user's pair features, the ranker network, the value formula and the rank fusion.

The same functions serve `feed.features.FeatureTables.user_features`, `feed.ranker.Ranker` and
`feed.ranker.ValueFormula`, so training's evaluation and serving run one implementation of the network and of the
value; the per-pair features of training (`FeatureTables.features`) are held equal to `user_features` by a test.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from feed.kernels.base import (K_CATEGORY, K_CREATOR, K_PRODUCT, R_BUY, R_COMMISSION, R_INV_NORM, R_LOG_VIEWS,
                               R_PRICE, R_PUBLISHED, R_SEGMENTS, contains, dot, gather_rows, jit, order_desc,
                               ranks_desc)

DAY_MS = 86_400_000.0
UNKNOWN_AGE_DAYS = 365.0
RANKER, RETRIEVAL, POPULAR = range(3)  # what orders a page
NEW_CREATOR = 8  # SOURCES.index("new_creator")


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


@jit
def user_features(t: Tables, u: User, videos: np.ndarray) -> np.ndarray:
    """(n, n_features) float32 features of one user's candidate videos, what `FeatureTables.features` computes
    from a `PairContext`. t.columns: where aff_video, aff_creator, aff_product, follows, session_sim,
    segment_buy_prior, log_age_days, category_share and log_user_activity go. A candidate's record, keys and item
    vectors are first gathered into small local tables (see `gather_rows`)."""
    n, col, static_columns = len(videos), t.columns, t.static_columns
    record, keys = gather_rows(t.record, videos), gather_rows(t.keys, videos)
    creators, products = keys[:, K_CREATOR].astype(np.int64), keys[:, K_PRODUCT].astype(np.int64)
    own = gather_rows(t.factors[0], videos)  # (n, dim) the candidates' video vectors (zeros: none)
    affinity = np.zeros((3, n), np.float32)
    # one block per relation, not a loop over a tuple of them: numba's loop over (videos, creators, products)
    # cost ~35 µs per feed in dispatch alone
    _affinities(affinity[0], own, u.vectors[0])
    if len(u.vectors[1]):
        _affinities(affinity[1], gather_rows(t.factors[1], creators), u.vectors[1])
    if len(u.vectors[2]):
        _affinities(affinity[2], gather_rows(t.factors[2], products), u.vectors[2])
    session = _session_similarities(t, u, videos, own, record[:, R_INV_NORM])
    total = 0.0
    for c in range(len(u.categories)):
        total += u.categories[c]
    now_days, activity = (u.now_ms - t.epoch_ms) / DAY_MS, np.log1p(total)
    segment = R_SEGMENTS + u.segment if 0 <= u.segment < t.n_segments else R_BUY
    x = np.empty((n, t.n_features), np.float32)
    for i in range(n):
        for j in range(len(static_columns)):
            x[i, static_columns[j]] = record[i, j]
        creator, category = creators[i], keys[i, K_CATEGORY]
        x[i, col[0]], x[i, col[1]], x[i, col[2]] = affinity[0, i], affinity[1, i], affinity[2, i]
        x[i, col[3]] = 1.0 if creator >= 0 and len(u.follows) and contains(u.follows, creator) else 0.0
        x[i, col[4]] = session[i]
        x[i, col[5]] = record[i, segment]
        published = record[i, R_PUBLISHED]
        x[i, col[6]] = np.log1p(max(now_days - published, 0.0) if np.isfinite(published) else UNKNOWN_AGE_DAYS)
        x[i, col[7]] = u.categories[category] / total if total > 0 and category >= 0 else 0.0
        x[i, col[8]] = activity
    return x


@jit
def _affinities(out: np.ndarray, vectors: np.ndarray, user_vector: np.ndarray) -> None:
    """out[i] = vectors[i] · user_vector (out left as it is without a user vector)."""
    if len(user_vector) == 0:
        return
    for i in range(len(out)):
        out[i] = dot(vectors[i], user_vector)


@jit
def _session_similarities(t: Tables, u: User, videos: np.ndarray, vectors: np.ndarray,
                          inv_norms: np.ndarray) -> np.ndarray:
    """(n,) max cosine between each candidate (its video vector in `vectors`, 1/‖v‖ in `inv_norms`) and the user's
    latest videos; 0 without either vector."""
    out = np.zeros(len(videos), np.float32)
    factors = t.factors[0]
    if len(u.recent) == 0:
        return out
    recent = gather_rows(factors, u.recent)  # (k, dim) scaled to unit length
    for r in range(len(u.recent)):
        recent[r] *= t.record[u.recent[r], R_INV_NORM]
    for i in range(len(videos)):
        if videos[i] >= len(factors):
            continue
        best = -np.inf
        for r in range(len(recent)):
            best = max(best, dot(vectors[i], recent[r]))
        out[i] = best * inv_norms[i]
    return out


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


@jit
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


@jit
def ranked_subset(published: np.ndarray, videos: np.ndarray, retrieval: np.ndarray, source: np.ndarray,
                  depth: int) -> np.ndarray:
    """Ascending indices of the candidates the ranking stage scores: the `depth` best by fused retrieval score,
    and whatever the page's slots may take however deep it is (the new-creator pick, and the two newest videos:
    the fresh slot takes the newest that is not the new-creator pick). `published` is the record's R_PUBLISHED
    column on its own (4 bytes a video: it stays in cache, the record's 96-byte rows do not)."""
    n = len(retrieval)
    keep = np.zeros(n, np.bool_)
    order = order_desc(retrieval)
    for j in range(min(depth, n)):
        keep[order[j]] = True
    first, second, newest, runner_up = -1, -1, -np.inf, -np.inf
    for i in range(n):
        if source[i] == NEW_CREATOR:
            keep[i] = True
        day = published[videos[i]]  # NaN is never the newest (as in the page's fresh slot)
        if day > newest:
            second, runner_up, first, newest = first, newest, i, day
        elif day > runner_up:
            second, runner_up = i, day
    for i in (first, second):
        if i >= 0:
            keep[i] = True
    return np.flatnonzero(keep)
