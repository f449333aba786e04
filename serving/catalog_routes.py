"""Catalog upserts: PUT /v1/videos/{id}, PUT /v1/products/{id}, PUT and DELETE /v1/follows.

Writes need the admin token, or a merchant's token for that merchant's own products and the videos selling
them. A write is visible in this replica's feeds before the response returns, in the others' within
`catalog_refresh_s` seconds.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from feed.errors import FeedError
from feed.store.store import EventStore
from serving.deps import HolderDep, SettingsDep, get_store
from serving.ingest import FollowIn, ProductIn, VideoIn, follow_frame, product_frame, video_frame

router = APIRouter(tags=["catalog"])
log = logging.getLogger("serving.catalog")
StoreDep = Annotated[EventStore, Depends(get_store)]
ItemId = Annotated[str, Path(min_length=1, max_length=128)]


@dataclass(frozen=True)
class Writer:
    """Who is writing: the admin, or one merchant."""

    merchant_id: str | None  # None = admin


def get_writer(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> Writer:
    """The writer named by `Authorization: Bearer <token>` (admin or merchant token)."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    if not token:
        raise HTTPException(401, detail="catalog writes need Authorization: Bearer <admin or merchant token>",
                            headers={"WWW-Authenticate": "Bearer"})
    admin = settings.admin_token
    if admin is not None and secrets.compare_digest(token.encode(), admin.get_secret_value().encode()):
        return Writer(None)
    for merchant, secret in settings.merchant_tokens.items():
        if secrets.compare_digest(token.encode(), secret.get_secret_value().encode()):
            return Writer(merchant)
    raise HTTPException(401, detail="unknown token", headers={"WWW-Authenticate": "Bearer"})


WriterDep = Annotated[Writer, Depends(get_writer)]


class Written(BaseModel):
    """Acknowledgement of a catalog write."""

    id: str
    catalog_seq: int


@router.put("/v1/products/{product_id}", response_model=Written)
async def put_product(product_id: ItemId, body: ProductIn, writer: WriterDep, store: StoreDep,
                      holder: HolderDep) -> Written:
    """Create or update a product (a merchant may create products, and update only its own)."""
    if writer.merchant_id is not None:
        await _check_product(writer.merchant_id, product_id, body.merchant_id, store, holder)
    await _write(store.upsert_products, product_frame(product_id, body))
    await _refresh(holder)
    return Written(id=product_id, catalog_seq=holder.catalog_seq)


@router.put("/v1/videos/{video_id}", response_model=Written)
async def put_video(video_id: ItemId, body: VideoIn, writer: WriterDep, store: StoreDep, holder: HolderDep) -> Written:
    """Create or update a video; it is in feeds (through its creator, product, followers, fresh slot) at once.

    An update without `published_at` keeps the original publication time (an edit is not new content)."""
    stored = await _read(store.video_row, video_id)
    if writer.merchant_id is not None:
        await _check_video(writer.merchant_id, video_id, body, stored, store, holder)
    published = body.published_at or (stored or {}).get("published_at") or _model_published(holder, video_id)
    await _write(store.upsert_videos, video_frame(video_id, body, published or int(time.time() * 1000)))
    await _refresh(holder)
    return Written(id=video_id, catalog_seq=holder.catalog_seq)


async def _check_product(merchant: str, product_id: str, claimed: str, store: EventStore, holder: object) -> None:
    """403 unless the merchant names itself and the product is new or already theirs."""
    known, owner = await _read(store.product_owner, product_id)
    in_model = holder.current.service.catalog.products.row(product_id) >= 0
    if claimed != merchant or (known and owner != merchant) or (not known and in_model):
        raise HTTPException(403, detail=f"merchant {merchant} may only write its own products")


async def _check_video(merchant: str, video_id: str, body: VideoIn, stored: dict | None,
                       store: EventStore, holder: object) -> None:
    """403 unless the video sells one of the merchant's products and, if it exists, already did and keeps its
    creator (who made a video decides who earns from its purchases: not the merchant's to change)."""
    product_id = body.product_id
    sells_own = product_id is not None and await _read(store.product_owner, product_id) == (True, merchant)
    if stored is not None and stored.get("creator_id") != body.creator_id:
        raise HTTPException(403, detail=f"merchant {merchant} may not change the creator of a video")
    if stored is not None:
        previous = stored.get("product_id")
        sells_own &= previous is not None and await _read(store.product_owner, previous) == (True, merchant)
    elif holder.current.service.catalog.videos.row(video_id) >= 0:
        sells_own = False  # videos the model was trained on belong to the admin until the store has them
    if not sells_own:
        raise HTTPException(403, detail=f"merchant {merchant} may only write videos of its own products")


def _model_published(holder: object, video_id: str) -> int | None:
    """The serving catalog's publication time of a video (epoch ms), None when unknown."""
    catalog = holder.current.service.catalog
    row = catalog.videos.row(video_id)
    value = catalog.video_published_ms[row] if row >= 0 else float("nan")
    return None if value != value else int(value)


async def _refresh(holder: object) -> None:
    """Show the write in this replica now; if that fails the write stands and the watcher retries."""
    try:
        await holder.refresh_catalog()
    except Exception:  # the write is committed: the client must not see a failure for it
        log.exception("catalog refresh after a write failed; the catalog watcher will pick it up")


@router.put("/v1/follows", response_model=Written)
async def put_follow(body: FollowIn, writer: WriterDep, store: StoreDep, holder: HolderDep) -> Written:
    """A user follows a creator (admin token: the app's backend writes follows)."""
    _admin_only(writer)
    await _write(store.upsert_follows, follow_frame(body))
    return Written(id=f"{body.user_id}->{body.creator_id}", catalog_seq=holder.catalog_seq)


@router.delete("/v1/follows", response_model=Written)
async def delete_follow(body: FollowIn, writer: WriterDep, store: StoreDep, holder: HolderDep) -> Written:
    """A user unfollows a creator; 404 when they did not follow them."""
    _admin_only(writer)
    if not await _write(store.delete_follow, body.user_id, body.creator_id):
        raise HTTPException(404, detail=f"{body.user_id} does not follow {body.creator_id}")
    return Written(id=f"{body.user_id}->{body.creator_id}", catalog_seq=holder.catalog_seq)


def _admin_only(writer: Writer) -> None:
    """Follows are written by the app's backend, with the admin token."""
    if writer.merchant_id is not None:
        raise HTTPException(403, detail="follows need the admin token")


async def _write(method: object, *args: object) -> object:
    """Run a store write off the event loop; store failures are 503 with Retry-After."""
    try:
        return await run_in_threadpool(method, *args)
    except FeedError as exc:
        raise HTTPException(503, detail=f"not written: {exc}", headers={"Retry-After": "1"}) from exc


async def _read(method: object, *args: object) -> object:
    """Run a store read off the event loop; store failures are 503 with Retry-After."""
    try:
        return await run_in_threadpool(method, *args)
    except FeedError as exc:
        raise HTTPException(503, detail=f"store unavailable: {exc}", headers={"Retry-After": "1"}) from exc
