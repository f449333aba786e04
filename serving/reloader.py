"""Hot reload: load and check a new model in the background, then swap one reference atomically.

Requests read `ModelHolder.current` once, so each request is served entirely by one model; a swap is a single
attribute assignment. A version that fails to load or check is refused and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from feed.errors import FeedError
from feed.live import extend_catalog
from feed.store.store import EventStore
from serving.heap import settle
from serving.model_source import LoadedModel, load_model, target_version
from serving.settings import ServingSettings

log = logging.getLogger("serving.reload")


@dataclass(frozen=True)
class ReloadResult:
    """What one reload attempt did."""

    status: str  # "unchanged" | "reloaded" | "refused"
    version: str  # the version serving after the attempt
    target: str  # the version the source pointed at
    error: str | None = None


class ModelHolder:
    """The model currently served, and the one-at-a-time reload that replaces it."""

    def __init__(self, settings: ServingSettings, model: LoadedModel, store: EventStore | None = None,
                 catalog_seq: int = 0) -> None:
        self.settings, self.store = settings, store
        self.current = model
        self.catalog_seq = catalog_seq  # the store's catalog high-water mark the current model has seen
        self.last_error: str | None = None
        self.last_check: datetime | None = None
        self._lock = asyncio.Lock()

    async def reload(self, force: bool = False) -> ReloadResult:
        """Swap to the version the source names now, if it differs (or `force`) and loads cleanly."""
        async with self._lock:
            self.last_check = datetime.now(UTC)
            try:
                target = await asyncio.to_thread(target_version, self.settings)
            except FeedError as exc:
                return self._refused(str(exc), "unknown")
            if target == self.current.version and not force:
                return ReloadResult("unchanged", self.current.version, target)
            try:
                seq = await asyncio.to_thread(self._catalog_seq)
                model = await asyncio.to_thread(load_model, self.settings, self.store)
            except Exception as exc:  # any failure to load (not only ours: a half-copied folder…) is a refusal
                return self._refused(f"{type(exc).__name__}: {exc}" if not isinstance(exc, FeedError) else str(exc),
                                     target)
            self.current, self.last_error, self.catalog_seq = model, None, seq
            settle()  # the old model collected, the new one out of the collector's full passes
            log.info("now serving %s", model.version)
            return ReloadResult("reloaded", model.version, target)

    def _refused(self, error: str, target: str) -> ReloadResult:
        """Keep the old model and remember why the new one was refused."""
        self.last_error = error
        log.error("reload refused, still serving %s: %s", self.current.version, error)
        return ReloadResult("refused", self.current.version, target, error)

    async def poll(self, interval_s: float) -> None:
        """Check the source every `interval_s` seconds until cancelled."""
        await every(interval_s, self.reload, "model check")

    def _catalog_seq(self) -> int:
        """The store's current catalog high-water mark (0 without a store)."""
        return self.store.catalog_since(2**62)[3] if self.store else 0

    async def refresh_catalog(self) -> int:
        """Lay catalog changes made since the last look over the serving model; returns how many rows changed."""
        if self.store is None:
            return 0
        async with self._lock:
            videos, products, _, seq = await asyncio.to_thread(self.store.catalog_since, self.catalog_seq)
            changed = len(videos) + len(products)
            if changed:
                service = self.current.service
                catalog = extend_catalog(service.catalog, videos, products)
                self.current = replace(self.current, service=await asyncio.to_thread(service.with_catalog, catalog))
            self.catalog_seq = seq
            return changed

    async def watch_catalog(self, interval_s: float) -> None:
        """Pick up catalog changes (from any replica) every `interval_s` seconds until cancelled."""
        await every(interval_s, self.refresh_catalog, "catalog refresh")


async def every(interval_s: float, task: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `task` every `interval_s` seconds until cancelled; one failure never stops the loop."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await task()
        except Exception:  # a background loop must outlive any single bad run
            log.exception("%s failed; will try again", what)
