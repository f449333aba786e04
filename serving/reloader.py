"""Hot reload: load and check a new model in the background, then swap one reference atomically.

Requests read `ModelHolder.current` once, so each request is served entirely by one model; a swap is a single
attribute assignment. A version that fails to load or check is refused and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from feed.errors import FeedError
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

    def __init__(self, settings: ServingSettings, model: LoadedModel) -> None:
        self.settings = settings
        self.current = model
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
                model = await asyncio.to_thread(load_model, self.settings)
            except FeedError as exc:
                return self._refused(str(exc), target)
            self.current, self.last_error = model, None
            log.info("now serving %s", model.version)
            return ReloadResult("reloaded", model.version, target)

    def _refused(self, error: str, target: str) -> ReloadResult:
        """Keep the old model and remember why the new one was refused."""
        self.last_error = error
        log.error("reload refused, still serving %s: %s", self.current.version, error)
        return ReloadResult("refused", self.current.version, target, error)

    async def poll(self, interval_s: float) -> None:
        """Check the source every `interval_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.reload()
