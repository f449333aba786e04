"""HTTP routes: health, readiness, and the ranked feed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from serving.deps import ModelDep
from serving.schemas import FeedOut, Health, Ready

router = APIRouter()
UserId = Annotated[str, Path(min_length=1, max_length=128, description="The user's id.")]


@router.get("/healthz", response_model=Health, tags=["ops"])
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, tags=["ops"])
def readyz(model: ModelDep) -> Ready:
    """Readiness: a model is loaded; reports which."""
    bundle = model.service.bundle
    return Ready(status="ready", model_version=model.version, bundle_id=bundle.bundle_id, source=model.source,
                 n_users=len(bundle.users), n_videos=len(bundle.catalog.videos))


@router.get("/v1/users/{user_id}/feed", response_model=FeedOut, tags=["feed"])
def user_feed(
    user_id: UserId,
    model: ModelDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=100, description="Number of items, 1–100.")] = 20,
) -> FeedOut:
    """The user's ranked feed of creator videos; an unknown user gets a popularity feed, never an error."""
    feed = model.service.feed(user_id, limit)
    response.headers["X-Model-Version"] = model.version
    return FeedOut.from_feed(feed)
