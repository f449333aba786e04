"""Creator stats from SQL aggregates vs from raw rows in pandas: latency and peak Python memory, same run.

The default world is stored twice per database (SQLite, and PostgreSQL when reachable), each with its ledger
caught up: at revision 0003 (events indexed by (video_id, ts)) for the raw-rows paths, at head (0004: by
(video_id, event, ts, user_id)) for the aggregated one. For each of the busiest creators, three paths answer the
same question and must agree (the script checks; avg_watch_ratio to 1e-12):

- before: what `GET /v1/creators/{id}/stats` ran at commit 121dbc3: every event and served row of the creator's
  videos read into pandas (`video_events`, `video_impressions`, `ledger_entries`) and `feed/analytics.py` of
  that commit, loaded from git (the row is left out when git or the commit is missing);
- raw rows, today's pandas: the same reads, then today's `feed.analytics.creator_stats` (a rollup built in
  pandas, then the report code the route uses): what the SQL aggregation alone saves;
- aggregated: what the route runs now (`serving.stats_routes.read_creator_stats`): the database sums views and
  impressions (`EventStore.stats_rollup`, `ledger_sums`); only shares, purchases and refunds come back as rows,
  plus the (video, user) views of the buyers.

PostgreSQL stores are ANALYZEd after loading, as autovacuum would have done in service (SQLite stores are not:
the service never runs ANALYZE on them). Latency: the paths alternate, --repeat calls per creator each; median
and p99 over all calls. Memory: one more call per creator under tracemalloc (Python and numpy allocations;
Arrow's buffers while fetching are not traced); the largest peak over the creators. Rows: what the database
sent for the busiest creator. Loading the world also gives the insert rate at each revision (50,000-event
batches, ledger queue included).

Usage: python benchmarks/bench_stats.py [--creators 20] [--repeat 3] [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic import command
from rich.console import Console
from rich.table import Table

from feed import analytics
from feed.attribution import LedgerRules
from feed.store.store import EventStore, migration_config
from feed.world import WorldParams, generate_world
from serving.stats_routes import read_creator_stats

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BATCH = 50_000  # events per insert while loading the world
OLD = "0003"  # the revision the raw-rows paths ran on
BEFORE_COMMIT = "121dbc3"  # the last commit whose stats route read raw rows
REPO = Path(__file__).resolve().parents[1]
BEFORE, RAW, AGGREGATED = "before: raw rows, 121dbc3 pandas", "raw rows, today's pandas", "aggregated (SQL)"
Stats = Callable[[EventStore, str, pd.Timestamp | None, pd.Timestamp | None], dict[str, Any] | None]


def raw_frames(store: EventStore, creator: str, since: pd.Timestamp | None,
               until: pd.Timestamp | None) -> tuple[pd.DataFrame, ...]:
    """What the route read before: the creator's videos, every event and served row on them, ledger entries."""
    videos = store.videos_of(creator_id=creator)
    entries = store.ledger_entries(beneficiary_id=creator, since=since, until=until)
    ids = videos["video_id"].astype(str).tolist()
    events = store.video_events(ids, since, until)
    refunded = events.loc[events["event"] == "refund", "order_id"].dropna().unique().tolist()
    if since is not None and refunded:  # earlier purchases and refunds of the orders refunded in the range
        events = pd.concat([store.order_events([str(o) for o in refunded], until=since), events], ignore_index=True)
    return videos, events, store.video_impressions(ids, since, until), entries


def raw_rows(computation: types.ModuleType) -> Stats:
    """The creator stats from every raw row of the creator's videos, by `computation.creator_stats`."""
    def stats(store: EventStore, creator: str, since: pd.Timestamp | None,
              until: pd.Timestamp | None) -> dict[str, Any] | None:
        videos, events, served, entries = raw_frames(store, creator, since, until)
        if videos.empty and entries.empty:
            return None
        return computation.creator_stats(videos, None, events, served, entries, since, until, creator_id=creator)
    return stats


def analytics_before() -> types.ModuleType | None:
    """feed/analytics.py as of BEFORE_COMMIT, loaded from git; None when git or the commit is not there."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:feed/analytics.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("analytics_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BEFORE_COMMIT}:feed/analytics.py", "exec"), module.__dict__)  # noqa: S102 - our own code
    return module


def rows_returned(path: str, store: EventStore, creator: str, since, until) -> int:
    """How many rows the database sends for one creator's stats on each path."""
    if path != AGGREGATED:
        return sum(map(len, raw_frames(store, creator, since, until)))
    videos = store.videos_of(creator_id=creator)
    r = store.stats_rollup(videos, since, until)
    frames = [videos, r.views, r.impressions, r.seen, r.shares, r.reached, r.orders, r.refunds,
              store.ledger_sums(beneficiary_id=creator, since=since, until=until)]
    return sum(map(len, frames)) + sum(map(len, r.viewers.values()))


def load_world(url: str, world, revision: str) -> tuple[EventStore, float]:
    """(a store at `url` migrated to `revision` holding the world and its caught-up ledger, events/s inserted)."""
    data = world.dataset
    command.upgrade(migration_config(url=url), revision)
    store = EventStore(url)
    store.upsert_products(data.products, now_ms=0)
    store.upsert_videos(data.videos)
    start = time.perf_counter()
    for lo in range(0, len(data.events), BATCH):
        store.insert_events(data.events.iloc[lo:lo + BATCH])
    rate = len(data.events) / (time.perf_counter() - start)
    end = int(data.events["ts"].max().value // 1_000_000) + 30 * 86_400_000
    store.catch_up_ledger(LedgerRules(), now_ms=end)
    if url.startswith("postgresql"):  # autovacuum would, a minute later; plans without statistics are guesses
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
        engine.dispose()
    return store, rate


def timed(fn: Stats, store: EventStore, creator: str, since, until) -> tuple[float, dict[str, Any] | None]:
    """(seconds, result) of one call."""
    gc.collect()
    start = time.perf_counter()
    out = fn(store, creator, since, until)
    return time.perf_counter() - start, out


def peak_mib(fn: Stats, store: EventStore, creator: str, since, until) -> float:
    """Peak traced Python memory of one call, MiB."""
    gc.collect()
    tracemalloc.start()
    try:
        fn(store, creator, since, until)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def same(a: Any, b: Any) -> bool:
    """Equal JSON values (floats to 1e-12 relative; both paths sum the same integers, so they are exact here)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))
    return a == b


def measure(paths: dict[str, Stats], stores: dict[str, EventStore], creators: list[str], since, until,
            repeat: int) -> dict[str, dict[str, float]]:
    """Per path: median and p99 ms over all calls, the busiest creator's median ms, peak MiB, rows returned."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    top: dict[str, list[float]] = {name: [] for name in paths}
    for creator in creators:
        for _ in range(repeat):
            results = []
            for name, fn in paths.items():
                seconds, result = timed(fn, stores[name], creator, since, until)
                times[name].append(seconds)
                top[name] += [seconds] if creator == creators[0] else []
                results.append(result)
            if not all(same(result, results[0]) for result in results[1:]):
                raise SystemExit(f"the paths disagree for creator {creator} ({since} to {until})")
    out = {}
    for name, fn in paths.items():
        peak = max(peak_mib(fn, stores[name], creator, since, until) for creator in creators)
        out[name] = {"median": 1000 * statistics.median(times[name]), "p99": 1000 * np.percentile(times[name], 99),
                     "top": 1000 * statistics.median(top[name]), "peak": peak,
                     "rows": rows_returned(name, stores[name], creators[0], since, until)}
    return out


def postgres_url(url: str) -> tuple[str, str] | None:
    """(URL on a new schema, schema name), or None when PostgreSQL is unreachable."""
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
        name = f"bench_stats_{uuid.uuid4().hex[:8]}"
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        engine.dispose()
    except sa.exc.OperationalError:
        return None
    return sa.make_url(url).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(False), name


def drop_schema(url: str, name: str) -> None:
    """Drop a schema made by postgres_url."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    engine.dispose()


def backends(tmp: Path, postgres: str | None) -> list[tuple[str, dict[str, tuple[str, str | None]]]]:
    """(name, {revision: (URL, PostgreSQL schema or None)}) per database: one store at OLD, one at head."""
    out = [("SQLite", {revision: (f"sqlite:///{tmp / f'{revision}.db'}", None) for revision in (OLD, "head")})]
    if postgres is not None and (old := postgres_url(postgres)) is not None:
        out.append(("PostgreSQL", {OLD: old, "head": postgres_url(postgres)}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creators", type=int, default=20, help="the busiest N creators")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    world = generate_world(WorldParams())
    data = world.dataset
    busiest = data.events.merge(data.videos[["video_id", "creator_id"]])["creator_id"].value_counts()
    creators = [str(c) for c in busiest.index[:args.creators]]
    end = data.events["ts"].max().normalize() + pd.Timedelta(days=1)
    ranges = {"all time": (None, None), "last 7 days": (end - pd.Timedelta(days=7), end)}
    paths = {RAW: raw_rows(analytics), AGGREGATED: read_creator_stats}
    if (before := analytics_before()) is not None:
        paths = {BEFORE: raw_rows(before), **paths}
    table = Table(title=f"Creator stats, default world ({len(data.events):,} events): the {len(creators)} busiest "
                        f"creators ({busiest.iloc[0]:,} to {busiest.iloc[len(creators) - 1]:,} events), "
                        f"{args.repeat} calls each per path")
    for column in ("store", "range", "path", "median ms", "p99 ms", "busiest ms", "peak MiB", "rows (busiest)",
                   f"× vs {next(iter(paths)).split(':')[0]} (median)"):
        table.add_column(column, justify="right")
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, urls in backends(Path(tmp), None if args.no_postgres else args.postgres):
            loaded = {revision: load_world(url, world, revision) for revision, (url, _) in urls.items()}
            notes.append(f"{name}: inserted {loaded[OLD][1]:,.0f} events/s at {OLD}, {loaded['head'][1]:,.0f} at head")
            stores = {path: loaded["head" if path == AGGREGATED else OLD][0] for path in paths}
            try:
                for label, (since, until) in ranges.items():
                    rows = measure(paths, stores, creators, since, until, args.repeat)
                    first = next(iter(rows.values()))
                    for path, r in rows.items():
                        table.add_row(name, label, path, f"{r['median']:.0f}", f"{r['p99']:.0f}", f"{r['top']:.0f}",
                                      f"{r['peak']:.1f}", f"{r['rows']:,}", f"{first['median'] / r['median']:.1f}×")
            finally:
                for store, _ in loaded.values():
                    store.close()
                for _, schema in urls.values():
                    if schema is not None:
                        drop_schema(args.postgres, schema)
    table.caption = "; ".join(notes)
    Console(width=170).print(table)


if __name__ == "__main__":
    main()
