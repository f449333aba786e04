"""Blocks: a user hides a creator from their own feeds; an unblock is a tombstone, as an unfollow is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Written by hand: migrations never depend on the current `feed.store.tables`, which moves on. The index that
`EventStore.recent_impressions` reads, ix_impressions_user_ts on impressions(user_id, ts), exists since 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the blocks table; every row carries the catalog_seq of its last change, like follows."""
    op.create_table(
        "blocks",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("creator_id", sa.Text, primary_key=True),
        sa.Column("ts", sa.BigInteger),
        sa.Column("catalog_seq", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_blocks_catalog_seq", "blocks", ["catalog_seq"])


def downgrade() -> None:
    """Drop the blocks table (and so every stored block)."""
    op.drop_table("blocks")
