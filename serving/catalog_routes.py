"""Catalog upserts: PUT /v1/videos/{id}, PUT /v1/products/{id}, PUT and DELETE /v1/follows.

Writes need the admin token, or a merchant's token for that merchant's own products and the videos selling
them. A write is visible in this replica's feeds before the response returns, in the others' within
`catalog_refresh_s` seconds.
"""

from __future__ import annotations

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
    """Create or update a product (a merchant may write only its own)."""
    if writer.merchant_id is not None:
        owner = await run_in_threadpool(store.merchant_of, product_id)
        if body.merchant_id != writer.merchant_id or owner not in (None, writer.merchant_id):
            raise HTTPException(403, detail=f"merchant {writer.merchant_id} may only write its own products")
    await _write(store.upsert_products, product_frame(product_id, body))
    await holder.refresh_catalog()
    return Written(id=product_id, catalog_seq=holder.catalog_seq)


@router.put("/v1/videos/{video_id}", response_model=Written)
async def put_video(video_id: ItemId, body: VideoIn, writer: WriterDep, store: StoreDep, holder: HolderDep) -> Written:
    """Create or update a video; it is in feeds (through its creator, product, followers, fresh slot) at once."""
    if writer.merchant_id is not None:
        owner = await run_in_threadpool(store.merchant_of, body.product_id) if body.product_id else None
        if owner != writer.merchant_id:
            raise HTTPException(403, detail=f"merchant {writer.merchant_id} may only write videos of its products")
    await _write(store.upsert_videos, video_frame(video_id, body, int(time.time() * 1000)))
    await holder.refresh_catalog()
    return Written(id=video_id, catalog_seq=holder.catalog_seq)


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
