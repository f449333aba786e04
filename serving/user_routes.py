"""A user's blocks: PUT, DELETE and GET /v1/users/{user_id}/blocks, written by the app's backend.

The app's backend calls them with an app key (or the admin token); a merchant token is refused with 403.

A block is stored like a follow (one row per user and creator, an unblock is a tombstone), so blocking again
after an unblock restores the row.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import AfterValidator, BaseModel

from serving.auth import BackendDep
from serving.catalog_routes import StoreDep, Written, _read, _write
from serving.deps import HolderDep
from serving.ingest import FollowIn, follow_frame, no_nul

router = APIRouter(tags=["users"])
# 1..128 characters like every id; NUL characters are 422 here, not a 503 from a database that refuses them
UserPathId = Annotated[str, Path(min_length=1, max_length=128), AfterValidator(no_nul)]


class Blocks(BaseModel):
    """The creators a user blocked."""

    user_id: str
    creator_ids: list[str]


@router.put("/v1/users/{user_id}/blocks/{creator_id}", response_model=Written)
async def put_block(user_id: UserPathId, creator_id: UserPathId, _: BackendDep, store: StoreDep,
                    holder: HolderDep) -> Written:
    """A user blocks a creator (again, after an unblock); blocking twice is not an error."""
    block = FollowIn(user_id=user_id, creator_id=creator_id, ts=int(time.time() * 1000))  # a follow's columns
    await _write(store.upsert_blocks, follow_frame(block))
    return Written(id=f"{user_id}->{creator_id}", catalog_seq=holder.catalog_seq)


@router.delete("/v1/users/{user_id}/blocks/{creator_id}", response_model=Written)
async def delete_block(user_id: UserPathId, creator_id: UserPathId, _: BackendDep, store: StoreDep,
                       holder: HolderDep) -> Written:
    """A user unblocks a creator; 404 when they had not blocked them."""
    if not await _write(store.delete_block, user_id, creator_id):
        raise HTTPException(404, detail=f"{user_id} has not blocked {creator_id}")
    return Written(id=f"{user_id}->{creator_id}", catalog_seq=holder.catalog_seq)


@router.get("/v1/users/{user_id}/blocks", response_model=Blocks)
async def get_blocks(user_id: UserPathId, _: BackendDep, store: StoreDep) -> Blocks:
    """The creators the user blocked, sorted."""
    return Blocks(user_id=user_id, creator_ids=await _read(store.blocks_of, user_id))

