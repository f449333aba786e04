"""GET /v1/creators/{id}/stats and /v1/merchants/{id}/stats: what sold, what it earned, over a time range.

The numbers and their definitions are `feed.analytics`'; this module has the store sum a range (in a worker
thread: `EventStore.stats_rollup`, no view or impression row leaves the database), checks the range and access,
and shapes the JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from feed import analytics
from feed.errors import FeedError
from feed.store.store import EventStore
from serving.auth import CreatorDep, MerchantDep
from serving.deps import get_store

router = APIRouter(tags=["stats"])
StoreDep = Annotated[EventStore, Depends(get_store)]
MAX_BOUND_CHARS = 64  # longer `from`/`to` values are not echoed back in errors
RANGE_DOC = ("ISO-8601 date or date-time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z (no zone = UTC); "
             "the range is from <= ts < to")
FromQuery = Annotated[str | None, Query(alias="from", description=f"Start, inclusive: {RANGE_DOC}.")]
ToQuery = Annotated[str | None, Query(description=f"End, exclusive: {RANGE_DOC}.")]
PRIVATE = {"Cache-Control": "no-store"}  # per-creator earnings: never cached by a browser or a proxy


# --- response models (field meanings: feed.analytics) ------------------------------------------------------


class Conversion(BaseModel):
    """Viewers who bought / viewers, with its 95 % Wilson interval; null without viewers."""

    rate: float | None
    low: float | None
    high: float | None


class Commission(BaseModel):
    """Ledger entries of the range: pending = accrued - clawed_back - settled (currency units)."""

    accrued: float
    clawed_back: float
    settled: float
    pending: float


class ByRole(BaseModel):
    """Commission earned as the video's creator, as a direct sharer, and both."""

    creator: Commission
    sharer: Commission
    total: Commission


class Reach(BaseModel):
    """Share cascades: how many, their links, distinct users they brought, deepest level, orders through them."""

    cascades: int
    shares: int
    reached_users: int
    max_depth: int
    purchases: int


class Measures(BaseModel):
    """The funnel of a video, product or creator over the range."""

    impressions: int = Field(description="Distinct (request, user, video) among served feed rows and impression "
                                         "events.")
    views: int
    viewers: int = Field(description="Distinct users with a view.")
    shares: int
    views_via_shares: int
    purchases: int = Field(description="Distinct orders (each on the video of its first purchase event).")
    buyers: int
    purchases_via_shares: int
    converted_viewers: int = Field(description="Viewers who also bought.")
    refunds: int = Field(description="Distinct orders with a refund in the range.")
    sales: float = Field(description="Amounts of the orders bought in the range.")
    refunded: float = Field(description="Amounts refunded in the range, whenever the order was bought.")
    gmv: float = Field(description="sales - refunded.")
    avg_watch_ratio: float | None = Field(description="Mean of watch_ms / duration_ms in [0, 1]; null when unknown.")
    conversion: Conversion


class Range(BaseModel):
    """The range asked for (null = unbounded), as ISO-8601 UTC times."""

    from_: str | None = Field(alias="from")
    to: str | None


class CreatorTotals(Measures):
    """All of a creator's videos together (viewers and buyers counted once across videos)."""

    commission: ByRole
    cascade: Reach


class VideoStats(Measures):
    """One video; its commission is what the creator earned from it as its creator."""

    video_id: str
    title: str | None
    product_id: str | None
    duration_ms: float | None
    commission: Commission
    cascade: Reach


class Versus(BaseModel):
    """A video's conversion against the creator's pooled average."""

    video_id: str
    title: str | None
    viewers: int
    conversion: Conversion
    lift: float | None = Field(description="Its conversion / the average.")
    vs_average: Literal["above", "below", "within"] = Field(
        description="above/below: its 95 % interval excludes the average.")


class Day(BaseModel):
    """One UTC day."""

    date: str
    views: int
    purchases: int
    gmv: float
    commission: float = Field(description="Net commission earned that day: accruals minus clawbacks, all roles.")


class Cascade(BaseModel):
    """One share cascade, named by its root link."""

    root_share_id: str
    video_id: str
    shares: int
    reached_users: int
    max_depth: int
    purchases: int


class CreatorStats(BaseModel):
    """A creator's stats over a range."""

    creator_id: str
    range: Range
    totals: CreatorTotals
    average_conversion: float | None = Field(description="Pooled over the videos: their converted viewers / "
                                                         "their viewers.")
    min_viewers: int = Field(description="Viewers a video needs to be named best or worst.")
    best: Versus | None
    worst: Versus | None
    videos: list[VideoStats] = Field(description="Best converting first; videos without viewers last.")
    daily: list[Day]
    cascades: list[Cascade] = Field(description=f"The {analytics.TOP_CASCADES} largest, by users reached.")


class MerchantTotals(Measures):
    """All of a merchant's products together."""

    commission: ByRole


class ProductStats(Measures):
    """One product, over the videos that link it; commission: all roles, paid on its orders."""

    product_id: str
    category: str | None
    price: float | None
    commission_rate: float | None
    videos: int
    commission: Commission


class SellerStats(Measures):
    """One (creator, video) selling the merchant's products."""

    creator_id: str
    video_id: str
    title: str | None
    product_id: str
    commission: Commission


class CreatorSales(Measures):
    """One creator's videos of the merchant's products together."""

    creator_id: str
    videos: int
    commission: Commission


class MerchantStats(BaseModel):
    """A merchant's stats over a range; products, sellers and creators are sorted by GMV, highest first."""

    merchant_id: str
    range: Range
    totals: MerchantTotals
    products: list[ProductStats]
    sellers: list[SellerStats]
    creators: list[CreatorSales]


# --- routes ---------------------------------------------------------------------------------------------

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or a token that is malformed, forged or expired"},
    403: {"description": "a token of someone else"},
    404: {"description": "unknown creator or merchant"},
    422: {"description": "`from` or `to` is not an ISO-8601 date or time, or from >= to"},
    503: {"description": "the event store is unavailable; retry after Retry-After"}}


@router.get("/v1/creators/{creator_id}/stats", response_model=CreatorStats, responses=ERRORS)
async def get_creator_stats(creator: CreatorDep, store: StoreDep, response: Response, from_: FromQuery = None,
                            to: ToQuery = None) -> dict[str, Any]:
    """A creator's funnel, conversion, GMV, commission, daily series and share cascades (admin or that creator)."""
    since, until = time_range(from_, to)
    stats = await _read(read_creator_stats, store, creator, since, until)
    if stats is None:
        raise HTTPException(404, detail=f"unknown creator {creator!r}")
    response.headers.update(PRIVATE)
    return stats


@router.get("/v1/merchants/{merchant_id}/stats", response_model=MerchantStats, responses=ERRORS)
async def get_merchant_stats(merchant: MerchantDep, store: StoreDep, response: Response, from_: FromQuery = None,
                             to: ToQuery = None) -> dict[str, Any]:
    """A merchant's sales per product and per creator video, and which creators sell best (admin or merchant)."""
    since, until = time_range(from_, to)
    stats = await _read(read_merchant_stats, store, merchant, since, until)
    if stats is None:
        raise HTTPException(404, detail=f"unknown merchant {merchant!r}")
    response.headers.update(PRIVATE)
    return stats


def time_range(from_: str | None, to: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The (since, until) of the query; 422 for an unreadable bound or from >= to."""
    since, until = parse_bound(from_, "from"), parse_bound(to, "to")
    if since is not None and until is not None and since >= until:
        raise HTTPException(422, detail=f"'from' must be earlier than 'to' (the range is from <= ts < to), got "
                                        f"from={since.isoformat()} and to={until.isoformat()}")
    return since, until


def parse_bound(text: str | None, name: str) -> pd.Timestamp | None:
    """An ISO-8601 date or date-time as a UTC timestamp (no zone = UTC); 422 naming the parameter otherwise."""
    if text is None or not text.strip():
        return None
    try:
        if len(text) > MAX_BOUND_CHARS:
            raise ValueError(text)
        return analytics.utc(datetime.fromisoformat(text.strip()))
    except (ValueError, OverflowError):
        shown = repr(text) if len(text) <= MAX_BOUND_CHARS else f"{len(text)} characters"
        raise HTTPException(422, detail=f"'{name}' must be an ISO-8601 date or date-time such as 2026-01-31 or "
                                        f"2026-01-31T12:00:00Z, got {shown}") from None


async def _read(read: Any, store: EventStore, who: str, since: pd.Timestamp | None,
                until: pd.Timestamp | None) -> dict[str, Any] | None:
    """Run a store read and its computation in a worker thread; 503 with Retry-After when the store fails."""
    try:
        return await run_in_threadpool(read, store, who, since, until)
    except FeedError as exc:
        raise HTTPException(503, detail=f"stats unavailable: {exc}", headers={"Retry-After": "5"}) from exc


def read_creator_stats(store: EventStore, creator_id: str, since: pd.Timestamp | None,
                       until: pd.Timestamp | None) -> dict[str, Any] | None:
    """The creator's stats from the store's sums; None for a creator with no video and no ledger entry ever."""
    videos = store.videos_of(creator_id=creator_id)
    earned = store.ledger_sums(beneficiary_id=creator_id, since=since, until=until)
    if videos.empty and earned.empty and not store.has_ledger_entries(creator_id):
        return None
    rollup = store.stats_rollup(videos, since, until)
    return analytics.creator_report(videos, None, rollup, earned, since, until, creator_id=creator_id)


def read_merchant_stats(store: EventStore, merchant_id: str, since: pd.Timestamp | None,
                        until: pd.Timestamp | None) -> dict[str, Any] | None:
    """The merchant's stats from the store's sums; None for a merchant without products."""
    products = store.products_of(merchant_id)
    if products.empty:
        return None
    videos = store.videos_of(product_ids=products["product_id"].astype(str).tolist())
    rollup = store.stats_rollup(videos, since, until, analytics.MERCHANT_LEVELS)
    earned = store.ledger_sums(since=since, until=until,  # only this merchant's videos
                               video_ids=videos["video_id"].astype(str).tolist())
    return analytics.merchant_report(products, videos, rollup, earned, since, until, merchant_id=merchant_id)
