"""The two-tower model's contract without training: shapes, filtering, shared tables, numpy = torch, artifacts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.dataset import build_catalog
from feed.errors import ArtifactError, ConfigError
from feed.models.two_tower import ItemFeatures, TwoTowerParams, TwoTowerRecommender, fold_in, price_bucket


def random_matrix(n_users: int = 30, n_items: int = 25, density: float = 0.2, seed: int = 0) -> sp.csr_matrix:
    return sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32,
                     data_rvs=lambda n: np.random.default_rng(seed).integers(1, 5, n).astype(np.float32))


def untrained(matrix: sp.csr_matrix, features: ItemFeatures | None = None, seed: int = 0,
              params: TwoTowerParams = TwoTowerParams(dim=8)) -> TwoTowerRecommender:
    """A model with freshly initialized (random) weights: enough for the contract."""
    torch.manual_seed(seed)
    model = TwoTowerRecommender(params, features)
    net = model.build(*matrix.shape)
    with torch.no_grad():  # a non-identity history map, so numpy and torch paths are really compared
        net.history.weight.add_(0.3 * torch.randn_like(net.history.weight))
    model.finalize(matrix)
    return model


@pytest.fixture(scope="module")
def world_model(small_world):
    catalog = build_catalog(small_world.dataset)
    n_users, n_items = 40, len(catalog.videos)
    matrix = random_matrix(n_users, n_items, density=0.02, seed=3)
    return untrained(matrix, ItemFeatures.from_catalog(catalog, 4)), matrix, catalog


def test_recommend_shapes_padding_and_filtering():
    matrix = random_matrix()
    model = untrained(matrix)
    ids, scores = model.recommend(np.arange(5), matrix[:5], N=7)
    assert ids.shape == scores.shape == (5, 7)
    assert np.all(np.diff(scores, axis=1) <= 0)
    for row in range(5):
        assert not set(ids[row]) & set(matrix[row].indices)
    one, one_scores = model.recommend(2, matrix[2], N=4)
    assert one.shape == one_scores.shape == (4,)
    np.testing.assert_array_equal(one, ids[2, :4])
    kept, _ = model.recommend(2, matrix[2], N=4, filter_already_liked_items=False)
    assert np.allclose(np.sort(_)[::-1], _) and len(kept) == 4
    full = sp.csr_matrix(np.ones((1, matrix.shape[1]), np.float32))
    padded, padded_scores = model.recommend(0, full, N=3)
    np.testing.assert_array_equal(padded, [-1, -1, -1])
    assert np.all(np.isneginf(padded_scores))


def test_numpy_fold_in_equals_the_torch_user_tower():
    matrix = random_matrix()
    model = untrained(matrix)
    rows = np.array([0, 3, 7])
    history = matrix[rows]
    weights = history.data / np.repeat(np.asarray(history.sum(axis=1)).ravel(), np.diff(history.indptr))
    owner = np.repeat(np.arange(len(rows)), np.diff(history.indptr))
    net = model.net
    with torch.no_grad():
        pooled = net.pooled(torch.from_numpy(history.indices.astype(np.int64)),
                            torch.from_numpy(weights.astype(np.float32)), torch.from_numpy(owner), len(rows))
        expected = net.user_tower(torch.from_numpy(rows), torch.ones(len(rows)), pooled).numpy()
        history_only = net.user_tower(torch.from_numpy(rows), torch.zeros(len(rows)), pooled).numpy()
    np.testing.assert_allclose(model.user_vectors_from_history(history, rows), expected, atol=1e-5)
    np.testing.assert_allclose(model.export().users[rows], expected, atol=1e-5)
    np.testing.assert_allclose(model.user_vectors_from_history(history), history_only, atol=1e-5)


def test_unknown_rows_are_scored_from_history_alone():
    matrix = random_matrix()
    model = untrained(matrix)
    history = matrix[[4]]
    ids, _ = model.recommend(999, history, N=5, recalculate_user=True)
    expected = fold_in(model.export(), history) @ model.export().items.T
    expected[0, history.indices] = -np.inf
    np.testing.assert_array_equal(ids, np.argsort(-expected[0], kind="stable")[:5])


def test_item_vectors_sum_the_shared_feature_rows(world_model):
    model, _, catalog = world_model
    net, features = model.net, model.features
    assert list(features.fields) == ["creator", "product", "category", "price"]
    table, offsets = net.features.weight.detach().numpy(), features.offsets()
    video = int(np.flatnonzero(catalog.video_product >= 0)[0])
    creator, product = catalog.video_creator[video], catalog.video_product[video]
    category = catalog.product_category[product]
    bucket = features.product_fields["price"][product]
    raw = table[video] + table[offsets["creator"] + creator] + table[offsets["product"] + product]
    raw = raw + table[offsets["category"] + category] + table[offsets["price"] + bucket]
    np.testing.assert_allclose(model.export().items[video], raw / np.linalg.norm(raw), atol=1e-5)
    creator_row = table[offsets["creator"] + creator]
    np.testing.assert_allclose(model.creator_vectors()[creator], creator_row / np.linalg.norm(creator_row), atol=1e-5)
    product_row = table[offsets["product"] + product] + table[offsets["category"] + category] + \
        table[offsets["price"] + bucket]
    np.testing.assert_allclose(model.product_vectors()[product], product_row / np.linalg.norm(product_row),
                               atol=1e-5)
    assert model.creator_vectors().shape == (len(catalog.creators), 8)
    assert model.product_vectors().shape == (len(catalog.products), 8)


def test_plain_matrix_has_item_ids_only():
    model = untrained(random_matrix())
    assert model.features.fields == {} and model.features.bags().shape == (25, 1)
    assert model.creator_vectors().shape == (0, 8) and model.product_vectors().shape == (0, 8)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.floats(0.01, 1e4), st.just(float("nan"))), min_size=1, max_size=40),
       st.integers(1, 10))
def test_price_buckets_are_monotone_and_in_range(prices, n):
    buckets = price_bucket(np.array(prices), n)
    known = ~np.isnan(prices)
    assert np.all(buckets[~known] == -1)
    assert np.all((buckets[known] >= 0) & (buckets[known] < n))
    order = np.argsort(np.array(prices)[known])
    assert np.all(np.diff(buckets[known][order]) >= 0)


def test_similar_items_start_with_the_item_itself():
    model = untrained(random_matrix())
    ids, scores = model.similar_items(np.array([3, 5]), N=4)
    np.testing.assert_array_equal(ids[:, 0], [3, 5])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_save_load_round_trip_gives_equal_scores(world_model, tmp_path):
    model, matrix, _ = world_model
    model.save(tmp_path / "tt")
    loaded = TwoTowerRecommender.load(tmp_path / "tt")
    assert loaded.params == model.params and loaded.features.sizes == model.features.sizes
    rows = np.arange(matrix.shape[0])
    np.testing.assert_array_equal(loaded.score(rows), model.score(rows))
    for name in ("items", "users", "creators", "products", "history", "user_ids"):
        np.testing.assert_array_equal(getattr(loaded.export(), name), getattr(model.export(), name))
    np.testing.assert_array_equal(loaded.recommend(rows, matrix, N=5)[0], model.recommend(rows, matrix, N=5)[0])


def test_load_refuses_tampered_files_naming_them(tmp_path):
    model = untrained(random_matrix())
    folder = tmp_path / "tt"
    model.save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())

    def reload(change: dict) -> None:
        (folder / "manifest.json").write_text(json.dumps({**manifest, **change}))
        TwoTowerRecommender.load(folder)

    with pytest.raises(ArtifactError, match=r"manifest.json: declared shapes .* contradict"):
        reload({"params": {**manifest["params"], "dim": 16}})
    with pytest.raises(ArtifactError, match=r"manifest.json: declared shapes"):
        reload({"n_items": 26})
    with pytest.raises(ArtifactError, match=r"manifest.json: not a two-tower/1 manifest"):
        reload({"format": "pickle"})
    with pytest.raises(ArtifactError, match=r"model.pt: SHA-256 differs"):
        reload({"sha256": {"model.pt": "0" * 64}})
    reload({})  # the original manifest loads
    (folder / "model.pt").write_bytes((folder / "model.pt").read_bytes()[:-7] + b"garbage")
    with pytest.raises(ArtifactError, match=r"model.pt: SHA-256 differs"):
        reload({})
    (folder / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest.json: cannot read"):
        TwoTowerRecommender.load(folder)


def test_mismatched_tensors_name_the_model_file(tmp_path):
    first, second = untrained(random_matrix()), untrained(random_matrix(30, 26))
    first.save(tmp_path / "a")
    second.save(tmp_path / "b")
    (tmp_path / "a" / "model.pt").write_bytes((tmp_path / "b" / "model.pt").read_bytes())
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    manifest["sha256"] = json.loads((tmp_path / "b" / "manifest.json").read_text())["sha256"]
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"model.pt: tensor shapes"):
        TwoTowerRecommender.load(tmp_path / "a")


def test_fit_without_a_trainer_says_what_is_missing():
    with pytest.raises(ConfigError, match="needs a trainer"):
        TwoTowerRecommender().fit(random_matrix())
    with pytest.raises(ConfigError, match="not trained"):
        TwoTowerRecommender().export()


def test_importing_the_model_module_loads_no_torch():
    code = "import sys, feed.models.two_tower; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_repeat_bonus_puts_unmasked_history_items_first(tmp_path):
    matrix = random_matrix()
    model = untrained(matrix, params=TwoTowerParams(dim=8, repeat=2.0))
    nothing_masked = sp.csr_matrix(matrix.shape, dtype=np.float32)
    rows = np.arange(matrix.shape[0])
    ids, _ = model.recommend(rows, nothing_masked, N=matrix.shape[1])
    for row in rows:
        n = matrix[row].nnz
        assert set(ids[row, :n]) == set(matrix[row].indices)
    model.save(tmp_path / "m")
    loaded = TwoTowerRecommender.load(tmp_path / "m")
    assert (loaded.known_history != (matrix > 0)).nnz == 0
    np.testing.assert_array_equal(loaded.recommend(rows, nothing_masked, N=5)[0],
                                  model.recommend(rows, nothing_masked, N=5)[0])
    plain = untrained(matrix)  # repeat 0: history items are not promoted
    plain_ids, _ = plain.recommend(rows, nothing_masked, N=3)
    assert any(not set(plain_ids[r]) <= set(matrix[r].indices) for r in rows)
