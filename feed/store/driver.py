"""Driver-level parts of the event store: SQLite connection settings, and the hot paths on the driver's cursor.

Bulk inserts and large reads run on the driver's own cursor inside the SQLAlchemy transaction, skipping
SQLAlchemy's per-row work (parameter processing, Row objects): a 1,000-row batch is one `executemany` of one
statement, and a read is fetched in chunks straight into Arrow.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence

import pandas as pd
import sqlalchemy as sa

from feed.schema import Column
from feed.store.frames import from_rows

FETCH_ROWS = 50_000  # rows per fetchmany: bounds the Python objects alive at once while reading
WRITE_OPTION = "feed_write"  # execution option of a transaction that writes: SQLite begins it IMMEDIATE


def insert_sql(conn: sa.Connection, table: sa.Table, names: Sequence[str], skip_key: str | None = None) -> str:
    """INSERT of `names` with positional markers; ON CONFLICT (skip_key) DO NOTHING when given."""
    quote = conn.dialect.identifier_preparer.quote
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"  # sqlite3: qmark; psycopg: %s
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, names))}) "
           f"VALUES ({', '.join([mark] * len(names))})")
    return sql if skip_key is None else f"{sql} ON CONFLICT ({quote(skip_key)}) DO NOTHING"


def execute_many(conn: sa.Connection, sql: str, rows: list[tuple]) -> int:
    """Run one statement for every row in the connection's transaction; returns the rows it changed."""
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql, rows)
        return cursor.rowcount
    finally:
        cursor.close()


def fetch_frame(conn: sa.Connection, stmt: sa.Select, table: str,
                extra: Sequence[Column] = ()) -> pd.DataFrame:
    """Run a select of the table's schema columns (then `extra`) and return the canonical frame."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    bound = params if compiled.positiontup is None else tuple(params[k] for k in compiled.positiontup)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(str(compiled), bound)
        return from_rows(table, _chunks(cursor), extra)
    finally:
        cursor.close()


def configure_sqlite(engine: sa.Engine, busy_timeout_ms: int, cache_kib: int) -> sa.Engine:
    """SQLite connections with WAL, synchronous=FULL (a commit is on disk), foreign keys and a busy timeout."""
    sa.event.listen(engine, "connect", functools.partial(_sqlite_connect, busy_timeout_ms=busy_timeout_ms,
                                                         cache_kib=cache_kib))
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: object, busy_timeout_ms: int,
                    cache_kib: int) -> None:
    """Per-connection SQLite settings; the driver's implicit BEGIN is off so that _sqlite_begin decides."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    _retry_locked(busy_timeout_ms, lambda: cursor.execute("PRAGMA journal_mode = WAL"))
    for pragma in ("synchronous = FULL", "foreign_keys = ON", f"cache_size = -{cache_kib}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _retry_locked(timeout_ms: int, run: Callable[[], object]) -> None:
    """Run, retrying while SQLite says 'locked' (switching a new file to WAL ignores busy_timeout)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            run()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(conn: sa.Connection) -> None:
    """Writers BEGIN IMMEDIATE: they wait (busy_timeout) for the write lock up front, never fail half-way."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")


def _chunks(cursor: object) -> Iterator[list[tuple]]:
    """The cursor's rows, FETCH_ROWS at a time."""
    while rows := cursor.fetchmany(FETCH_ROWS):
        yield rows
