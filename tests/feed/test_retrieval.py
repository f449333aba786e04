"""The served retriever: blend vectors rank exactly as the trainer's blend, the numpy user tower, bundle checks,
and live fold-in through ALS, the two-tower model or both."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.bundle import load_bundle, write_bundle
from feed.errors import ArtifactError
from feed.live import LiveUsers, als_part
from feed.models.als import fold_in as als_fold_in
from feed.models.two_tower import TwoTowerVectors, fold_in
from feed.retrieval import Mix, Tower, kind_of
from training.blend import mixed


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), weight=st.sampled_from([0.2, 0.35, 0.5, 0.8]))
def test_blend_vectors_rank_exactly_as_the_trainers_blend(seed, weight):
    rng = np.random.default_rng(seed)
    als_users, als_items = rng.normal(size=(7, 6)), rng.normal(size=(40, 6))
    tower_users, tower_items = _unit(rng.normal(size=(7, 5))), _unit(rng.normal(size=(40, 5)))
    mix = Mix.of(weight, als_items, tower_items)
    served = mix.combine(als_users, tower_users) @ mix.items(als_items, tower_items).T  # what FAISS ranks by
    expected = mixed(als_users @ als_items.T, tower_users @ tower_items.T, weight)
    offset = served - expected  # the per-user mean the blend subtracts: constant along each row
    assert np.ptp(offset, axis=1).max() < 1e-4
    assert (np.argsort(-served, axis=1)[:, :10] == np.argsort(-expected, axis=1)[:, :10]).all()


def test_the_ends_of_the_grid_are_plain_als_and_plain_two_tower():
    rng = np.random.default_rng(0)
    als_items, tower_items = rng.normal(size=(9, 4)), _unit(rng.normal(size=(9, 3)))
    als_users, tower_users = rng.normal(size=(2, 4)), _unit(rng.normal(size=(2, 3)))
    assert Mix.of(0.0, als_items, tower_items).items(als_items, tower_items).shape == (9, 4)
    assert np.allclose(Mix.of(0.0, als_items, tower_items).combine(als_users, tower_users), als_users)
    only = Mix.of(1.0, als_items, tower_items)
    assert only.als_dim == 0 and np.allclose(only.combine(als_users, tower_users), tower_users)
    assert [kind_of(w) for w in (0.0, 0.5, 1.0)] == ["als", "blend", "two-tower"]


def test_the_numpy_tower_is_the_models_own_fold_in():
    rng = np.random.default_rng(1)
    history, ids = rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    vectors = TwoTowerVectors(np.zeros((30, 8), np.float32), np.zeros((0, 8), np.float32),
                              np.zeros((0, 8), np.float32), np.zeros((0, 8), np.float32), history, ids)
    matrix = sp.random(4, 30, density=0.2, format="csr", random_state=2, dtype=np.float32)
    rows = np.array([0, 3, -1, 7])  # a known user, another, an unknown one, one beyond the id table
    tower = Tower(history, ids)
    assert np.allclose(tower.fold(matrix, rows), fold_in(vectors, matrix, rows), atol=1e-6)
    videos = matrix[1].indices
    assert np.allclose(tower.fold_one(videos, matrix[1].data, 3), tower.fold(matrix[1], np.array([3]))[0])


@pytest.fixture(scope="module")
def bundle(small_bundle_dir):
    return load_bundle(small_bundle_dir)


def test_the_default_bundle_serves_the_retriever_chosen_on_validation(bundle):
    described = bundle.manifest["retriever"]
    assert set(described["kinds"]) == set(bundle.relations)
    for name, rel in bundle.relations.items():
        chosen = described["selection"][name]
        assert rel.mix is not None and rel.mix.weight == described["weights"][name] == chosen["weight"]
        assert "validation recall@20" in chosen["reason"] and set(chosen["candidates"]) >= {"als", "two-tower"}
    if any(rel.mix.kind != "als" for rel in bundle.relations.values()):
        assert bundle.tower is not None and bundle.tower.history.shape[0] == len(bundle.catalog.videos)


def _events(user: str, videos: list[str], event: str = "purchase") -> pd.DataFrame:
    n = len(videos)
    return pd.DataFrame({"event_id": [f"{user}-{i}" for i in range(n)], "user_id": user, "video_id": videos,
                         "event": event, "ts": pd.Timestamp("2031-01-01", tz="UTC"), "watch_ms": np.nan,
                         "product_id": None, "amount": np.nan, "via_share_id": None, "share_id": None})


class Events:
    """An in-memory event source (the store's part that LiveUsers reads)."""

    def __init__(self, events: pd.DataFrame) -> None:
        self.events = events

    def user_seq(self, user_id: str) -> int:
        return int((self.events["user_id"] == user_id).sum())

    def user_events(self, user_id: str, since=None) -> pd.DataFrame:
        return self.events[self.events["user_id"] == user_id]


def test_a_new_users_vectors_come_from_als_fold_in_and_the_numpy_tower(bundle):
    videos = [str(v) for v in bundle.catalog.videos.ids[[3, 17, 40]]]
    live = LiveUsers(bundle, bundle.catalog, Events(_events("newcomer", videos)))
    state = live.get("newcomer")
    rows = bundle.catalog.videos.rows(np.array(videos, dtype=object))
    weight = bundle.manifest["config"]["weights"]["purchase"]
    for name, rel in bundle.relations.items():
        items = {"video": rows, "creator": bundle.catalog.video_creator[rows],
                 "product": bundle.catalog.video_product[rows]}[name]
        unique, counts = np.unique(items, return_counts=True)
        als_vector = als_fold_in(als_part(rel), live.grams[name], unique, counts * weight, live.alpha,
                                 live.regularization)
        tower_vector = bundle.tower.fold_one(rows, np.full(3, weight), -1) if bundle.tower else None
        expected = rel.mix.combine(als_vector[None], None if tower_vector is None else tower_vector[None])[0]
        assert np.allclose(state.vectors[name], expected, atol=1e-5)
        found, _ = rel.index.search(state.vectors[name], 5)  # the index ranks by the same inner product
        exact = np.argsort(-(rel.item_factors @ state.vectors[name]), kind="stable")[:5]
        assert len(set(found[0]) & set(exact)) >= 4


def test_a_known_users_new_events_move_every_relations_vector(bundle):
    user = str(bundle.users.ids[0])
    new = [str(v) for v in bundle.catalog.videos.ids[-3:]]
    live = LiveUsers(bundle, bundle.catalog, Events(_events(user, new)))
    state = live.get(user)
    row = bundle.users.row(user)
    for name, rel in bundle.relations.items():
        assert not np.allclose(state.vectors[name], rel.user_factors[row])


def test_a_blend_without_its_tower_or_with_a_wrong_one_is_refused(bundle, tmp_path):
    blended = [n for n, rel in bundle.relations.items() if rel.mix.kind != "als"]
    if not blended:
        pytest.skip("validation chose ALS for every relation on this world")
    tower = bundle.tower
    bundle.tower = None
    try:
        write_bundle(bundle, tmp_path / "no-tower", {"value_formula": bundle.manifest.get("value_formula", {})})
        with pytest.raises(ArtifactError, match="needs a user tower") as info:
            load_bundle(tmp_path / "no-tower")
        assert f"factors_{blended[0]}.npz" in str(info.value) or "factors_" in str(info.value)
        bundle.tower = Tower(tower.history[:-1], tower.user_ids, tower.normalize)
        write_bundle(bundle, tmp_path / "short-tower", {})
        with pytest.raises(ArtifactError, match="tower.npz"):
            load_bundle(tmp_path / "short-tower")
    finally:
        bundle.tower = tower


def test_serving_a_two_tower_bundle_never_imports_torch(small_bundle_dir):
    script = f"""
import sys
import pandas as pd
from pathlib import Path
from feed.bundle import load_bundle
from feed.live import LiveUsers
from feed.service import FeedService
bundle = load_bundle(Path({str(small_bundle_dir)!r}))
videos = [str(v) for v in bundle.catalog.videos.ids[:4]]
events = pd.DataFrame({{"event_id": ["a", "b", "c", "d"], "user_id": "new", "video_id": videos, "event": "view",
                       "ts": pd.Timestamp("2031-01-01", tz="UTC"), "watch_ms": 5000.0, "product_id": None,
                       "amount": float("nan"), "via_share_id": None, "share_id": None}})
class Source:
    def user_seq(self, user_id): return 4 if user_id == "new" else 0
    def user_events(self, user_id, since=None): return events
service = FeedService(bundle, live=LiveUsers(bundle, bundle.catalog, Source()))
assert len(service.feed("new", limit=10, seed=1).items) == 10
assert len(service.feed(str(bundle.users.ids[0]), limit=10, seed=1).items) == 10
assert "torch" not in sys.modules, "serving imported torch"
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
