"""HTTP routes: health, readiness, and the ranked feed."""

from __future__ import annotations

import time
from typing import Annotated, NamedTuple

import anyio
from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.datastructures import QueryParams

from feed.cursor import Cursor, CursorError
from serving import feed_query
from serving.auth import AppModelDep
from serving.deps import AdminDep, CountersDep, HolderDep
from serving.feed_query import FeedQuery
from serving.metrics import render
from serving.model_source import LoadedModel
from serving.observability import REQUEST_ID
from serving.schemas import FeedOut, Health, Ready, ReloadOut, feed_json

router = APIRouter()
USER_ID_MAX = 128
FEED_PATH = "/v1/users/{user_id}/feed"
UserId = Annotated[str, Path(min_length=1, max_length=USER_ID_MAX, description="The user's id.")]


@router.get("/healthz", response_model=Health, tags=["ops"])
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, tags=["ops"])
def readyz(holder: HolderDep, response: Response) -> Ready:
    """Readiness: a model is loaded; reports which, and whether the last reload was refused."""
    model = holder.current
    bundle = model.service.bundle
    response.headers["X-Model-Version"] = model.version
    return Ready(status="ready", model_version=model.version, bundle_id=bundle.bundle_id, source=model.source,
                 n_users=len(bundle.users), n_videos=len(bundle.catalog.videos),
                 last_reload_check=holder.last_check, last_reload_error=holder.last_error)


@router.post("/v1/admin/reload", response_model=ReloadOut, tags=["admin"])
async def reload_model(holder: HolderDep, _: AdminDep, force: bool = False) -> ReloadOut:
    """Load the version the source names now and swap to it; a broken version is refused, the old one stays."""
    result = await holder.reload(force=force)
    return ReloadOut(status=result.status, version=result.version, target=result.target, error=result.error)


@router.get(FEED_PATH, response_model=FeedOut, tags=["feed"], openapi_extra=feed_query.OPENAPI,
            responses={400: {"description": "a damaged or foreign cursor (pass next_cursor back exactly)"},
                       422: {"description": "a bad parameter (each one named in `detail`)"}})
async def user_feed(user_id: UserId, model: AppModelDep, request: Request) -> Response:
    """The user's ranked feed of creator videos; an unknown user gets a popularity feed, never an error.

    Page on with `cursor=<next_cursor>`: later pages never repeat earlier ones. With an event store, the user's
    events since training refresh their vectors and filters, blocked creators and videos shown in the last hours
    are left out, and the page's items are logged as impressions (off the request path). The query parameters
    are validated by `serving.feed_query.FeedQuery` (documented below all the same)."""
    body, headers = await answer_feed(request, model, user_id, check_feed(request.query_params))
    return Response(body, media_type="application/json", headers=headers)


# the route above: `serving.feed_lane` answers its calls that pass every check
feed_route = next(r for r in router.routes if getattr(r, "path", None) == FEED_PATH)


class FeedCall(NamedTuple):
    """A feed request's checked parameters."""

    query: FeedQuery
    cursor: Cursor | None


def check_feed(params: QueryParams) -> FeedCall:
    """The query parameters validated and the cursor decoded; 422 or 400 (HTTPException) otherwise. Writes
    nothing: `serving.feed_lane` hands a request that fails here to FastAPI, which answers the error."""
    query = FeedQuery.of(params)
    try:
        return FeedCall(query, Cursor.decode(query.cursor) if query.cursor is not None else None)
    except CursorError as exc:
        raise HTTPException(400, detail=f"cursor: {exc}") from exc


async def answer_feed(request: Request, model: LoadedModel, user_id: str,
                      call: FeedCall) -> tuple[bytes, dict[str, str]]:
    """The feed's JSON body (FeedOut) and headers: read, rank, log the impressions, count."""
    service, query = model.service, call.query
    # the store reads block on I/O: a worker thread; the ranking is CPU work under the GIL, so it runs right here
    # (a hand-off to a thread and back costs more than it frees the loop: one process computes one feed at a time
    # either way)
    read = await anyio.to_thread.run_sync(service.read, user_id, limiter=request.app.state.feed_limiter) if \
        service.reads_store else service.read(user_id)
    feed = service.rank(read, query.limit, query.exclude, call.cursor, query.seed, now_ms=time.time() * 1000,
                        request_id=REQUEST_ID.get())
    impressions = request.app.state.impressions
    if impressions is not None:
        impressions.offer(feed)
    request.app.state.counters.add(feeds_served=1)
    request.app.state.telemetry.record_feed(feed.timings, feed.sources)
    # the body is FeedOut (the schema above), serialized directly: no per-item model validation on the hot path
    return feed_json(feed), {"X-Model-Version": model.version}


@router.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
def metrics(holder: HolderDep, counters: CountersDep, request: Request) -> str:
    """Counters and gauges in the Prometheus text format."""
    impressions = request.app.state.impressions
    logged = vars(impressions.stats) if impressions is not None else {}
    live = holder.current.service.live
    gauges = {"live_cache_hits": live.hits if live else 0, "live_cache_misses": live.misses if live else 0,
              "feeds_without_realtime": holder.current.service.degraded,
              "catalog_videos": len(holder.current.service.catalog.videos), "catalog_seq": holder.catalog_seq,
              "model_load_seconds": round(holder.current.load_seconds, 3),
              "model_loaded_at_seconds": round(holder.current.loaded_at, 3)}
    return render({**counters.values(), **{f"impression_{k}": v for k, v in logged.items()}}, gauges,
                  {"version": holder.current.version}) + request.app.state.telemetry.render()
