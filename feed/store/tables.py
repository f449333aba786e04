"""The event store's tables (SQLAlchemy Core, one MetaData); times are epoch-millisecond integers.

This is the shape the migrations in `feed/store/migrations/versions/` build: a change here needs a new
revision there (the test suite compares the two).
"""

from __future__ import annotations

import sqlalchemy as sa

# SQLite aliases the rowid only for a column declared exactly INTEGER PRIMARY KEY; BIGINT would not be one.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

events = sa.Table(
    "events", metadata,
    # monotonic insertion order; AUTOINCREMENT so SQLite never reuses a number
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
    sa.UniqueConstraint("event_id", name="uq_events_event_id"),  # ingestion is idempotent by event_id
    sa.Index("ix_events_user_seq", "user_id", "seq"),
    sa.Index("ix_events_ts_seq", "ts", "seq"),  # serves ts ranges and the (ts, seq) order of events()
    # creator and merchant stats read their videos' events one type at a time (feed.store.stats); user_id
    # makes distinct viewers an index-only count
    sa.Index("ix_events_video_event_ts", "video_id", "event", "ts", "user_id"),
    # partial: most events have no order or share, and skipping their NULLs makes every insert cheaper;
    # a lookup `column = x` implies `column IS NOT NULL`, so both databases still use these indexes
    *(sa.Index(f"ix_events_{c}", c, sqlite_where=sa.text(f"{c} IS NOT NULL"),
               postgresql_where=sa.text(f"{c} IS NOT NULL")) for c in ("order_id", "share_id", "via_share_id")),
    sqlite_autoincrement=True,
)

videos = sa.Table(
    "videos", metadata,
    sa.Column("video_id", sa.Text, primary_key=True),
    sa.Column("creator_id", sa.Text, nullable=False),
    sa.Column("product_id", sa.Text),
    sa.Column("published_at", sa.BigInteger),
    sa.Column("duration_ms", sa.BigInteger),
    sa.Column("title", sa.Text),
    sa.Column("catalog_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_videos_creator_id", "creator_id"),
    sa.Index("ix_videos_product_id", "product_id"),
    sa.Index("ix_videos_catalog_seq", "catalog_seq"),
)

products = sa.Table(
    "products", metadata,
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("merchant_id", sa.Text),
    sa.Column("category", sa.Text),
    sa.Column("price", sa.Double),
    sa.Column("commission_rate", sa.Double),
    sa.Column("in_stock", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("catalog_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_products_catalog_seq", "catalog_seq"),
)

follows = sa.Table(
    "follows", metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("creator_id", sa.Text, primary_key=True),
    sa.Column("ts", sa.BigInteger),
    sa.Column("catalog_seq", sa.BigInteger, nullable=False),
    # an unfollow is a tombstone, so that catalog_since can report it to caches
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_follows_catalog_seq", "catalog_seq"),
)

# A user hides a creator's videos from their own feeds; like follows, an unblock is a tombstone
blocks = sa.Table(
    "blocks", metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("creator_id", sa.Text, primary_key=True),
    sa.Column("ts", sa.BigInteger),
    sa.Column("catalog_seq", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_blocks_catalog_seq", "catalog_seq"),
)

impressions = sa.Table(
    "impressions", metadata,
    sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("video_id", sa.Text, nullable=False),
    sa.Column("source", sa.Text),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Index("ix_impressions_user_ts", "user_id", "ts"),
    sa.Index("ix_impressions_video_ts", "video_id", "ts"),
    sqlite_autoincrement=True,
)

# Every commission rate a product had, from when: a purchase earns the rate in effect at its ts.
commission_rates = sa.Table(
    "commission_rates", metadata,
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("valid_from", sa.BigInteger, primary_key=True),
    sa.Column("rate", sa.Double, nullable=False),
)

# The commission ledger: append-only (never updated in place); amounts in integer cents, clawbacks negative.
ledger_entries = sa.Table(
    "ledger_entries", metadata,
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
    sa.Column("ref", sa.Text, nullable=False, server_default=""),  # a clawback's refund event_id
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("entry_id", name="uq_ledger_entries_entry_id"),
    sa.Index("ix_ledger_entries_order_id", "order_id"),
    sa.Index("ix_ledger_entries_beneficiary_ts", "beneficiary_id", "ts"),
    sa.Index("ix_ledger_entries_video_ts", "video_id", "ts"),  # merchant stats
    sqlite_autoincrement=True,
)

# Orders (and share links) whose ledger entries may need work, written in the transaction that stores their
# events: the ledger processor deletes a row only after it has appended that row's entries.
ledger_queue = sa.Table(
    "ledger_queue", metadata,
    sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.Text),
    sa.Column("share_id", sa.Text),
    sqlite_autoincrement=True,
)

# When each order's accruals settle; `settled` marks the orders whose settlement the ledger already holds.
ledger_orders = sa.Table(
    "ledger_orders", metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("settle_at", sa.BigInteger, nullable=False),
    sa.Column("settled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_ledger_orders_due", "settled", "settle_at"),
)

# One row (id = 1): the last catalog_seq handed out. Writers bump it first, which also serializes them.
catalog_counter = sa.Table(
    "catalog_counter", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="ck_catalog_counter_one_row"),
)

COUNTED: dict[str, sa.Table] = {t.name: t for t in (events, videos, products, follows, blocks, impressions,
                                                     commission_rates, ledger_entries)}
