"""Resolving what to serve: bundle folders, registered versions, and clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from feed.bundle import load_bundle
from feed.errors import ArtifactError
from serving.model_source import fetch_registered, load_model, parse_model_uri
from serving.settings import DEFAULT_MODEL_URI, ServingSettings
from training.config import load_config
from training.pipeline import TrainResult, track_run


def test_parse_model_uri():
    assert parse_model_uri("models:/feed@champion") == ("feed", "champion")
    for bad in ("feed@champion", "models:/feed", "models:/@x", "runs:/abc/bundle"):
        with pytest.raises(ArtifactError, match="models:/NAME@ALIAS"):
            parse_model_uri(bad)


def test_settings_default_to_the_champion_and_reject_two_sources(tmp_path):
    assert ServingSettings().source == DEFAULT_MODEL_URI
    with pytest.raises(ValidationError, match="not both"):
        ServingSettings(bundle=tmp_path, model_uri="models:/a@b")
    for quotas in ({"new_creator": 5}, {"video": -1}, {"nope": 1}):  # new_creator is a slot, not a quota
        with pytest.raises(ValidationError, match="quotas"):
            ServingSettings(quotas=quotas)
    quotas = ServingSettings(quotas={"video": 300, "session": 0}).feed_config().candidates.quotas
    assert quotas["video"] == 300 and quotas["session"] == 0 and quotas["creator"] > 0


def test_settings_read_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FEED_SERVE_BUNDLE", str(tmp_path))
    monkeypatch.setenv("FEED_SERVE_VIDEOS_PER_CREATOR", "5")
    monkeypatch.setenv("FEED_SERVE_RANK_DEPTH", "0")
    settings = ServingSettings()
    assert settings.bundle == tmp_path and settings.feed_config().candidates.videos_per_creator == 5
    assert settings.feed_config().rank_depth == 0
    monkeypatch.setenv("FEED_SERVE_RANK_DEPTH", "-1")
    with pytest.raises(ValidationError, match="rank_depth"):
        ServingSettings()


def test_fetch_registered_downloads_once_into_the_cache(small_bundle_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(overrides={"mlflow": {"tracking_uri": uri}}, environ={})
    result = TrainResult(small_bundle_dir, {"video.als.recall@20": 0.1})
    track_run(result, load_bundle(small_bundle_dir), config)
    folder, version = fetch_registered(DEFAULT_MODEL_URI, uri, tmp_path / "cache")
    assert version == "selfretail-feed/1" and (folder / "manifest.json").is_file()
    assert folder == tmp_path / "cache" / "selfretail-feed" / "v1"
    settings = ServingSettings(tracking_uri=uri, cache_dir=tmp_path / "cache")
    loaded = load_model(settings)
    assert loaded.version == version and loaded.service.bundle.bundle_id == load_bundle(small_bundle_dir).bundle_id


def test_an_unknown_alias_names_the_uri_and_the_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ArtifactError, match="models:/nope@champion.*empty.db"):
        fetch_registered("models:/nope@champion", uri, tmp_path / "cache")
