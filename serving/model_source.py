"""Resolve what to serve: a bundle folder, or a registered model version fetched from MLflow."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from feed.bundle import Bundle, load_bundle
from feed.errors import ArtifactError
from feed.live import LiveUsers, extend_catalog
from feed.store.store import EventStore
from feed.paths import resolve_tracking_uri
from feed.service import FeedService, UserSignals
from serving.settings import ServingSettings


@dataclass(frozen=True)
class LoadedModel:
    """A ready feed service and where it came from."""

    service: FeedService
    version: str
    source: str
    load_seconds: float = 0.0  # how long loading took (bundle, indexes, catalog overlay)
    loaded_at: float = 0.0  # epoch seconds


def load_model(settings: ServingSettings, store: EventStore | None = None) -> LoadedModel:
    """Load and check the configured bundle; errors name the file or the registry entry."""
    start = time.perf_counter()
    if settings.bundle is not None:
        bundle = load_bundle(settings.bundle)
        model = _loaded(bundle, bundle.bundle_id, str(settings.bundle), settings, store)
    else:
        folder, version = fetch_registered(settings.source, settings.tracking_uri, settings.cache_dir)
        model = _loaded(load_bundle(folder), version, settings.source, settings, store)
    return replace(model, load_seconds=time.perf_counter() - start, loaded_at=time.time())


def target_version(settings: ServingSettings) -> str:
    """The version the source names right now (cheap: reads a manifest or asks the registry)."""
    if settings.bundle is not None:
        from feed.bundle import read_manifest

        return str(read_manifest(settings.bundle)["bundle_id"])
    name, alias = parse_model_uri(settings.source)
    return f"{name}/{_registry_version(name, alias, settings.source, settings.tracking_uri).version}"


def _registry_version(name: str, alias: str, uri: str, tracking_uri: str | None) -> Any:
    """The registered version an alias points at, errors naming the URI and the store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    store = resolve_tracking_uri(tracking_uri)
    try:
        return mlflow.MlflowClient(store).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ArtifactError(f"cannot resolve {uri} in the MLflow store {store}: {exc.message}. Train and register "
                            "a model with `feed train --data DIR`, or serve a folder with --bundle DIR") from exc


def _loaded(bundle: Bundle, version: str, source: str, settings: ServingSettings,
            store: EventStore | None) -> LoadedModel:
    """Wrap a bundle into a service: with a store, over its catalog and with real-time user state."""
    if store is None:
        return LoadedModel(FeedService(bundle, settings.feed_config(), version), version, source)
    current = store.catalog()
    catalog = extend_catalog(bundle.catalog, current.videos, current.products)
    live = LiveUsers(bundle, catalog, store, settings.live_cache_size)
    service = FeedService(bundle, settings.feed_config(), version, catalog, live, user_signals(store, settings))
    return LoadedModel(service, version, source)


def user_signals(store: EventStore, settings: ServingSettings) -> UserSignals:
    """The store reads a feed request makes: follows, blocks and (when enabled) recent impressions."""
    hours = settings.recent_impression_hours

    def recently_shown(user_id: str) -> list[str]:
        return store.recent_impressions(user_id, int(time.time() * 1000 - hours * 3_600_000))

    return UserSignals(follows=store.follows_of, blocks=store.blocks_of,
                       recently_shown=recently_shown if hours > 0 else None)


def parse_model_uri(uri: str) -> tuple[str, str]:
    """('name', 'alias') from 'models:/name@alias'."""
    body = uri.removeprefix("models:/")
    name, sep, alias = body.partition("@")
    if not uri.startswith("models:/") or not sep or not name or not alias:
        raise ArtifactError(f"expected a model URI like models:/NAME@ALIAS, got {uri!r}")
    return name, alias


def fetch_registered(uri: str, tracking_uri: str | None, cache_dir: Path) -> tuple[Path, str]:
    """Download the version an alias points at into the cache (once); returns (folder, 'name/version')."""
    name, alias = parse_model_uri(uri)
    store = resolve_tracking_uri(tracking_uri)
    version = _registry_version(name, alias, uri, tracking_uri)
    target = Path(cache_dir) / name / f"v{version.version}"
    if not (target / "manifest.json").is_file():
        _download(version.source, target, store)
    return target, f"{name}/{version.version}"


def _download(source: str, target: Path, store: str) -> None:
    """Copy a version's artifacts into `target` atomically (a temp folder renamed into place)."""
    import mlflow

    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=store)
    except Exception as exc:  # MLflow raises several types for missing or unreachable artifacts
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArtifactError(f"cannot download the model artifacts: {exc}", path=source) from exc
    shutil.rmtree(target, ignore_errors=True)
    Path(local).rename(target)  # MLflow nests the folder under its own name inside dst_path
    shutil.rmtree(tmp, ignore_errors=True)
