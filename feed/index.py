"""Maximum-inner-product search over item vectors with any FAISS index named by a factory string.

Items are scaled by 1/M (M = the largest item norm) and augmented with one extra coordinate sqrt(1 − ‖x/M‖²);
queries are scaled to unit length and augmented with 0. L2 nearest neighbours are then exactly the largest inner
products (Bachrach et al., 2014): ‖q̂ − x̂‖² = 2 − 2·q·x/(‖q‖·M). Plain inner-product IVF recalls poorly on
matrix-factorization vectors, whose norms carry popularity; after the transform IVF and HNSW behave as they do
on L2 data. Scores returned are the recovered inner products.

Why scale: without it distances are ‖q‖² + M² − 2q·x. With M² ~ 256 (one very popular video) and query norms
~0.01, neighbouring scores at rank 100 differ by ~3 float32 steps of that distance, so even `Flat` misorders
near-ties (recall@100 0.983 at 1M items) and k-means and HNSW lose the structure (IVF1024 0.65 at nprobe=16,
0.98 once scaled; `benchmarks/bench_index.py`). Bundles written before the scaling (no `index_scaled` in their
manifest) are read and searched the old way.

FAISS trains, fills, writes and reads every index and answers batched searches. A single query of the request path
(`nearest`) on an `IVF…,Flat` index is scanned by `feed.kernels.ivf`, over the index's own centroids and lists
copied into one array each (see `nearest`); a feed's three searches go to that kernel in one call
(`feed.candidates.CandidateSources`, `feed.kernels.ivf.nearest_three`).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from feed.errors import ArtifactError, ConfigError
from feed.kernels import ivf


class VectorIndex:
    """A FAISS index over (n_items, dim) vectors answering top-k inner-product queries."""

    def __init__(self, index: object, max_sq_norm: float, factory: str, search_params: str = "",
                 scaled: bool = True) -> None:
        self.index = index
        self.max_sq_norm = float(max_sq_norm)
        self.factory = factory
        self.search_params = search_params
        self.scaled = scaled  # False: an index of a bundle written before the 1/M scaling
        self._ntotal = int(index.ntotal)  # the index is complete when wrapped (read, or built then added)
        self._search_c, self._d = index.search_c, int(index.d)  # SWIG lookups, made once for `nearest`
        if search_params:
            _apply_search_params(index, search_params)
        self._lists: tuple[ivf.Lists, int] | None = None  # `nearest`'s copy of an IVF-Flat index's lists, nprobe
        self._lists_lock = threading.Lock()
        # `nearest` scans it with `feed.kernels.ivf`: an IVF-Flat index searched with nprobe alone (the kernel
        # honours no other search parameter)
        self._compiled = scaled and _is_ivf_flat(index) and _only_nprobe(search_params)

    @property
    def ntotal(self) -> int:
        """Number of indexed items."""
        return self._ntotal

    @property
    def dim(self) -> int:
        """Dimension of the item vectors (without the extra coordinate)."""
        return int(self.index.d) - 1

    @classmethod
    def build(cls, vectors: np.ndarray, factory: str = "Flat", search_params: str = "") -> VectorIndex:
        """Train, add and return an index over (n_items, dim) vectors."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float64)
        sq_norms = np.einsum("ij,ij->i", vectors, vectors)  # (n_items,)
        max_sq = float(sq_norms.max(initial=0.0))
        scale = 1.0 / np.sqrt(max_sq) if max_sq > 0 else 1.0
        extra = np.sqrt(np.maximum(1.0 - sq_norms * scale**2, 0.0))[:, None]  # (n_items, 1)
        data = np.hstack([vectors * scale, extra]).astype(np.float32)
        index = _make_index(faiss, data.shape[1], factory)
        if not index.is_trained:
            _train(index, data, factory)
        if "IDMap" in factory:  # ids are the item rows, so results read the same either way
            index.add_with_ids(data, np.arange(len(data), dtype=np.int64))
        else:
            index.add(data)
        return cls(index, max_sq, factory, search_params)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item rows and inner products for (n, dim) queries; -1 / -inf pad missing slots."""
        queries = np.atleast_2d(queries)
        k = max(1, min(k, self.ntotal))
        if not self.scaled:
            return self._search_unscaled(np.ascontiguousarray(queries, dtype=np.float32), k)
        n, dim = queries.shape
        unit = np.zeros((n, dim + 1), dtype=np.float32)  # the queries at unit length, augmented with 0
        unit[:, :dim] = queries
        norms = np.sqrt(np.einsum("ij,ij->i", unit, unit))[:, None]  # (n, 1)
        unit /= np.maximum(norms, 1e-30)
        dist, rows = self.index.search(unit, k)  # (n, k)
        empty = rows < 0
        padded = bool(empty.any())
        if padded:
            dist[empty] = 2.0  # their slots hold FLT_MAX, which would overflow below
        dist *= -0.5  # scores = (2 − dist)/2 · ‖q‖ · M, in place
        dist += 1.0
        dist *= norms * np.float32(np.sqrt(self.max_sq_norm))
        if padded:
            dist[empty] = -np.inf
        return rows, dist

    def nearest(self, vector: np.ndarray, k: int) -> np.ndarray:
        """(≤ k,) int64 rows of the items with the largest inner product with one (dim,) vector, best first: `search`
        for one query on the request path, without the scores and the wrapper's per-call checks. A scaled
        `IVF…,Flat` index searched with nprobe alone is scanned by `feed.kernels.ivf` over a copy of its lists
        (`prepare`): the same probes and the same items as FAISS's search, in 0.77–0.97× its time; items whose
        scores differ only by rounding may come in another order."""
        from faiss import swig_ptr

        k = max(1, min(k, self._ntotal))
        if not self.scaled:
            rows = self._search_unscaled(np.atleast_2d(vector).astype(np.float32), k)[0]
            return rows[0][rows[0] >= 0]
        if self._compiled:
            lists, nprobe = self._lists or self.prepare()
            return ivf.search(lists, np.ascontiguousarray(vector, dtype=np.float32), nprobe, k)
        query = np.zeros(self._d, dtype=np.float32)
        query[:-1] = vector
        query *= 1.0 / max(math.sqrt(float(query.dot(query))), 1e-30)
        dist, rows = np.empty(k, dtype=np.float32), np.empty(k, dtype=np.int64)
        self._search_c(1, swig_ptr(query), k, swig_ptr(dist), swig_ptr(rows), None)
        return rows if rows[-1] >= 0 else rows[rows >= 0]

    def prepare(self) -> tuple[ivf.Lists, int]:
        """Copy an IVF-Flat index's lists for `nearest` (made on its first call otherwise; a server calls this
        before its first request: under a second and the lists' size again in memory at 1M items) and compile
        or load its kernel. Only for indexes `nearest` scans itself. The copy and the nprobe are those of the
        index when this runs: a `VectorIndex` is complete when made, and its index must not change after."""
        with self._lists_lock:  # threads making their first search at once copy the lists once
            if self._lists is None:
                lists = _flat_lists(self.index)
                ivf.search(lists[0], np.zeros(self._d - 1, dtype=np.float32), lists[1], 1)
                self._lists = lists
        return self._lists

    @property
    def compiled(self) -> bool:
        """True when `nearest` scans the index with `feed.kernels.ivf` (a scaled `IVF…,Flat` index searched with
        nprobe alone)."""
        return self._compiled

    def neighbours(self, vectors: np.ndarray, k: int, batch: int = 16_384) -> np.ndarray:
        """(n, k) int32 rows of each vector's k nearest items by inner product, as `search` finds them, -1 padded;
        the rows of zero vectors (items nobody interacted with) are all -1: they have no direction to follow."""
        out = np.full((len(vectors), k), -1, dtype=np.int32)
        for lo in range(0, len(vectors), batch):
            part = np.asarray(vectors[lo:lo + batch])
            rows, _ = self.search(part, k)
            live = np.einsum("ij,ij->i", part, part) > 0
            out[lo:lo + len(part), :rows.shape[1]] = np.where(live[:, None], rows, -1)
        return out

    def _search_unscaled(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search an index of the first bundle format: items augmented with sqrt(M² − ‖x‖²), unscaled."""
        padded = np.hstack([queries, np.zeros((len(queries), 1), dtype=np.float32)])
        dist, rows = self.index.search(padded, k)  # both (n, k)
        dist = np.where(rows >= 0, dist, 0.0)  # empty slots hold FLT_MAX
        q_sq = np.einsum("ij,ij->i", queries, queries)[:, None]
        scores = (q_sq + self.max_sq_norm - dist) / 2.0
        return rows, np.where(rows >= 0, scores, -np.inf).astype(np.float32)

    def write(self, path: Path) -> None:
        """Write the index in FAISS's native format."""
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def read(cls, path: Path, max_sq_norm: float, factory: str, search_params: str = "",
             scaled: bool = True) -> VectorIndex:
        """Read an index written by `write`; errors name the file."""
        import faiss

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ArtifactError(f"not a readable FAISS index ({exc})", path=str(path)) from exc
        return cls(index, max_sq_norm, factory, search_params, scaled)


def _is_ivf_flat(index: object) -> bool:
    """True for an L2 `IndexIVFFlat` with a flat L2 quantizer (what `feed.kernels.ivf` scans the way FAISS does)."""
    import faiss

    index = faiss.downcast_index(index)
    if type(index) is not faiss.IndexIVFFlat or index.metric_type != faiss.METRIC_L2:
        return False
    quantizer = faiss.downcast_index(index.quantizer)
    return isinstance(quantizer, faiss.IndexFlat) and quantizer.metric_type == faiss.METRIC_L2


def _only_nprobe(params: str) -> bool:
    """True when the search parameters set nothing but nprobe (or nothing)."""
    return all(part.split("=")[0].strip() == "nprobe" for part in params.split(",") if part.strip())


def _flat_lists(index: object) -> tuple[ivf.Lists, int]:
    """An IVF-Flat index's centroids and lists copied into one array each, and its nprobe."""
    import faiss

    index = faiss.downcast_index(index)
    lists, d = index.invlists, int(index.d)
    sizes = np.array([lists.list_size(i) for i in range(index.nlist)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    vectors, ids = np.empty((int(starts[-1]), d), dtype=np.float32), np.empty(int(starts[-1]), dtype=np.int64)
    for i in np.flatnonzero(sizes).tolist():
        n, at = int(sizes[i]), slice(int(starts[i]), int(starts[i + 1]))
        codes, rows = lists.get_codes(i), lists.get_ids(i)
        vectors[at] = faiss.rev_swig_ptr(codes, n * d * 4).view(np.float32).reshape(n, d)
        ids[at] = faiss.rev_swig_ptr(rows, n)
        lists.release_codes(i, codes)  # no-ops for lists held in memory, a release for those that allocate
        lists.release_ids(i, rows)
    centroids = index.quantizer.reconstruct_n(0, index.nlist).astype(np.float32)
    return ivf.Lists(np.ascontiguousarray(centroids), vectors, ids, starts), int(index.nprobe)


def _make_index(faiss: object, dim: int, factory: str) -> object:
    """An empty L2 index from a factory string, with a clear error for a bad string."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_L2)
    except RuntimeError as exc:
        raise ConfigError(f"index.factory {factory!r} is not a valid FAISS factory string: {exc}") from exc


def _train(index: object, data: np.ndarray, factory: str) -> None:
    """Train an index that needs it, explaining when there are too few vectors."""
    try:
        index.train(data)
    except RuntimeError as exc:
        raise ConfigError(f"index.factory {factory!r} cannot be trained on {len(data)} vectors: {exc}") from exc


def _apply_search_params(index: object, params: str) -> None:
    """Set search-time parameters such as 'nprobe=16' or 'efSearch=128'."""
    import faiss

    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as exc:
        raise ConfigError(f"index.search_params {params!r} do not apply to this index: {exc}") from exc


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows by inner product (the reference that recall is measured against)."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return rows


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k rows that an approximate search found."""
    hits = [len(np.intersect1d(a[a >= 0], b)) for a, b in zip(found, exact, strict=True)]
    return float(np.sum(hits) / exact.size)
