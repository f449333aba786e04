"""Creator and merchant stats read their videos' events by type: ix_events_video_ts (video_id, ts) becomes
ix_events_video_event_ts (video_id, event, ts, user_id).

The stats sum views, count distinct viewers and read shares, purchases and refunds in the database
(`feed.store.stats`); each of those queries names one event type, so with the type in the index it reads only
that type's entries (views are a quarter of a creator's events, purchases under 1 %), and distinct viewers
come from the index alone (user_id is in it). It replaces the old index rather than joining it, so ingestion
keeps one index on the video.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Written by hand: migrations never depend on the current `feed.store.tables`, which moves on.
"""

from __future__ import annotations

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Index events by (video_id, event, ts, user_id) instead of (video_id, ts)."""
    op.create_index("ix_events_video_event_ts", "events", ["video_id", "event", "ts", "user_id"])
    op.drop_index("ix_events_video_ts", "events")


def downgrade() -> None:
    """Back to the (video_id, ts) index of 0003."""
    op.create_index("ix_events_video_ts", "events", ["video_id", "ts"])
    op.drop_index("ix_events_video_event_ts", "events")
