"""The FastAPI app factory; heavy things (the store, the bundle, its indexes) load in the lifespan, not at import."""

from __future__ import annotations

import asyncio

import anyio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from feed import __version__
from feed.errors import FeedError
from feed.store.store import EventStore
from serving import dashboard, stats_routes
from serving.catalog_routes import router as catalog_router
from serving.event_routes import router as event_router
from serving.heap import release, settle
from serving.impressions import ImpressionLogger
from serving.ledger_worker import keep_ledger
from serving.threads import search_threads
from serving.metrics import Counters
from serving.feed_lane import FeedLane
from serving.observability import ASGIApp, ObserveRequests, Telemetry
from serving.model_source import LoadedModel, load_model
from serving.reloader import ModelHolder
from serving.routes import feed_route, router
from serving.schemas import documented
from serving.settings import ServingSettings
from serving.user_routes import router as user_router

log = logging.getLogger("serving")


def open_store(settings: ServingSettings) -> EventStore | None:
    """The configured event store, migrated to the current schema (None when disabled)."""
    if settings.store is None:
        return None
    store = EventStore(settings.store)
    store.upgrade()
    return store


def create_app(settings: ServingSettings, model: LoadedModel | None = None,
               store: EventStore | None = None) -> FastAPI:
    """A new app serving the model that `settings` names (or `model`/`store`, when the caller opened them)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        search_threads(settings.faiss_threads)
        app.state.feed_limiter = anyio.CapacityLimiter(settings.feed_threads)
        try:
            opened = store or await asyncio.to_thread(open_store, settings)
            seq = opened.catalog_since(2**62)[3] if opened else 0
            holder = ModelHolder(settings, model or await asyncio.to_thread(load_model, settings, opened), opened, seq)
        except FeedError as exc:
            log.error("cannot start: %s", exc)
            raise
        app.state.holder, app.state.store = holder, opened
        settle()  # the model and the libraries out of the collector's full passes (serving.heap)
        app.state.impressions = ImpressionLogger(opened, settings.impression_queue) if opened else None
        log.info("serving %s (%s)", holder.current.version, holder.current.source)
        tasks = _background(holder, settings, app.state.counters)
        yield
        await _stop(tasks)
        if app.state.impressions:
            await asyncio.to_thread(app.state.impressions.close)
        if opened:
            opened.close()
        app.state.holder = None
        release()

    app = FeedApp(title="Self-retail feed", version=__version__, lifespan=lifespan,
                  description="Personalized feeds of creator videos linked to products.")
    app.state.settings = settings
    app.state.holder = app.state.store = app.state.impressions = None
    app.state.counters, app.state.telemetry = Counters(), Telemetry()
    # every status a route can answer is in the OpenAPI schema (tests/serving/test_fuzz.py checks it)
    app.include_router(router, responses=documented(401, 403, 503))
    app.include_router(event_router, responses=documented(400, 401, 403, 413, 415, 503))
    app.include_router(catalog_router, responses=documented(401, 403, 404, 503))
    app.include_router(user_router, responses=documented(401, 403, 404, 503))
    app.include_router(stats_routes.router, responses=documented(401, 403, 404, 503))
    app.include_router(dashboard.router)
    dashboard.mount_static(app)
    return app


class FeedApp(FastAPI):
    """FastAPI with the request observer outermost (every request, FastAPI's own 500s included, gets its id,
    metrics and access log) and, inside it, the feed lane (`serving.feed_lane`) in front of FastAPI's stack."""

    def build_middleware_stack(self) -> ASGIApp:
        """ObserveRequests(FeedLane(FastAPI's stack)), FeedLane left out with `feed_lane` off."""
        stack = super().build_middleware_stack()
        if self.state.settings.feed_lane:
            stack = FeedLane(stack, feed_route)
        return ObserveRequests(stack, self.state.telemetry)


def _background(holder: ModelHolder, settings: ServingSettings, counters: Counters) -> list[asyncio.Task]:
    """The model poller, the catalog watcher and the ledger worker, as configured."""
    tasks = []
    if settings.reload_interval_s:
        tasks.append(asyncio.create_task(holder.poll(settings.reload_interval_s)))
    if holder.store is not None and settings.catalog_refresh_s:
        tasks.append(asyncio.create_task(holder.watch_catalog(settings.catalog_refresh_s)))
    if holder.store is not None and settings.ledger_interval_s:
        rules, interval = settings.ledger_rules(), settings.ledger_interval_s
        tasks.append(asyncio.create_task(keep_ledger(holder.store, rules, interval, counters)))
    return tasks


async def _stop(tasks: list[asyncio.Task]) -> None:
    """Cancel background tasks and wait for them."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
