"""Bundle round trip, hash checks and cross-file invariants."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from feed.bundle import load_bundle
from feed.errors import ArtifactError


@pytest.fixture
def bundle_copy(small_bundle_dir, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(small_bundle_dir, target)
    return target


def test_round_trip_keeps_arrays_and_provenance(small_bundle_dir):
    bundle = load_bundle(small_bundle_dir)
    manifest = bundle.manifest
    assert set(bundle.relations) == {"video", "creator", "product"}
    assert manifest["config_digest"] and manifest["data_window"]["n_events"] > 0
    assert manifest["library_versions"]["implicit"] != "not installed"
    assert manifest["metrics"]["video.als.recall@20"] >= 0
    video = bundle.relations["video"]
    assert video.index.ntotal == len(bundle.catalog.videos) == video.item_factors.shape[0]
    again = load_bundle(small_bundle_dir)
    np.testing.assert_array_equal(again.relations["video"].user_factors, video.user_factors)
    assert again.bundle_id == bundle.bundle_id


@pytest.mark.parametrize("name", ["factors_video.npz", "index_creator.faiss", "users.parquet", "seen.npz"])
def test_a_corrupted_file_is_named(bundle_copy, name):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=name) as info:
        load_bundle(bundle_copy)
    assert "sha256 mismatch" in str(info.value) and info.value.path.endswith(name)


def test_missing_file_and_missing_manifest_are_named(bundle_copy):
    (bundle_copy / "index_video.faiss").unlink()
    with pytest.raises(ArtifactError, match="index_video.faiss.*missing"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json.*not a model bundle"):
        load_bundle(bundle_copy)


def test_consistent_hashes_but_wrong_dimensions_are_caught(bundle_copy):
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["relations"]["video"]["dim"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="factors_video.npz.*do not match"):
        load_bundle(bundle_copy)


def test_invalid_manifest_json_is_named(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json: not valid JSON"):
        load_bundle(bundle_copy)
