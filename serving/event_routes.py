"""POST /v1/events: all-or-nothing batches, idempotent on event_id, acknowledged only after commit."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from feed.errors import DataError, FeedError
from feed.store.store import EventStore
from serving.auth import AppDep
from serving.deps import CountersDep, SettingsDep, get_store
from serving.ingest import MAX_EVENTS, BatchError, EventIn, batch_frame

router = APIRouter(tags=["events"])
StoreDep = Annotated[EventStore, Depends(get_store)]


class Accepted(BaseModel):
    """What a stored batch did."""

    received: int
    inserted: int
    duplicates: int


BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "maxItems": MAX_EVENTS, "items": EventIn.model_json_schema(ref_template="#/$defs/{model}")}}}}}


@router.post("/v1/events", response_model=Accepted, openapi_extra=BODY_DOC,
             responses={400: {"description": "malformed JSON"}, 413: {"description": "body too large"},
                        415: {"description": "not application/json"},
                        422: {"description": "invalid events: every bad row's index, field and reason"},
                        503: {"description": "the event store is unavailable; retry after Retry-After"}})
async def post_events(_: AppDep, request: Request, store: StoreDep, settings: SettingsDep,
                      counters: CountersDep) -> Accepted:
    """Store a JSON array of up to 1,000 events; any invalid row rejects the whole batch and stores nothing."""
    body = await _body(request, settings.max_body_bytes)
    payload = await run_in_threadpool(_parse_json, body)  # parsing and validating 1,000 events is CPU work:
    try:  # off the event loop, so reloads and other requests are not held up
        frame = await run_in_threadpool(batch_frame, payload)
    except (BatchError, DataError) as exc:
        counters.add(event_batches_rejected=1)
        raise HTTPException(422, detail={"message": "no event was stored", "errors": _problems(exc)}) from exc
    try:
        result = await run_in_threadpool(store.insert_events, frame)
    except FeedError as exc:
        counters.add(event_store_errors=1)
        raise HTTPException(503, detail=f"events not stored: {exc}", headers={"Retry-After": "1"}) from exc
    counters.add(events_inserted=result.inserted, events_duplicate=result.duplicates)
    return Accepted(received=len(frame), inserted=result.inserted, duplicates=result.duplicates)


def _problems(exc: BatchError | DataError) -> list[dict[str, Any]]:
    """Every bad row's index, field and reason."""
    if isinstance(exc, BatchError):
        return exc.problems
    return [{"index": None if exc.row is None else exc.row - 1, "field": exc.column, "reason": str(exc)}]


async def _body(request: Request, limit: int) -> bytes:
    """The raw body, with 415 / 413 for the wrong type or too many bytes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(415, detail=f"expected Content-Type application/json, got {kind or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, detail=f"body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, detail=f"body exceeds the limit of {limit} bytes")
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    """The parsed body; 400 for malformed (or absurdly nested) JSON."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, detail=f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise HTTPException(400, detail="malformed JSON: nested too deeply") from exc
