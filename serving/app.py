"""The FastAPI app factory; heavy things (the bundle, its indexes) load in the lifespan, not at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from feed import __version__
from feed.errors import FeedError
from serving.model_source import LoadedModel, load_model
from serving.reloader import ModelHolder
from serving.routes import router
from serving.settings import ServingSettings

log = logging.getLogger("serving")


def create_app(settings: ServingSettings, model: LoadedModel | None = None) -> FastAPI:
    """A new app serving the model that `settings` names (or `model`, when the caller already loaded it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            holder = ModelHolder(settings, model or await asyncio.to_thread(load_model, settings))
        except FeedError as exc:
            log.error("cannot start: %s", exc)
            raise
        app.state.holder = holder
        log.info("serving %s (%s)", holder.current.version, holder.current.source)
        poller = asyncio.create_task(holder.poll(settings.reload_interval_s)) if settings.reload_interval_s else None
        yield
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        app.state.holder = None

    app = FastAPI(title="Self-retail feed", version=__version__, lifespan=lifespan,
                  description="Personalized feeds of creator videos linked to products.")
    app.state.settings = settings
    app.state.holder = None
    app.include_router(router)
    return app
