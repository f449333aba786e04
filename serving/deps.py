"""Dependencies injected into routes (the model holder lives on app.state, set by the lifespan).

They are `async def` because none of them blocks: FastAPI runs a plain `def` dependency in its thread pool,
one thread hand-off (and GIL contention with the feed) per dependency per request."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from feed.store.store import EventStore
from serving.metrics import Counters
from serving.reloader import ModelHolder
from serving.settings import ServingSettings


async def get_holder(request: Request) -> ModelHolder:
    """The model holder; 503 while the app is starting or stopping."""
    return holder_of(request)


def holder_of(request: Request) -> ModelHolder:
    """`get_holder` as a plain function (for dependencies that do several things at once)."""
    holder = getattr(request.app.state, "holder", None)
    if holder is None:
        raise HTTPException(status_code=503, detail="no model loaded yet")
    return holder


async def get_store(request: Request) -> EventStore:
    """The event store; 503 when the service runs without one."""
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise HTTPException(status_code=503, detail="this service has no event store (FEED_SERVE_STORE_URL)")
    return store


async def get_counters(request: Request) -> Counters:
    """The service's counters."""
    return request.app.state.counters


async def get_settings(request: Request) -> ServingSettings:
    """The app's settings."""
    return request.app.state.settings


async def require_admin(settings: Annotated[ServingSettings, Depends(get_settings)],
                  authorization: Annotated[str | None, Header()] = None) -> None:
    """Admin routes need `Authorization: Bearer <FEED_SERVE_ADMIN_TOKEN>`."""
    if settings.admin_token is None:
        raise HTTPException(status_code=403, detail="admin routes are disabled: set FEED_SERVE_ADMIN_TOKEN")
    expected = f"Bearer {settings.admin_token.get_secret_value()}"
    if authorization is None or not secrets.compare_digest(authorization.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="missing or wrong admin token",
                            headers={"WWW-Authenticate": "Bearer"})


HolderDep = Annotated[ModelHolder, Depends(get_holder)]
SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
AdminDep = Annotated[None, Depends(require_admin)]
CountersDep = Annotated[Counters, Depends(get_counters)]
