"""FAISS indexes from factory strings, measured for recall against an exact Flat index."""

from __future__ import annotations

import numpy as np
import pytest

from feed.errors import ArtifactError, ConfigError
from feed.index import VectorIndex, exact_top_k, recall_at_k


def clustered(n: int, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors in 25 clusters with popularity-like norms, and queries near the clusters."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(25, dim))
    items = centers[rng.integers(0, 25, n)] + 0.3 * rng.normal(size=(n, dim))
    items *= rng.lognormal(0.0, 0.5, size=(n, 1))
    queries = centers[rng.integers(0, 25, 300)] + 0.3 * rng.normal(size=(300, dim))
    return items.astype(np.float32), queries.astype(np.float32)


@pytest.mark.parametrize(("factory", "params", "floor"), [
    ("Flat", "", 1.0),
    ("IDMap2,Flat", "", 1.0),
    ("HNSW32", "efSearch=256", 0.95),
    ("IVF64,Flat", "nprobe=16", 0.95),
])
def test_recall_against_exact_inner_product(factory, params, floor):
    items, queries = clustered(6000)
    index = VectorIndex.build(items, factory, params)
    found, _ = index.search(queries, 20)
    assert recall_at_k(found, exact_top_k(queries, items, 20)) >= floor


def test_scores_are_inner_products():
    items, queries = clustered(500)
    found, scores = VectorIndex.build(items, "Flat").search(queries[:10], 5)
    expected = np.take_along_axis(queries[:10] @ items.T, found, axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)


def test_write_read_round_trip(tmp_path):
    items, queries = clustered(500)
    index = VectorIndex.build(items, "HNSW32", "efSearch=64")
    index.write(tmp_path / "i.faiss")
    again = VectorIndex.read(tmp_path / "i.faiss", index.max_sq_norm, "HNSW32", "efSearch=64")
    np.testing.assert_array_equal(again.search(queries, 10)[0], index.search(queries, 10)[0])


def test_bad_factory_and_untrainable_index_are_config_errors():
    items, _ = clustered(50)
    with pytest.raises(ConfigError, match="not a valid FAISS factory"):
        VectorIndex.build(items, "NoSuchIndex")
    with pytest.raises(ConfigError, match="cannot be trained on 50 vectors"):
        VectorIndex.build(items, "IVF1024,Flat")


def test_unreadable_index_names_the_file(tmp_path):
    path = tmp_path / "broken.faiss"
    path.write_bytes(b"not an index")
    with pytest.raises(ArtifactError, match="broken.faiss"):
        VectorIndex.read(path, 1.0, "Flat")


def test_tiny_queries_and_one_huge_item_norm_keep_exact_order():
    # the scale that broke the unscaled transform at 1M items: max item norm 16, query norms ~0.01
    rng = np.random.default_rng(3)
    items = rng.normal(size=(20_000, 32)).astype(np.float32) * 0.05
    items[0] *= 16 / np.linalg.norm(items[0])
    queries = rng.normal(size=(50, 32)).astype(np.float32) * 0.002
    found, _ = VectorIndex.build(items, "Flat").search(queries, 100)
    assert recall_at_k(found, exact_top_k(queries, items, 100)) > 0.999


def test_indexes_of_the_first_bundle_format_are_still_searched_right():
    import faiss

    rng = np.random.default_rng(4)
    items = rng.normal(size=(500, 8)).astype(np.float32)
    sq = np.einsum("ij,ij->i", items, items)
    legacy = faiss.IndexFlatL2(9)
    legacy.add(np.hstack([items, np.sqrt(sq.max() - sq)[:, None]]).astype(np.float32))
    index = VectorIndex(legacy, float(sq.max()), "Flat", scaled=False)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    rows, scores = index.search(queries, 10)
    np.testing.assert_array_equal(rows, exact_top_k(queries, items, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, rows, axis=1), rtol=1e-4, atol=1e-4)


def test_nearest_is_search_for_one_vector():
    rng = np.random.default_rng(4)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    index = VectorIndex.build(items, "Flat")
    for vector in rng.normal(size=(5, 8)).astype(np.float32):
        rows, _ = index.search(vector, 20)
        assert index.nearest(vector, 20).tolist() == rows[0].tolist()
    assert len(index.nearest(items[0], 1000)) == 300  # k is capped at the number of items


@pytest.mark.parametrize(("factory", "params"), [("IVF64,Flat", "nprobe=16"), ("IVF32,Flat", "nprobe=32"),
                                                 ("IVF16,Flat", "nprobe=1"), ("IVF8,Flat", "nprobe=20")])
def test_ivf_flat_nearest_is_faiss_search_compiled(factory, params):
    """`nearest` scans IVF-Flat lists itself (`feed.kernels.ivf`): the same probes and the same best items as
    FAISS's own search, best first; where the two orders differ, the items there score the same (near-ties whose
    L2 and inner-product roundings disagree)."""
    items, queries = clustered(6000, dim=16, seed=5)
    index = VectorIndex.build(items, factory, params)
    assert index.compiled
    exact_orders = 0
    for k in (1, 60, 200):
        for vector in queries[:60]:
            rows, _ = index.search(vector, k)
            expected = rows[0][rows[0] >= 0]
            found = index.nearest(vector, k)
            assert found.dtype == np.int64
            assert sorted(found.tolist()) == sorted(expected.tolist())
            exact = items.astype(np.float64) @ vector.astype(np.float64)
            np.testing.assert_allclose(exact[found], exact[expected], rtol=1e-5, atol=1e-6)  # position by position
            exact_orders += found.tolist() == expected.tolist()
    assert exact_orders >= 170  # of 180: the order differs only at rare near-ties


def test_ivf_flat_nearest_is_searched_by_faiss_with_other_search_params():
    """The kernel honours nprobe alone: with any other search parameter FAISS searches."""
    items, queries = clustered(3000, dim=8, seed=10)
    index = VectorIndex.build(items, "IVF32,Flat", "nprobe=4,max_codes=200")
    assert not index.compiled
    for vector in queries[:10]:
        rows, _ = index.search(vector, 40)
        assert index.nearest(vector, 40).tolist() == rows[0][rows[0] >= 0].tolist()


def test_ivf_flat_nearest_with_fewer_items_than_k_in_its_lists():
    items, queries = clustered(500, dim=8, seed=6)
    index = VectorIndex.build(items, "IVF16,Flat", "nprobe=1")
    for vector in queries[:20]:
        rows, _ = index.search(vector, 400)
        found = index.nearest(vector, 400)
        assert 0 < len(found) < 400 and (found >= 0).all()  # the one probed list holds fewer than k
        assert sorted(found.tolist()) == sorted(rows[0][rows[0] >= 0].tolist())


def test_ivf_flat_nearest_keeps_the_first_scanned_of_equal_items():
    """Equal vectors (never-viewed items all have the same augmented vector) tie: the kernel keeps the first
    scanned, best first, so the same query always gets the same rows. Enough ties to fill the kernel's buffer
    (2k), so that the bar it raises after a partition decides which ties stay; an empty list is probed too, and
    nprobe is larger than the number of lists."""
    from feed.kernels import ivf

    rng = np.random.default_rng(7)
    near = rng.normal(size=(50, 4)).astype(np.float32) * 0.1 + np.array([1, 0, 0, 0], np.float32)
    equal = np.tile(np.array([0, 1, 0, 0], np.float32), (300, 1))
    vectors = np.vstack([near, equal])
    ids = np.concatenate([np.arange(50), 1000 + np.arange(300)[::-1]]).astype(np.int64)  # ties' ids descending
    centroids = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32)
    starts = np.array([0, 50, 350, 350], np.int64)  # the third list is empty
    query = np.array([0.8, 0.6, 0, 0], np.float32)  # list 0 is probed first (nearer), then the equal vectors
    assert ivf.probes(centroids, query, 5).tolist() == [0, 1, 2]
    scores = np.concatenate([near @ query, equal @ query])
    tie = np.float32(0.6)
    best_near = np.argsort(-scores[:50], kind="stable")
    above = [int(i) for i in best_near if scores[i] > tie]  # the near items that beat the ties
    below = [int(i) for i in best_near if scores[i] < tie]
    expected = above + [1000 + 299 - i for i in range(300)] + below  # ties in scan order, then the rest
    for k in (60, 100):
        assert len(above) < k < len(above) + 300 and 2 * k < 350  # only some ties fit; the buffer fills
        assert ivf.nearest(centroids, vectors, ids, starts, query, 5, k).tolist() == expected[:k]
    assert ivf.nearest(centroids, vectors, ids, starts, query, 0, 5).tolist() == [-1] * 5  # nprobe 0: no list


@pytest.mark.parametrize(("factory", "params"), [("Flat", ""), ("HNSW16", "efSearch=64"), ("IVF16,SQ8", "nprobe=4"),
                                                 ("IDMap2,Flat", "")])
def test_other_indexes_are_searched_by_faiss(factory, params):
    items, queries = clustered(2000, dim=8, seed=8)
    index = VectorIndex.build(items, factory, params)
    assert not index.compiled
    for vector in queries[:10]:
        rows, _ = index.search(vector, 30)
        assert index.nearest(vector, 30).tolist() == rows[0].tolist()


def test_a_read_ivf_flat_index_is_compiled_with_its_search_params(tmp_path):
    items, queries = clustered(3000, dim=8, seed=9)
    built = VectorIndex.build(items, "IVF32,Flat", "nprobe=3")
    built.write(tmp_path / "index.faiss")
    read = VectorIndex.read(tmp_path / "index.faiss", built.max_sq_norm, "IVF32,Flat", "nprobe=3")
    assert read.compiled and read.prepare()[1] == 3
    for vector in queries[:20]:
        rows, _ = built.search(vector, 50)
        assert sorted(read.nearest(vector, 50).tolist()) == sorted(rows[0].tolist())


def test_nearest_three_makes_the_three_searches_of_nearest_in_one_call():
    """The feed's one call for its three searches gives each index's `nearest` rows, in order; a search with no
    vector or k 0 gives none, and k is capped at the number of items."""
    from feed.kernels import ivf

    built = [VectorIndex.build(*clustered(n, dim=dim, seed=seed)[:1], factory, params) for n, dim, seed, factory,
             params in ((4000, 16, 11, "IVF32,Flat", "nprobe=6"), (300, 8, 12, "IVF8,Flat", "nprobe=8"),
                        (2000, 12, 13, "IVF16,Flat", "nprobe=3"))]
    rng = np.random.default_rng(14)
    for k in (1, 50, 500):
        vectors = [rng.normal(size=index.dim).astype(np.float32) for index in built]
        queries = [ivf.Query(*index.prepare(), vector, k) for index, vector in zip(built, vectors, strict=True)]
        found = ivf.nearest_three(*queries)
        for rows, index, vector in zip(found, built, vectors, strict=True):
            assert rows.tolist() == index.nearest(vector, k).tolist() and 0 < len(rows) <= min(k, index.ntotal)
        assert len(found[1]) == min(k, 300)  # nprobe = nlist: every item is scanned
    lists, nprobe = built[0].prepare()
    empty = ivf.nearest_three(ivf.Query(lists, nprobe, np.zeros(0, np.float32), 10),
                              ivf.Query(lists, nprobe, rng.normal(size=16).astype(np.float32), 0),
                              ivf.Query(lists, nprobe, rng.normal(size=16).astype(np.float32), 10))
    assert [len(rows) for rows in empty] == [0, 0, 10]
