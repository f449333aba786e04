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
