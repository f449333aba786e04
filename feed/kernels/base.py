"""The decorator every kernel uses and the small helpers they share."""

from __future__ import annotations

import numba
import numpy as np

FLAGS = {"reassoc", "contract"}  # let LLVM vectorize dot products; keep inf/NaN semantics
jit = numba.njit(cache=True, nogil=True, fastmath=FLAGS)
# per-element helpers: inlined where they are called (no call, no copy of the tuples of arrays they are passed)
inline = numba.njit(cache=True, nogil=True, fastmath=FLAGS, inline="always")
NO_ROWS = np.zeros(0, dtype=np.int64)


@inline
def contains(sorted_pool: np.ndarray, value: int) -> bool:
    """True when value is in the ascending array."""
    at = np.searchsorted(sorted_pool, value)
    return at < len(sorted_pool) and sorted_pool[at] == value


@inline
def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product of two float32 vectors of the same length, accumulated in float32 lanes."""
    total = np.float32(0.0)
    for j in range(len(a)):
        total += a[j] * b[j]
    return total


@inline
def cosine(factors: np.ndarray, inv_norm: np.ndarray, a: int, b: int) -> float:
    """Cosine between the vectors of rows a and b (0 when either is a zero vector)."""
    return dot(factors[a], factors[b]) * inv_norm[a] * inv_norm[b]


@jit
def sort_by_key(keys: np.ndarray) -> np.ndarray:
    """Positions of keys in ascending order, ties by position: one sort of (key, position) packed in int64.
    Keys must lie in [0, 2**40) and there must be fewer than 2**23 of them."""
    packed = np.empty(len(keys), np.int64)
    for i in range(len(keys)):
        packed[i] = (keys[i] << 23) | i
    packed.sort()
    for i in range(len(keys)):
        packed[i] &= (1 << 23) - 1
    return packed


@jit
def order_desc(values: np.ndarray) -> np.ndarray:
    """Positions of float values from the largest to the smallest, ties by position (NaN last)."""
    n = len(values)
    order = np.argsort(-values)  # quicksort: then equal runs are put back in position order
    i = 0
    while i < n:
        j = i + 1
        while j < n and values[order[j]] == values[order[i]]:
            j += 1
        if j - i > 1:
            order[i:j] = np.sort(order[i:j])
        i = j
    return order


@jit
def ranks_desc(values: np.ndarray) -> np.ndarray:
    """0-based rank of each value, highest first (ties by position)."""
    out = np.empty(len(values))
    order = order_desc(values)
    for r in range(len(order)):
        out[order[r]] = r
    return out


# Columns of the per-video tables (`feed.layout`): a candidate's facts sit together, a few cache lines per video.
R_LOG_VIEWS, R_COMMISSION = 0, 8  # within the STATIC features (feed.features), which fill columns 0-9
R_PRICE, R_PUBLISHED, R_INV_NORM, R_BUY, R_SEGMENTS = 10, 11, 12, 13, 14  # then conversion per segment
K_CREATOR, K_PRODUCT, K_CATEGORY, K_MERCHANT = range(4)  # the int32 keys table


@inline
def record_cosine(factors: np.ndarray, record: np.ndarray, a: int, b: int) -> float:
    """Cosine between the vectors of video rows a and b (1/‖v‖ from the record; 0 for zero vectors)."""
    return dot(factors[a], factors[b]) * record[a, R_INV_NORM] * record[b, R_INV_NORM]
