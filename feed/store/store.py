"""The event store: events, catalog, blocks and impressions in SQLite (embedded) or PostgreSQL (replicas).

SQLAlchemy Core only. Times are epoch-ms integers in the database and canonical pandas dtypes at this
boundary (`feed.store.frames`). Every write is one transaction, committed before the method returns. The schema
is built only by the Alembic migrations (`upgrade`); the other methods expect a database at head.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite

from feed.errors import FeedError
from feed.io import load_dataset, write_dataset
from feed.schema import COLUMNS, Column, Dataset
from feed.analytics import Rollup
from feed.attribution import LedgerRules
from feed.store import ledger, stats, tables
from feed.store.driver import (
    WRITE_OPTION,
    configure_sqlite,
    execute_many,
    fetch_frame,
    insert_sql,
)
from feed.store.exporting import unknown_references
from feed.store.frames import (
    IMPRESSION_COLUMNS,
    from_epoch_ms,
    from_rows,
    impression_rows,
    to_epoch_ms,
    to_rows,
    with_schema_columns,
)
from feed.validation import derive_event_ids

__all__ = ["MIGRATIONS", "VERSION_TABLE", "EventStore", "InsertResult", "StoreError", "migration_config"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Not Alembic's default name: MLflow keeps its own `alembic_version`, and both may share one database.
VERSION_TABLE = "feed_alembic_version"
UPGRADE_HINT = "run `feed db upgrade`"
BUSY_TIMEOUT_MS = 10_000  # how long a SQLite writer waits for another one before failing
CACHE_KIB = 65_536  # SQLite page cache per connection (default 2 MiB): index pages of a 1M-event log stay hot
MIGRATION_LOCK = 0x66656564_5F6462  # PostgreSQL advisory lock key held by `upgrade` (ASCII 'feed_db')
# Alembic's `context` is one global per process, so two threads must not run migrations at once (even on two
# databases); the database locks in `upgrade` order processes and threads on the same database.
_ALEMBIC_RUNS = threading.Lock()


class StoreError(FeedError):
    """The event store is unreachable, not migrated, or refused a write; names the URL (password masked)."""


@dataclass(frozen=True)
class InsertResult:
    """How many events of a batch were new, and how many were already stored (or repeated in the batch)."""

    inserted: int
    duplicates: int


def migration_config(url: str | None = None, connection: sa.Connection | None = None) -> Config:
    """An Alembic config for the store's migrations (no alembic.ini): over `connection`, else to `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_table", VERSION_TABLE)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser interpolates '%'
    config.attributes["connection"] = connection
    return config


class EventStore:
    """Events, catalog and impressions in one database chosen by URL (sqlite:///… or postgresql+psycopg://…)."""

    def __init__(self, url: str) -> None:
        """Create the engine only: nothing is connected or created until a method needs it."""
        self._engine = _create_engine(url)
        self.url = self._engine.url.render_as_string(hide_password=True)
        self._postgres = self._engine.dialect.name == "postgresql"

    def __repr__(self) -> str:
        return f"EventStore({self.url!r})"

    # --- schema -------------------------------------------------------------------------------------------

    def upgrade(self) -> str:
        """Migrate to the newest revision and return it (a no-op at head; concurrent callers take turns)."""
        if not self._postgres and (path := self._engine.url.database) not in (None, "", ":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)  # only upgrade creates a new database
        with self._errors("upgrade"), self._transaction(write=True) as conn:
            if self._postgres:  # released at commit; on SQLite, BEGIN IMMEDIATE already makes writers take turns
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            with _ALEMBIC_RUNS:
                command.upgrade(migration_config(connection=conn), "head")
        return self.revision() or ""

    def revision(self) -> str | None:
        """The database's current Alembic revision; None for an empty database."""
        with self._errors("read the schema revision of"), self._engine.connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

    @staticmethod
    def head() -> str:
        """The newest revision of the shipped migrations."""
        return ScriptDirectory.from_config(migration_config()).get_current_head() or ""

    def check(self) -> None:
        """Raise StoreError unless the database is reachable and at the newest revision."""
        current, head = self.revision(), self.head()
        if current == head:
            return
        if current is not None and current not in _known_revisions():
            raise StoreError(f"the event store at {self.url} is at revision {current}, which this version of "
                             f"feed does not know (expected {head}): newer code migrated it; upgrade feed")
        found = "has no schema" if current is None else f"is at revision {current}"
        raise StoreError(f"the event store at {self.url} {found}; expected revision {head}: {UPGRADE_HINT} "
                         "with this URL to migrate it")

    # --- events -------------------------------------------------------------------------------------------

    def insert_events(self, events: pd.DataFrame) -> InsertResult:
        """Store a canonical events batch in one transaction; known event_ids (and repeats) are skipped."""
        unique = _unique_events(events)
        names, rows = to_rows(unique, "events", received_at=int(time.time() * 1000))
        inserted = 0
        if rows:
            with self._errors("insert events into"), self._transaction(write=True) as conn:
                inserted = execute_many(conn, insert_sql(conn, tables.events, names, skip_key="event_id"), rows)
                ledger.enqueue(conn, ledger.queue_rows(unique))  # with the events, or not at all
        return InsertResult(inserted=inserted, duplicates=len(events) - inserted)

    def events(self, since: pd.Timestamp | None = None, until: pd.Timestamp | None = None) -> pd.DataFrame:
        """Every event with since <= ts < until (either bound optional), canonical, in (ts, seq) order."""
        return self._read_events(_ts_range(_select_events(), since, until))

    def user_events(self, user_id: str, since: pd.Timestamp | None = None) -> pd.DataFrame:
        """One user's events with ts >= since (all when None), canonical, in (ts, seq) order."""
        return self._read_events(_ts_range(_select_events().where(tables.events.c.user_id == user_id), since))

    def user_seq(self, user_id: str) -> int:
        """The highest seq among the user's events (0 when none): it changes whenever the user acts."""
        seq = tables.events.c.seq
        stmt = sa.select(sa.func.coalesce(sa.func.max(seq), 0)).where(tables.events.c.user_id == user_id)
        with self._errors("read from"), self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    # --- catalog ------------------------------------------------------------------------------------------

    def upsert_videos(self, videos: pd.DataFrame) -> int:
        """Insert or update videos by video_id; returns how many rows were new or changed.

        Like every upsert: an existing row changes only in the columns the frame has (a frame of video_id and
        title renames videos and keeps the rest); a new row gets NULL for the columns the frame lacks.
        """
        attribution = {"creator_id", "product_id"} & set(videos.columns)
        return self._upsert(tables.videos, "videos", videos, ["video_id"],  # who earns from their purchases
                            then=(lambda conn, changed: ledger.enqueue_videos(conn, changed)) if attribution else None)

    def upsert_products(self, products: pd.DataFrame, now_ms: int | None = None) -> int:
        """Insert or update products by product_id; returns how many rows were new or changed.

        A changed commission_rate becomes a new rate version valid from `now_ms` (default: now), so it applies
        to later purchases only; a new product's first rate is valid for all its purchases (already stored ones
        are queued for the ledger)."""
        now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
        return self._upsert(tables.products, "products", products, ["product_id"],
                            then=lambda conn, _: ledger.record_rates(conn, products, now_ms))

    def upsert_follows(self, follows: pd.DataFrame) -> int:
        """Insert, update or restore follows by (user_id, creator_id); returns how many were new or changed."""
        return self._upsert(tables.follows, "follows", follows, ["user_id", "creator_id"], deleted=False)

    def delete_follow(self, user_id: str, creator_id: str) -> bool:
        """Unfollow (kept as a tombstone that catalog_since reports); False when there was no such follow."""
        return self._tombstone(tables.follows, "delete a follow in", user_id, creator_id)

    def upsert_blocks(self, blocks: pd.DataFrame) -> int:
        """Insert, update or restore blocks by (user_id, creator_id); returns how many were new or changed."""
        return self._upsert(tables.blocks, "blocks", blocks, ["user_id", "creator_id"], deleted=False)

    def delete_block(self, user_id: str, creator_id: str) -> bool:
        """Unblock (kept as a tombstone, like an unfollow); False when the user had not blocked the creator."""
        return self._tombstone(tables.blocks, "delete a block in", user_id, creator_id)

    def catalog_since(self, seq: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
        """Videos, products and follows changed after catalog mark `seq`, and the new mark (one snapshot).

        The follows frame has an extra bool column `deleted`; its True rows are unfollows.
        """
        with self._errors("read the catalog of"), self._transaction(snapshot=True) as conn:
            mark = int(conn.execute(sa.select(tables.catalog_counter.c.value)).scalar_one())
            videos, products, follows = (self._read_table(conn, t, name, t.c.catalog_seq > seq, extra)
                                         for t, name, extra in _CATALOG)
        return videos, products, follows, mark

    def catalog(self) -> Dataset:
        """The whole catalog as a Dataset with no events; a table without rows is None."""
        with self._errors("read the catalog of"), self._transaction(snapshot=True) as conn:
            return self._catalog(conn, from_rows("events", []))

    def follows_of(self, user_id: str) -> list[str]:
        """The creator ids the user follows, sorted."""
        return self._creators_of(tables.follows, user_id)

    def blocks_of(self, user_id: str) -> list[str]:
        """The creator ids the user blocked (and did not unblock since), sorted."""
        return self._creators_of(tables.blocks, user_id)

    def product_owner(self, product_id: str) -> tuple[bool, str | None]:
        """(whether the store has the product, its merchant or None)."""
        t = tables.products
        stmt = sa.select(t.c.merchant_id).where(t.c.product_id == product_id)
        with self._errors("read from"), self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return (False, None) if row is None else (True, row[0])

    def video_row(self, video_id: str) -> dict[str, object] | None:
        """A stored video's creator_id, product_id and published_at (epoch ms); None when it is not stored."""
        t = tables.videos
        stmt = sa.select(t.c.creator_id, t.c.product_id, t.c.published_at).where(t.c.video_id == video_id)
        with self._errors("read from"), self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else dict(row._mapping)

    # --- impressions, counts, export ----------------------------------------------------------------------

    def log_impressions(self, rows: pd.DataFrame) -> int:
        """Append served feed rows (request_id, user_id, position, video_id, source, ts) in one transaction."""
        params = impression_rows(rows)
        if params:
            with self._errors("log impressions in"), self._transaction(write=True) as conn:
                execute_many(conn, insert_sql(conn, tables.impressions, IMPRESSION_COLUMNS), params)
        return len(params)

    def recent_impressions(self, user_id: str, since_ms: int) -> list[str]:
        """The distinct video ids shown to the user at or after `since_ms` (epoch ms), sorted."""
        t = tables.impressions
        # user_id = ? AND ts >= ?: one range of ix_impressions_user_ts, however many users the table holds
        stmt = (sa.select(t.c.video_id).distinct().where(t.c.user_id == user_id, t.c.ts >= int(since_ms))
                .order_by(t.c.video_id))
        with self._errors("read impressions from"), self._engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def count(self, table: str) -> int:
        """The number of rows of one table (follows and blocks: live ones, not their tombstones)."""
        if table not in tables.COUNTED:
            raise ValueError(f"unknown table {table!r}; expected one of {', '.join(tables.COUNTED)}")
        t = tables.COUNTED[table]
        stmt = sa.select(sa.func.count()).select_from(t)
        with self._errors("count rows in"), self._engine.connect() as conn:
            return int(conn.execute(stmt.where(~t.c.deleted) if "deleted" in t.c else stmt).scalar_one())

    def export(self, folder: Path, since: pd.Timestamp | None = None, fmt: str = "parquet") -> Dataset:
        """Write the events with ts >= since (all when None) and the whole catalog as a dataset folder.

        Returns the folder loaded back with `feed.io.load_dataset`. Raises StoreError, before writing anything,
        when no event is selected or when an event or video names an id the catalog lacks (the ids are
        listed: exporting never drops catalog tables to make the dataset valid).
        """
        with self._errors("export"), self._transaction(snapshot=True) as conn:
            dataset = self._catalog(conn, fetch_frame(conn, _ts_range(_select_events(), since), "events"))
        window = "" if since is None else f" since {since}"
        if dataset.events.empty:
            raise StoreError(f"the event store at {self.url} has no events{window}; nothing to export to {folder}")
        if problems := unknown_references(dataset):
            raise StoreError(f"cannot export the event store at {self.url}{window} to {folder}: "
                             f"{'; '.join(problems)}; upsert the missing catalog rows, then export again")
        write_dataset(dataset, Path(folder), fmt)
        return load_dataset(Path(folder))

    # --- reads for creator and merchant stats --------------------------------------------------------------

    def videos_of(self, creator_id: str | None = None, product_ids: list[str] | None = None) -> pd.DataFrame:
        """Canonical videos of a creator and/or of some products, in video_id order."""
        t = tables.videos
        where = [sa.true()] if creator_id is None else [t.c.creator_id == creator_id]
        where += [] if product_ids is None else [t.c.product_id.in_(product_ids)]
        with self._errors("read videos from"), self._transaction(snapshot=True) as conn:
            return self._read_table(conn, t, "videos", sa.and_(*where))

    def products_of(self, merchant_id: str) -> pd.DataFrame:
        """Canonical products of a merchant, in product_id order."""
        t = tables.products
        with self._errors("read products from"), self._transaction(snapshot=True) as conn:
            return self._read_table(conn, t, "products", t.c.merchant_id == merchant_id)

    def video_events(self, video_ids: list[str], since: pd.Timestamp | None = None,
                     until: pd.Timestamp | None = None) -> pd.DataFrame:
        """Every event on these videos with since <= ts < until, canonical, in (ts, seq) order."""
        stmt = _ts_range(_select_events().where(tables.events.c.video_id.in_(video_ids)), since, until)
        return self._read_events(stmt)

    def order_events(self, order_ids: list[str], until: pd.Timestamp | None = None) -> pd.DataFrame:
        """The purchase and refund events of these orders with ts < until, canonical, in (ts, seq) order."""
        ev, ids = tables.events, sorted(set(order_ids))
        frames = [self._read_events(_ts_range(_select_events().where(
            ev.c.order_id.in_(ids[start:start + ledger.CHUNK]), ev.c.event.in_(("purchase", "refund"))), None, until))
            for start in range(0, len(ids), ledger.CHUNK)]
        if not frames:
            return from_rows("events", [])
        return pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable", ignore_index=True)

    def video_impressions(self, video_ids: list[str], since: pd.Timestamp | None = None,
                          until: pd.Timestamp | None = None) -> pd.DataFrame:
        """Served-feed impressions of these videos: request_id, user_id, video_id, source, ts (UTC times)."""
        t = tables.impressions
        stmt = sa.select(t.c.request_id, t.c.user_id, t.c.video_id, t.c.source, t.c.ts).where(t.c.video_id.in_(video_ids))
        stmt = stmt.where(t.c.ts >= to_epoch_ms(pd.Series([since]))[0]) if since is not None else stmt
        stmt = stmt.where(t.c.ts < to_epoch_ms(pd.Series([until]))[0]) if until is not None else stmt
        with self._errors("read impressions from"), self._transaction(snapshot=True) as conn:
            frame = pd.DataFrame(conn.execute(stmt.order_by(t.c.ts, t.c.id)).all(),
                                 columns=["request_id", "user_id", "video_id", "source", "ts"])
        frame["ts"] = from_epoch_ms(frame["ts"].astype("int64").tolist())
        return frame

    def stats_rollup(self, videos: pd.DataFrame, since: pd.Timestamp | None = None,
                     until: pd.Timestamp | None = None, levels: tuple[str, ...] = ()) -> Rollup:
        """The creator/merchant stats inputs of since <= ts < until on these videos (canonical rows), summed by
        the database in one snapshot (`feed.store.stats`); `levels`: more video columns to count viewers by."""
        with self._errors("read stats from"), self._transaction(snapshot=True) as conn:
            return stats.rollup(conn, videos, since, until, levels)

    def ledger_sums(self, beneficiary_id: str | None = None, since: pd.Timestamp | None = None,
                    until: pd.Timestamp | None = None, video_ids: list[str] | None = None) -> pd.DataFrame:
        """Ledger cents per (role, kind, video_id, product_id, UTC day) by beneficiary, videos and range."""
        with self._errors("read the ledger of"), self._transaction(snapshot=True) as conn:
            return stats.ledger_sums(conn, stats.ledger_where(beneficiary_id, since, until, video_ids))

    def has_ledger_entries(self, beneficiary_id: str) -> bool:
        """Whether any ledger entry ever paid this beneficiary (as a creator or a sharer)."""
        with self._errors("read the ledger of"), self._engine.connect() as conn:
            return stats.has_entries(conn, beneficiary_id)

    # --- ledger -------------------------------------------------------------------------------------------

    def process_ledger(self, rules: LedgerRules, now_ms: int | None = None, limit: int = 2_000) -> ledger.LedgerRun:
        """Append the entries owed by queued orders and due settlements (one pass of at most `limit` rows)."""
        now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
        with self._errors("update the ledger of"), self._transaction(write=True) as conn:
            return ledger.process(conn, rules, now_ms, limit, self._postgres)

    def catch_up_ledger(self, rules: LedgerRules, now_ms: int | None = None,
                        max_passes: int = 100_000) -> ledger.LedgerRun:
        """Process the ledger until its queue is empty (or `max_passes`, while events keep arriving); totals."""
        orders = entries = remaining = 0
        for _ in range(max_passes):
            run = self.process_ledger(rules, now_ms)
            orders, entries, remaining = orders + run.orders, entries + run.entries, run.remaining
            if run.remaining == 0 and run.orders == 0:
                break
        return ledger.LedgerRun(orders=orders, entries=entries, remaining=remaining)

    def rebuild_ledger(self, rules: LedgerRules, now_ms: int | None = None) -> ledger.LedgerRun:
        """Recompute every order from the events: appends only the corrections (none when it is up to date)."""
        with self._errors("queue the orders of"), self._transaction(write=True) as conn:
            ledger.enqueue_all(conn)
        return self.catch_up_ledger(rules, now_ms)

    def ledger_backlog(self) -> int:
        """How many queued orders and share links the ledger has not processed yet."""
        stmt = sa.select(sa.func.count()).select_from(tables.ledger_queue)
        with self._errors("read the ledger queue of"), self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def ledger_entries(self, beneficiary_id: str | None = None, order_ids: list[str] | None = None,
                       since: pd.Timestamp | None = None, until: pd.Timestamp | None = None,
                       video_ids: list[str] | None = None) -> pd.DataFrame:
        """Ledger entries (feed.attribution.ENTRY_COLUMNS) by beneficiary, orders, videos and since <= ts < until."""
        t = tables.ledger_entries
        where = [] if beneficiary_id is None else [t.c.beneficiary_id == beneficiary_id]
        where += [] if order_ids is None else [t.c.order_id.in_(order_ids)]
        where += [] if video_ids is None else [t.c.video_id.in_(video_ids)]
        where += [] if since is None else [t.c.ts >= to_epoch_ms(pd.Series([since]))[0]]
        where += [] if until is None else [t.c.ts < to_epoch_ms(pd.Series([until]))[0]]
        with self._errors("read the ledger of"), self._transaction(snapshot=True) as conn:
            return ledger.entries(conn, where)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    # --- internals ----------------------------------------------------------------------------------------

    def _upsert(self, t: sa.Table, name: str, frame: pd.DataFrame, key: list[str],
                then: Callable[[sa.Connection, list[str]], None] | None = None, **constant: object) -> int:
        """Insert-or-update the rows whose content changed, stamping them with one new catalog_seq.

        `then` runs in the same transaction, after the upsert, with the first key column of the changed rows."""
        names, rows = to_rows(frame.drop_duplicates(subset=key, keep="last"), name, **constant)
        if not rows:
            return 0
        stmt = (postgresql.insert if self._postgres else sqlite.insert)(t)
        given = {*frame.columns, *constant}
        data = [c.name for c in t.columns if c.name in given and c.name not in (*key, "catalog_seq")]
        changed = sa.or_(sa.false(), *(t.c[c].is_distinct_from(stmt.excluded[c]) for c in data))
        stmt = stmt.on_conflict_do_update(
            index_elements=key, set_={c: stmt.excluded[c] for c in [*data, "catalog_seq"]}, where=changed)
        with self._errors(f"upsert {name} into"), self._transaction(write=True) as conn:
            stamp = _next_catalog_seq(conn)
            params = [dict(zip(names, row, strict=True), catalog_seq=stamp) for row in rows]
            changed = [str(row[0]) for row in conn.execute(stmt.returning(t.c[key[0]]), params).all()]
            if then is not None:
                then(conn, changed)
            return len(changed)

    def _tombstone(self, t: sa.Table, action: str, user_id: str, creator_id: str) -> bool:
        """Mark a live (user_id, creator_id) row of follows or blocks deleted; False when there was none."""
        with self._errors(action), self._transaction(write=True) as conn:
            stamp = _next_catalog_seq(conn)
            done = conn.execute(t.update().where(t.c.user_id == user_id, t.c.creator_id == creator_id,
                                                 ~t.c.deleted).values(deleted=True, catalog_seq=stamp))
            return done.rowcount > 0

    def _creators_of(self, t: sa.Table, user_id: str) -> list[str]:
        """The creator ids of the user's live rows in follows or blocks, sorted (one range of the key)."""
        stmt = sa.select(t.c.creator_id).where(t.c.user_id == user_id, ~t.c.deleted).order_by(t.c.creator_id)
        with self._errors("read from"), self._engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def _catalog(self, conn: sa.Connection, events: pd.DataFrame) -> Dataset:
        """A Dataset of `events` and the full catalog tables (None when empty), read over `conn`."""
        frames = {name: self._read_table(conn, t, name, ~t.c.deleted if name == "follows" else sa.true())
                  for t, name, _ in _CATALOG}
        return Dataset(events=events, **{name: f if len(f) else None for name, f in frames.items()})

    @staticmethod
    def _read_table(conn: sa.Connection, t: sa.Table, name: str, where: sa.ColumnElement[bool],
                    extra: tuple[Column, ...] = ()) -> pd.DataFrame:
        """Canonical rows of a catalog table matching `where` (plus `extra` columns), in key order."""
        columns = [sa.cast(col, sa.Integer).label(col.name) if isinstance(col.type, sa.Boolean) else col
                   for col in [t.c[c.name] for c in (*COLUMNS[name], *extra)]]
        return fetch_frame(conn, sa.select(*columns).where(where).order_by(*t.primary_key.columns), name, extra)

    def _read_events(self, stmt: sa.Select) -> pd.DataFrame:
        """Canonical events of a select over the events table."""
        with self._errors("read events from"), self._transaction() as conn:
            return fetch_frame(conn, stmt, "events")

    @contextmanager
    def _transaction(self, write: bool = False, snapshot: bool = False) -> Iterator[sa.Connection]:
        """One transaction: `write` takes SQLite's write lock up front, `snapshot` reads one consistent state."""
        with self._engine.connect() as conn:
            if snapshot and self._postgres:  # SQLite's read transactions are snapshots already (WAL)
                conn.execution_options(isolation_level="REPEATABLE READ")
            conn.execution_options(**{WRITE_OPTION: write})
            with conn.begin():
                yield conn

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn driver errors into StoreError naming the URL (password masked) and what to do."""
        dbapi = self._engine.dialect.loaded_dbapi
        try:
            yield
        except (sa.exc.IntegrityError, dbapi.IntegrityError) as exc:
            raise StoreError(f"could not {action} the event store at {self.url}: the database rejected the "
                             f"batch, so nothing was stored: {_reason(exc)}") from exc
        except (sa.exc.DBAPIError, dbapi.Error) as exc:
            raise StoreError(f"could not {action} the event store at {self.url}: {_reason(exc)}; check that the "
                             f"database is reachable, then {UPGRADE_HINT} if its schema is missing or old") from exc


_CATALOG = ((tables.videos, "videos", ()), (tables.products, "products", ()),
            (tables.follows, "follows", (Column("deleted", "bool", True),)))


def _create_engine(url: str) -> sa.Engine:
    """An engine for a sqlite or postgresql URL; SQLite connections get WAL, FULL sync, FKs, a busy timeout."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError("cannot parse the event store URL; expected sqlite:///path/to/feed.db or "
                         "postgresql+psycopg://user@host:5432/db") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver the project installs
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported event store {parsed.render_as_string(hide_password=True)}; "
                         "expected a sqlite:/// or postgresql+psycopg:// URL")
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True)
    return configure_sqlite(sa.create_engine(parsed), busy_timeout_ms=BUSY_TIMEOUT_MS, cache_kib=CACHE_KIB)


def _known_revisions() -> set[str]:
    """Every revision of the shipped migrations."""
    return {script.revision for script in ScriptDirectory.from_config(migration_config()).walk_revisions()}


def _next_catalog_seq(conn: sa.Connection) -> int:
    """Advance the global catalog counter; its row lock also makes PostgreSQL catalog writers take turns."""
    t = tables.catalog_counter
    return int(conn.execute(t.update().values(value=t.c.value + 1).returning(t.c.value)).scalar_one())


def _select_events() -> sa.Select:
    """SELECT of the events table's schema columns."""
    return sa.select(*(tables.events.c[c.name] for c in COLUMNS["events"]))


def _ts_range(stmt: sa.Select, since: pd.Timestamp | None, until: pd.Timestamp | None = None) -> sa.Select:
    """An events select restricted to since <= ts < until (a naive bound means UTC), in (ts, seq) order."""
    ts = tables.events.c.ts
    if since is not None:
        stmt = stmt.where(ts >= to_epoch_ms(pd.Series([since]))[0])
    if until is not None:
        stmt = stmt.where(ts < to_epoch_ms(pd.Series([until]))[0])
    return stmt.order_by(ts, tables.events.c.seq)


def _unique_events(events: pd.DataFrame) -> pd.DataFrame:
    """The batch with blank event_ids derived from the row (as feed.io does) and repeats of an id dropped."""
    frame = with_schema_columns(events, "events")
    missing = frame["event_id"].isna()
    if missing.any():
        frame = frame.assign(event_id=frame["event_id"].fillna(derive_event_ids(frame[missing])))
    return frame[~frame["event_id"].duplicated()]


def _reason(exc: Exception) -> str:
    """The driver's message on one line, without SQLAlchemy's statement and parameter dump."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:500]
