"""One query's nearest items in an `IVF…,Flat` index, scanned from FAISS's own lists copied into one array.

FAISS trains the index (k-means), assigns every item to its list and answers batched searches (`feed.index`). A
feed makes one query per relation, and there FAISS's scanner calls its distance function once per item (a call
through its SIMD dispatch, then an L2 distance, then a heap) over lists allocated one by one. This kernel scans the
same lists, laid out one after the other, with the inner product inlined (on the unit-length augmented vectors of
`feed.index` the smallest L2 distance is the largest inner product): 0.77–0.86× FAISS's time per query warm and
0.87–0.97× cold on the 1M bundle's indexes (BENCHMARKS "Each relation's index at 1M"). It probes the `nprobe`
lists whose centroids are nearest by L2, as FAISS's flat quantizer does, and keeps the k best items in a buffer
cut down by partitions; items that tie keep the order they were scanned in (FAISS breaks such ties its own way).

A feed searches three relations' indexes (videos, creators, products): `nearest_three` makes the three searches in
one call, with each query's preparation (`unit_query`), as `VectorIndex.nearest` makes one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from feed.kernels.base import jit


class Lists(NamedTuple):
    """An IVF-Flat index's centroids and inverted lists, list after list."""

    centroids: np.ndarray  # (nlist, d) float32
    vectors: np.ndarray  # (n, d) float32, the items of list 0, then list 1, …
    ids: np.ndarray  # (n,) int64 the item row of each vector
    starts: np.ndarray  # (nlist + 1,) int64 where each list starts in vectors


class Query(NamedTuple):
    """One search of `nearest_three`: a relation's lists, how many of them to probe, and the query."""

    lists: Lists
    nprobe: int
    vector: np.ndarray  # (dim,) float32 the user's vector, not augmented; empty: no search
    k: int  # how many items; 0: no search


@jit
def unit_query(vector: np.ndarray, d: int) -> np.ndarray:
    """(d,) float32: the (d − 1,) vector augmented with 0 and scaled to unit length (`feed.index`'s queries)."""
    query = np.zeros(d, np.float32)
    query[:d - 1] = vector
    total = 0.0
    for j in range(d):
        total += np.float64(query[j]) * np.float64(query[j])
    query *= np.float32(1.0 / max(np.sqrt(total), 1e-30))
    return query


@jit
def search(lists: Lists, vector: np.ndarray, nprobe: int, k: int) -> np.ndarray:
    """(≤ k,) int64 item rows nearest to one (d − 1,) vector, best first (k is capped at the number of items)."""
    k = min(k, len(lists.ids))
    if k <= 0 or len(vector) == 0:
        return np.zeros(0, np.int64)
    rows = nearest(lists.centroids, lists.vectors, lists.ids, lists.starts,
                   unit_query(vector, lists.centroids.shape[1]), nprobe, k)
    return rows if rows[k - 1] >= 0 else rows[rows >= 0]


@jit
def nearest_three(a: Query, b: Query, c: Query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three searches of a feed in one call: `search` of each."""
    return (search(a.lists, a.vector, a.nprobe, a.k), search(b.lists, b.vector, b.nprobe, b.k),
            search(c.lists, c.vector, c.nprobe, c.k))


@jit
def probes(centroids: np.ndarray, query: np.ndarray, nprobe: int) -> np.ndarray:
    """The nprobe lists whose centroids are nearest to the query by L2, nearest first (ties: the lower list)."""
    nlist, d = centroids.shape
    nprobe = min(nprobe, nlist)
    if nprobe <= 0:
        return np.zeros(0, np.int64)
    best = np.full(nprobe, np.inf, np.float32)  # ascending: best[-1] is the worst kept
    lists = np.full(nprobe, -1, np.int64)
    for c in range(nlist):
        total = np.float32(0.0)
        for j in range(d):
            diff = query[j] - centroids[c, j]
            total += diff * diff
        if total < best[nprobe - 1]:
            at = nprobe - 1
            while at > 0 and best[at - 1] > total:
                best[at], lists[at] = best[at - 1], lists[at - 1]
                at -= 1
            best[at], lists[at] = total, c
    return lists[lists >= 0]


@jit
def nearest(centroids: np.ndarray, vectors: np.ndarray, ids: np.ndarray, starts: np.ndarray, query: np.ndarray,
            nprobe: int, k: int) -> np.ndarray:
    """(k,) int64 item rows with the largest inner product with the query among the probed lists, best first
    (ties: scanned first); -1 pads when the lists hold fewer than k items.

    Items scoring above the k-th best so far go into a buffer of 2k; when it is full, a partition keeps its k
    best and raises the bar (a heap would pay a sift for each of the ~k·ln(n/k) items that enter)."""
    cap, d = 2 * max(k, 16), vectors.shape[1]
    keys = np.empty(cap, np.int64)  # rank keys: better score first, then the earlier scanned (`_key`)
    where = np.empty(cap, np.int64)  # each buffered item's row in vectors
    bar, m, position = np.float32(-np.inf), 0, 0
    for p in probes(centroids, query, nprobe):
        for r in range(starts[p], starts[p + 1]):
            total = np.float32(0.0)
            for j in range(d):
                total += query[j] * vectors[r, j]
            if total > bar:  # an item that only ties the k-th best ranks below it (scanned later)
                keys[m], where[m], m = _key(total, position), r, m + 1
                if m == cap:
                    m, bar = _keep_best(keys, where, m, k)
            position += 1
    if m > k:
        m, _ = _keep_best(keys, where, m, k)
    order = np.argsort(keys[:m])
    rows = np.full(k, -1, np.int64)
    for i in range(m):
        rows[i] = ids[where[order[i]]]
    return rows


@jit
def _key(score: np.float32, position: int) -> np.int64:
    """An int64 that orders items by score, highest first, then by scan position: the score's float32 bits made
    monotone and reversed in the high 32 bits, the position in the low 32."""
    bits = np.int64(np.float32(score + np.float32(0.0)).view(np.int32))  # + 0: −0 becomes 0
    monotone = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return ((-1 - monotone) << 32) | position


@jit
def _keep_best(keys: np.ndarray, where: np.ndarray, m: int, k: int) -> tuple[int, np.float32]:
    """Keep the k best of the m buffered items (in place, in no order) and return k with the k-th best's score:
    items must beat it from now on."""
    kth = np.partition(keys[:m], k - 1)[k - 1]  # keys are distinct (positions are): exactly k are ≤ kth
    kept = 0
    for i in range(m):
        if keys[i] <= kth:
            keys[kept], where[kept], kept = keys[i], where[i], kept + 1
    monotone = -1 - (kth >> 32)
    bits = monotone ^ ((monotone >> 31) & 0x7FFFFFFF)
    return kept, np.int32(bits).view(np.float32)
