"""The initial event store: events, catalog (videos, products, follows), impressions, catalog counter.

Revision ID: 0001
Revises:
Create Date: 2026-05-09

Written by hand: migrations never depend on the current `feed.store.tables`, which moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite aliases the rowid only for INTEGER


def upgrade() -> None:
    """Create every table with its indexes and seed the catalog counter at 0."""
    _events()
    _catalog()
    op.create_table(
        "impressions",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("video_id", sa.Text, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_impressions_user_ts", "impressions", ["user_id", "ts"])
    counter = op.create_table(
        "catalog_counter",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_catalog_counter_one_row"),
    )
    op.bulk_insert(counter, [{"id": 1, "value": 0}])


def downgrade() -> None:
    """Drop every table (and so every stored event)."""
    for table in ("catalog_counter", "impressions", "follows", "products", "videos", "events"):
        op.drop_table(table)


def _events() -> None:
    """The append-only event log: seq is the insertion order, event_id makes ingestion idempotent."""
    op.create_table(
        "events",
        sa.Column("seq", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.BigInteger),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("video_id", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("watch_ms", sa.BigInteger),
        sa.Column("share_id", sa.Text),
        sa.Column("via_share_id", sa.Text),
        sa.Column("request_id", sa.Text),
        sa.Column("order_id", sa.Text),
        sa.Column("amount", sa.Double),
        sa.Column("product_id", sa.Text),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_user_seq", "events", ["user_id", "seq"])
    op.create_index("ix_events_ts_seq", "events", ["ts", "seq"])
    for column in ("order_id", "share_id", "via_share_id"):  # partial: most events have neither
        present = sa.text(f"{column} IS NOT NULL")
        op.create_index(f"ix_events_{column}", "events", [column], sqlite_where=present, postgresql_where=present)


def _catalog() -> None:
    """Videos, products and follows; every row carries the catalog_seq of its last change."""
    op.create_table(
        "videos",
        sa.Column("video_id", sa.Text, primary_key=True),
        sa.Column("creator_id", sa.Text, nullable=False),
        sa.Column("product_id", sa.Text),
        sa.Column("published_at", sa.BigInteger),
        sa.Column("duration_ms", sa.BigInteger),
        sa.Column("title", sa.Text),
        sa.Column("catalog_seq", sa.BigInteger, nullable=False),
    )
    for column in ("creator_id", "product_id", "catalog_seq"):
        op.create_index(f"ix_videos_{column}", "videos", [column])
    op.create_table(
        "products",
        sa.Column("product_id", sa.Text, primary_key=True),
        sa.Column("merchant_id", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("price", sa.Double),
        sa.Column("commission_rate", sa.Double),
        sa.Column("in_stock", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("catalog_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_products_catalog_seq", "products", ["catalog_seq"])
    op.create_table(
        "follows",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("creator_id", sa.Text, primary_key=True),
        sa.Column("ts", sa.BigInteger),
        sa.Column("catalog_seq", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_follows_catalog_seq", "follows", ["catalog_seq"])
