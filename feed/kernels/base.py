"""The decorator every kernel uses and the small helpers they share."""

from __future__ import annotations

import os
from collections.abc import Callable

import numba
import numpy as np
from numba.core.typing.typeof import Purpose

FLAGS = {"reassoc", "contract"}  # let LLVM vectorize dot products; keep inf/NaN semantics
jit = numba.njit(cache=True, nogil=True, fastmath=FLAGS)
NO_ROWS = np.zeros(0, dtype=np.int64)
# every call of a `Bound` kernel checks its argument types against the bound ones (the test suite turns it on)
CHECK_TYPES = os.environ.get("FEED_CHECK_KERNEL_TYPES", "") not in ("", "0")
CHECK_EVERY = 1024  # otherwise one call in this many is checked (a path that builds an argument another way fails)


class Bound:
    """A stage kernel called through the one compiled version its first call chose.

    numba's dispatcher types every argument again on every call. Arrays it types in C, but named tuples in
    Python, field by field: ~5 µs per call of a stage kernel warm and ~15 µs cold, whose tables are named
    tuples of up to 18 arrays. The compiled version's entry point unboxes the arguments without typing them.
    It also trusts them: an argument of another dtype or layout would be read as the bound one. So a `Bound`
    belongs to one service (`feed.service.FeedService`), whose request path builds every argument with one dtype
    and layout (the stage wrappers), and whose warm-up makes the first call. One call in `CHECK_EVERY` has its
    types checked against the bound ones, every call with `FEED_CHECK_KERNEL_TYPES=1` (the tests set it); a
    mismatch raises TypeError instead of being read wrongly."""

    def __init__(self, kernel: numba.core.registry.CPUDispatcher) -> None:
        self.kernel = kernel
        self._entry: Callable[..., object] | None = None
        self._types: tuple[object, ...] = ()
        self._calls = 0

    def __call__(self, *args: object) -> object:
        if self._entry is None:
            out = self.kernel(*args)  # compiles, or loads the cached version
            self._types = _types_of(args)
            self._entry = self.kernel.get_overload(self._types)
            return out
        self._calls += 1
        if CHECK_TYPES or self._calls % CHECK_EVERY == 0:
            self._check(args)
        return self._entry(*args)

    def _check(self, args: tuple[object, ...]) -> None:
        """Raise TypeError when the arguments' count or a numba type differs from the bound ones."""
        if len(args) != len(self._types):
            raise TypeError(f"{self.kernel.__name__}: {len(args)} arguments, the bound version takes "
                            f"{len(self._types)}")
        for i, (bound, given) in enumerate(zip(self._types, _types_of(args), strict=True)):
            if bound != given:
                raise TypeError(f"{self.kernel.__name__}: argument {i} is {given}, the bound version takes {bound}")


def _types_of(args: tuple[object, ...]) -> tuple[object, ...]:
    """numba's types of call arguments, as its dispatcher infers them."""
    return tuple(numba.typeof(a, Purpose.argument) for a in args)


@jit
def contains(sorted_pool: np.ndarray, value: int) -> bool:
    """True when value is in the ascending array."""
    at = np.searchsorted(sorted_pool, value)
    return at < len(sorted_pool) and sorted_pool[at] == value


@jit
def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product of two float32 vectors of the same length, accumulated in float32 lanes."""
    total = np.float32(0.0)
    for j in range(len(a)):
        total += a[j] * b[j]
    return total


@jit
def gather_rows(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """table[rows] for a 2-D table, rows out of range left as zeros: a loop of independent loads, so the memory
    system fetches many rows at once instead of one dependent chain of misses per candidate. A first pass only
    touches each row (first and last element), putting more misses in flight than the copy loop does: the
    ranking stage's features 0.88× cold at 1M."""
    width = table.shape[1]
    out = np.zeros((len(rows), width), table.dtype)
    touched = table.dtype.type(0)
    for i in range(len(rows) if width > 0 else 0):  # a load of each row's first and last element: misses in flight
        row = rows[i]
        if 0 <= row < len(table):
            touched += table[row, 0] + table[row, width - 1]
    if len(table) < 0:  # never true, but the compiler cannot prove it: the loads above are not dropped as unused
        out[0, 0] = touched
    for i in range(len(rows)):
        row = rows[i]
        if 0 <= row < len(table):
            for j in range(width):
                out[i, j] = table[row, j]
    return out


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
    """Positions of values from the largest to the smallest, ties by position: one sort of int64 keys that pack
    each value's float32 order (reversed) above its position. Values that are equal as float32 count as ties."""
    n = len(values)
    packed = np.empty(n, np.int64)
    for i in range(n):
        value = np.float32(values[i]) + np.float32(0.0)  # + 0: −0 becomes 0
        bits = np.int64(np.float32(value).view(np.int32))
        key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # int order = float order
        packed[i] = ((-1 - key) << 32) | i  # largest first, then the lower position
    packed.sort()
    for i in range(n):
        packed[i] &= 0xFFFFFFFF
    return packed


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
