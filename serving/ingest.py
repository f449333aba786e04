"""Request bodies for ingestion and catalog upserts, and their conversion to canonical frames.

Every event of a batch is validated on its own, so a rejected batch lists every bad row (index, field, reason);
the accepted batch then goes through the same `validate_table` as files, so the API and the file loaders
produce identical frames (and derived event ids).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from feed.schema import EVENT_TYPES
from feed.validation import TableFile, validate_table

MAX_EVENTS = 1000
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999  # 0001-01-01 and 9999-12-31T23:59:59.999 UTC
Id = Field(min_length=1, max_length=128)
OptionalId = Field(None, min_length=1, max_length=128)
EventType = Literal["impression", "view", "like", "share", "cart", "purchase", "refund"]
assert set(EventType.__args__) == set(EVENT_TYPES)  # noqa: S101  (the API accepts exactly the schema's types)


def no_nul(value: Any) -> Any:
    """Text must not hold NUL characters (databases refuse them)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


class Body(BaseModel):
    """A request body: unknown fields are errors, and text never holds NUL characters."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


def epoch_ms(value: Any) -> int:
    """Epoch milliseconds from an ISO-8601 string (no zone = UTC) or an integer of epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected an ISO-8601 time or epoch milliseconds, got a boolean")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        if not MIN_MS <= int(value) <= MAX_MS:
            raise ValueError(f"{value} epoch milliseconds is outside the years 1–9999")
        return int(value)
    if not isinstance(value, str):
        raise ValueError("expected an ISO-8601 time such as '2026-05-01T12:30:00Z' or epoch milliseconds")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"cannot parse {value!r}: expected an ISO-8601 time such as '2026-05-01T12:30:00Z' "
                         "or epoch milliseconds") from exc
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


class EventIn(Body):
    """One user action, per the data contract (docs: data/README.md)."""

    event_id: str | None = OptionalId
    ts: int | str = Field(description="ISO-8601 (no zone means UTC) or epoch milliseconds.")
    user_id: str = Id
    video_id: str = Id
    event: EventType
    watch_ms: int | None = Field(None, ge=0, le=10**12)
    share_id: str | None = OptionalId
    via_share_id: str | None = OptionalId
    request_id: str | None = OptionalId
    order_id: str | None = OptionalId
    amount: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False)
    product_id: str | None = OptionalId


    @field_validator("ts")
    @classmethod
    def _time(cls, value: int | str) -> int:
        return epoch_ms(value)

    @model_validator(mode="after")
    def _per_type_fields(self) -> EventIn:
        if self.event in ("purchase", "refund") and not self.order_id:
            raise ValueError(f"order_id: a {self.event} needs the order_id it belongs to")
        if self.event == "purchase" and not self.amount:
            raise ValueError("amount: a purchase needs the positive amount paid")
        if self.event == "share" and not self.share_id:
            raise ValueError("share_id: a share needs the id of the share link it created")
        return self


BATCH = TypeAdapter(list[EventIn])


class BatchError(ValueError):
    """A batch that cannot be stored; `problems` lists every bad row."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} invalid field(s)")


def parse_batch(payload: Any) -> list[EventIn]:
    """Validated events, or BatchError listing index, field and reason of every problem."""
    if not isinstance(payload, list):
        raise BatchError([{"index": None, "field": None, "reason": "the body must be a JSON array of events"}])
    if not payload:
        raise BatchError([{"index": None, "field": None, "reason": "the array is empty"}])
    if len(payload) > MAX_EVENTS:
        raise BatchError([{"index": None, "field": None,
                           "reason": f"{len(payload)} events: a batch holds at most {MAX_EVENTS}"}])
    try:
        return BATCH.validate_python(payload)
    except ValidationError as exc:
        raise BatchError([_problem(err) for err in exc.errors()]) from exc


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    """{index, field, reason} from one pydantic error (rule errors name their field in the message)."""
    loc = list(error["loc"])
    index = loc[0] if loc and isinstance(loc[0], int) else None
    field = ".".join(str(p) for p in loc[1:]) or None
    reason = str(error["msg"]).removeprefix("Value error, ")
    if field is None and ": " in reason and reason.split(": ", 1)[0].isidentifier():
        field, reason = reason.split(": ", 1)
    return {"index": index, "field": field, "reason": reason}


def batch_frame(payload: Any) -> pd.DataFrame:
    """A JSON payload to a canonical events frame (BatchError or DataError when invalid); CPU work."""
    return events_frame(parse_batch(payload))


def events_frame(events: list[EventIn]) -> pd.DataFrame:
    """The batch as a canonical events frame (event ids derived where absent, as for files)."""
    raw = pd.DataFrame([e.model_dump() for e in events])
    for column in raw.columns:
        if column not in ("ts", "watch_ms", "amount"):
            raw[column] = raw[column].astype(object)
    raw["watch_ms"] = raw["watch_ms"].astype("float64")
    raw["amount"] = raw["amount"].astype("float64")
    return validate_table(TableFile(Path("POST /v1/events"), "events"), raw)


class VideoIn(Body):
    """A video to create or update."""

    creator_id: str = Id
    product_id: str | None = OptionalId
    published_at: int | str | None = Field(None, description="ISO-8601 or epoch ms; default: now.")
    duration_ms: int | None = Field(None, gt=0, le=10**10, description="Milliseconds (at most ~115 days).")
    title: str | None = Field(None, max_length=500)

    @field_validator("published_at")
    @classmethod
    def _time(cls, value: int | str | None) -> int | None:
        if value is None:
            return None
        ms = epoch_ms(value)
        if ms > (time.time() + 86_400) * 1000:  # a future date would hold the fresh slot for ever
            raise ValueError("published_at is more than a day in the future")
        if ms < 0:
            raise ValueError("published_at is before 1970-01-01")
        return ms


class ProductIn(Body):
    """A product to create or update."""

    merchant_id: str = Id
    category: str | None = Field(None, max_length=128)
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    commission_rate: float | None = Field(None, ge=0, le=1)
    in_stock: bool = True


class FollowIn(Body):
    """A user following a creator (creators are users)."""

    user_id: str = Id
    creator_id: str = Id
    ts: int | str | None = None

    @field_validator("ts")
    @classmethod
    def _time(cls, value: int | str | None) -> int | None:
        return None if value is None else epoch_ms(value)


def _ms_to_ts(values: list[int | None]) -> pd.Series:
    """datetime64[ms, UTC] from epoch ms (None = missing)."""
    return pd.to_datetime(pd.Series(values, dtype="float64"), unit="ms", utc=True).astype("datetime64[ms, UTC]")


def video_frame(video_id: str, body: VideoIn, published_ms: int) -> pd.DataFrame:
    """A one-row canonical videos frame published at `published_ms`."""
    return pd.DataFrame({
        "video_id": pd.Series([video_id], dtype="str"), "creator_id": pd.Series([body.creator_id], dtype="str"),
        "product_id": pd.Series([body.product_id], dtype="str"),
        "published_at": _ms_to_ts([published_ms]),
        "duration_ms": pd.Series([body.duration_ms], dtype="float64"),
        "title": pd.Series([body.title], dtype="str"),
    })


def product_frame(product_id: str, body: ProductIn) -> pd.DataFrame:
    """A one-row canonical products frame."""
    return pd.DataFrame({
        "product_id": pd.Series([product_id], dtype="str"), "merchant_id": pd.Series([body.merchant_id], dtype="str"),
        "category": pd.Series([body.category], dtype="str"),
        "price": pd.Series([body.price], dtype="float64"),
        "commission_rate": pd.Series([body.commission_rate], dtype="float64"),
        "in_stock": pd.Series([body.in_stock], dtype=bool),
    })


def follow_frame(body: FollowIn) -> pd.DataFrame:
    """A one-row canonical follows frame."""
    return pd.DataFrame({"user_id": pd.Series([body.user_id], dtype="str"),
                         "creator_id": pd.Series([body.creator_id], dtype="str"), "ts": _ms_to_ts([body.ts])})
