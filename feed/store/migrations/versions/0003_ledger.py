"""The commission ledger: rate history, append-only entries, the processing queue, settlement dates.

Also the indexes the creator and merchant stats read by: events and impressions by (video_id, ts).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Written by hand: migrations never depend on the current `feed.store.tables`, which moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the ledger tables, seed the rate history from the products' current rates, add the indexes."""
    op.create_index("ix_events_video_ts", "events", ["video_id", "ts"])
    op.create_index("ix_impressions_video_ts", "impressions", ["video_id", "ts"])
    rates = op.create_table(
        "commission_rates",
        sa.Column("product_id", sa.Text, primary_key=True),
        sa.Column("valid_from", sa.BigInteger, primary_key=True),
        sa.Column("rate", sa.Double, nullable=False),
    )
    _seed_rates(rates)
    op.create_table(
        "ledger_entries",
        sa.Column("seq", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("beneficiary_id", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("video_id", sa.Text),
        sa.Column("product_id", sa.Text),
        sa.Column("ref", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("entry_id", name="uq_ledger_entries_entry_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ledger_entries_order_id", "ledger_entries", ["order_id"])
    op.create_index("ix_ledger_entries_beneficiary_ts", "ledger_entries", ["beneficiary_id", "ts"])
    op.create_index("ix_ledger_entries_video_ts", "ledger_entries", ["video_id", "ts"])
    _create_queue()
    op.create_table(
        "ledger_orders",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("settle_at", sa.BigInteger, nullable=False),
        sa.Column("settled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_ledger_orders_due", "ledger_orders", ["settled", "settle_at"])


def _seed_rates(rates: sa.Table) -> None:
    """Every product's current rate becomes its first version, valid since the beginning of time (0)."""
    op.execute(rates.insert().from_select(
        ["product_id", "valid_from", "rate"],
        sa.select(sa.column("product_id"), sa.literal(0, sa.BigInteger), sa.column("commission_rate"))
        .select_from(sa.table("products", sa.column("product_id"), sa.column("commission_rate")))
        .where(sa.column("commission_rate").is_not(None))))


def _create_queue() -> None:
    """The queue of orders and share links to process; every purchase already stored is queued once."""
    queue = op.create_table(
        "ledger_queue",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Text),
        sa.Column("share_id", sa.Text),
        sqlite_autoincrement=True,
    )
    events = sa.table("events", sa.column("order_id"), sa.column("event"))
    op.execute(queue.insert().from_select(
        ["order_id"], sa.select(events.c.order_id).distinct().where(events.c.event == "purchase")))


def downgrade() -> None:
    """Drop the ledger and its indexes (the entries are lost; `feed ledger rebuild` recomputes them)."""
    for table in ("ledger_orders", "ledger_queue", "ledger_entries", "commission_rates"):
        op.drop_table(table)
    op.drop_index("ix_impressions_video_ts", "impressions")
    op.drop_index("ix_events_video_ts", "events")
