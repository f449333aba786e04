"""Blocks and recent impressions in feed.store, and revision 0002, on a real SQLite file and real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

from feed.io import load_dataset
from feed.schema import Dataset
from feed.store import EventStore, StoreError
from feed.store.store import migration_config

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z in epoch ms


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    """A store migrated to head on each backend."""
    opened = EventStore(store_url)
    opened.upgrade()
    yield opened
    opened.close()


def blocks(*pairs: tuple[str, str]) -> pd.DataFrame:
    """A canonical blocks frame (a follow's columns) of (user_id, creator_id) pairs, blocked at T0."""
    users, creators = zip(*pairs, strict=True)
    ts = pd.Series(pd.to_datetime([T0] * len(pairs), unit="ms", utc=True)).astype("datetime64[ms, UTC]")
    return pd.DataFrame({"user_id": pd.Series(users, dtype="str"), "creator_id": pd.Series(creators, dtype="str"),
                         "ts": ts})


def impressions(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """Served feed rows of (user_id, video_id, epoch ms), one request per row."""
    users, videos, times = zip(*rows, strict=True)
    ts = pd.Series(pd.to_datetime(list(times), unit="ms", utc=True)).astype("datetime64[ms, UTC]")
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(len(rows))], "user_id": list(users),
                         "position": [0] * len(rows), "video_id": list(videos), "source": ["als"] * len(rows),
                         "ts": ts})


# --- blocks -----------------------------------------------------------------------------------------------


def test_blocks_of_lists_blocks_until_they_are_deleted(store):
    assert store.blocks_of("u1") == []
    assert store.upsert_blocks(blocks(("u1", "c2"), ("u1", "c1"), ("u2", "c1"))) == 3
    assert store.blocks_of("u1") == ["c1", "c2"] and store.blocks_of("u2") == ["c1"]
    assert store.delete_block("u1", "c1") is True
    assert store.delete_block("u1", "c1") is False  # already unblocked
    assert store.delete_block("u1", "c-never") is False
    assert store.blocks_of("u1") == ["c2"] and store.blocks_of("u2") == ["c1"]
    assert store.count("blocks") == 2


def test_a_block_again_after_an_unblock_clears_the_tombstone(store):
    store.upsert_blocks(blocks(("u1", "c1")))
    assert store.upsert_blocks(blocks(("u1", "c1"))) == 0  # unchanged: nothing stamped
    store.delete_block("u1", "c1")
    assert store.upsert_blocks(blocks(("u1", "c1"))) == 1
    assert store.blocks_of("u1") == ["c1"] and store.count("blocks") == 1
    assert store.delete_block("u1", "c1") is True


def test_blocks_and_follows_are_separate(store):
    follows = blocks(("u1", "c1"), ("u1", "c2"))  # a follow has the same columns
    store.upsert_follows(follows)
    store.upsert_blocks(blocks(("u1", "c2"), ("u1", "c3")))
    assert store.delete_follow("u1", "c2") is True
    assert store.follows_of("u1") == ["c1"] and store.blocks_of("u1") == ["c2", "c3"]
    assert store.delete_block("u1", "c1") is False
    assert store.count("follows") == 1 and store.catalog().follows["creator_id"].tolist() == ["c1"]


# --- recent impressions -----------------------------------------------------------------------------------


def test_recent_impressions_are_the_users_own_at_or_after_since(store):
    store.log_impressions(impressions([
        ("u1", "v-old", T0 - 1), ("u1", "v2", T0), ("u1", "v1", T0 + 5), ("u1", "v2", T0 + 9),
        ("u2", "v-other", T0 + 10), ("u1", "v-old", T0 - 60_000),
    ]))
    assert store.recent_impressions("u1", T0) == ["v1", "v2"]  # distinct, sorted; T0 itself included
    assert store.recent_impressions("u1", T0 - 1) == ["v-old", "v1", "v2"]
    assert store.recent_impressions("u1", T0 + 10) == []
    assert store.recent_impressions("u2", 0) == ["v-other"]
    assert store.recent_impressions("nobody", 0) == []


def test_recent_impressions_read_the_user_ts_index(store, store_url):
    seen: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "impressions" in statement:
            seen.append((statement, parameters))

    sa.event.listen(sa.Engine, "before_cursor_execute", capture)
    try:
        store.recent_impressions("u1", T0)
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", capture)
    [(statement, parameters)] = seen
    engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # an empty table: make the planner show what it could use
            conn.exec_driver_sql("SET enable_seqscan = off")
        explain = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
        plan = " ".join(str(row) for row in conn.exec_driver_sql(explain + statement, parameters))
    engine.dispose()
    assert "ix_impressions_user_ts" in plan, plan


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "args"), [
    ("blocks_of", ("u1",)), ("delete_block", ("u1", "c1")), ("recent_impressions", ("u1", T0)),
    ("upsert_blocks", (blocks(("u1", "c1")),)),
])
def test_an_unreachable_database_is_a_store_error_naming_the_url(method, args):
    store = EventStore("postgresql+psycopg://feed:s3cret@127.0.0.1:1/feed?connect_timeout=3")
    with pytest.raises(StoreError, match=r"postgresql\+psycopg://feed:\*\*\*@127.0.0.1:1/feed") as exc:
        getattr(store, method)(*args)
    assert "s3cret" not in str(exc.value)
    store.close()


def test_an_old_schema_names_the_upgrade(store_url):
    command.upgrade(migration_config(url=store_url), "0001")
    store = EventStore(store_url)
    with pytest.raises(StoreError, match="feed db upgrade"):
        store.blocks_of("u1")
    store.close()


# --- revision 0002 ----------------------------------------------------------------------------------------


def test_head_is_0004(store):
    assert EventStore.head() == "0004" == store.revision()
    assert store.upgrade() == "0004"
    store.check()


def test_upgrading_a_0001_database_adds_blocks_and_keeps_every_row(store_url):
    sample: Dataset = load_dataset(SAMPLE)
    config = migration_config(url=store_url)
    command.upgrade(config, "0001")
    store = EventStore(store_url)
    assert store.revision() == "0001"
    _insert_as_0001(store, sample.events)  # today's insert_events also queues ledger work, a 0003 table
    store.upsert_follows(sample.follows)
    store.log_impressions(impressions([("u_ana", "v01", T0)]))
    before = store.events()

    command.upgrade(config, "0002")
    assert store.revision() == "0002"
    pd.testing.assert_frame_equal(store.events(), before)
    assert store.count("follows") == len(sample.follows) and store.recent_impressions("u_ana", T0) == ["v01"]
    store.upsert_blocks(blocks(("u_ana", "c_mei")))
    assert store.blocks_of("u_ana") == ["c_mei"]

    command.downgrade(config, "0001")  # and back: only the blocks go
    assert store.revision() == "0001" and store.count("events") == len(sample.events)
    with pytest.raises(StoreError):
        store.blocks_of("u_ana")
    store.close()


def _insert_as_0001(store: EventStore, events: pd.DataFrame) -> None:
    """Insert events the way code of revision 0001 did: into the events table alone."""
    import sqlalchemy as sa

    from feed.store import tables
    from feed.store.frames import to_rows

    names, rows = to_rows(events, "events")
    with store._engine.begin() as conn:  # the store's own connection settings (SQLite pragmas, search_path)
        conn.execute(sa.insert(tables.events), [dict(zip(names, r, strict=True)) for r in rows])
