"""Ledger numbers for BENCHMARKS.md: what keeping the commission ledger costs ingestion, and how fast it catches
up and rebuilds, on SQLite and PostgreSQL, against storing the same events without a ledger (same run).

Synthetic money traffic: N orders on 10k videos / 2k products, 30 % bought through a share link, 5 % partly
refunded, in batches of 1,000 events as the app posts them. Medians of --repeat runs; prints a table.

Usage: python benchmarks/bench_ledger.py [--orders 50000] [--repeat 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from feed.attribution import LedgerRules, RateBook, compute_ledger
from feed.store import EventStore
from feed.store.frames import with_schema_columns

RULES = LedgerRules()
T0 = pd.Timestamp("2026-01-01", tz="UTC")


def traffic(orders: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(events, videos, products): share links, purchases (some through them), partial refunds."""
    rng = np.random.default_rng(seed)
    videos = pd.DataFrame({"video_id": [f"v{i}" for i in range(10_000)],
                           "creator_id": [f"c{i % 800}" for i in range(10_000)],
                           "product_id": [f"p{i % 2000}" for i in range(10_000)]})
    products = pd.DataFrame({"product_id": [f"p{i}" for i in range(2000)], "merchant_id": "m",
                             "commission_rate": rng.uniform(0.02, 0.3, 2000).round(3)})
    ts = T0 + pd.to_timedelta(np.sort(rng.uniform(0, 60, orders)), unit="D")
    video = rng.integers(0, 10_000, orders)
    shared = rng.random(orders) < 0.3
    frames = [_events("share", ts[shared] - pd.Timedelta(hours=6), video[shared], shared.sum(),
                      share_id=[f"s{i}" for i in np.flatnonzero(shared)], user="sharer"),
              _events("purchase", ts, video, orders, order_id=[f"o{i}" for i in range(orders)],
                      amount=rng.uniform(5, 200, orders).round(2),
                      via_share_id=[f"s{i}" if s else None for i, s in enumerate(shared)])]
    refunded = rng.random(orders) < 0.05
    frames.append(_events("refund", ts[refunded] + pd.Timedelta(days=2), video[refunded], refunded.sum(),
                          order_id=[f"o{i}" for i in np.flatnonzero(refunded)], amount=2.5))
    events = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable", ignore_index=True)
    return with_schema_columns(events, "events"), videos, products


def _events(kind: str, ts: pd.DatetimeIndex, video: np.ndarray, n: int, user: str = "buyer", **columns) -> pd.DataFrame:
    """n events of one kind."""
    frame = pd.DataFrame({"event_id": [f"{kind}-{uuid.uuid4().hex}" for _ in range(n)],
                          "ts": pd.Series(ts).astype("datetime64[ms, UTC]").to_numpy(),
                          "user_id": [f"{user}{i % 5000}" for i in range(n)], "video_id": [f"v{v}" for v in video],
                          "event": kind, **columns})
    return frame


def fresh_store(url_factory) -> EventStore:
    """A new, migrated store."""
    store = EventStore(url_factory())
    store.upgrade()
    return store


def run_once(url_factory, events, videos, products, ledger: bool) -> dict[str, float]:
    """Insert in 1,000-event batches (processing the ledger after each when `ledger`), then rebuild."""
    store = fresh_store(url_factory)
    store.upsert_videos(videos)
    store.upsert_products(products)
    now = int((T0 + pd.Timedelta(days=90)).value // 1_000_000)
    start = time.perf_counter()
    for lo in range(0, len(events), 1000):
        store.insert_events(events.iloc[lo:lo + 1000])
        if ledger:
            store.process_ledger(RULES, now_ms=now)
    out = {"ingest_s": time.perf_counter() - start}
    if ledger:
        start = time.perf_counter()
        store.rebuild_ledger(RULES, now_ms=now)
        out["rebuild_s"] = time.perf_counter() - start
        out["entries"] = store.count("ledger_entries")
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    events, videos, products = traffic(args.orders)
    table = Table(title=f"Ledger: {args.orders:,} orders, {len(events):,} money events in 1,000-event batches; "
                        f"medians of {args.repeat}")
    for column in ("store", "ingest only", "ingest + ledger", "ledger overhead", "rebuild (all orders)",
                   "orders/s rebuilt", "entries"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in _backends(Path(tmp), args.postgres):
            plain = [run_once(factory, events, videos, products, False) for _ in range(args.repeat)]
            with_ledger = [run_once(factory, events, videos, products, True) for _ in range(args.repeat)]
            base = statistics.median(r["ingest_s"] for r in plain)
            full = statistics.median(r["ingest_s"] for r in with_ledger)
            rebuild = statistics.median(r["rebuild_s"] for r in with_ledger)
            table.add_row(name, f"{base:.2f} s", f"{full:.2f} s", f"{full / base:.2f}×", f"{rebuild:.2f} s",
                          f"{args.orders / rebuild:,.0f}", f"{with_ledger[0]['entries']:,}")
    start = time.perf_counter()
    compute_ledger(events, videos, RateBook.current(products), RULES, int((T0 + pd.Timedelta(days=90)).value // 1e6))
    table.caption = (f"In memory (feed.attribution.compute_ledger, no database): {time.perf_counter() - start:.2f} s "
                     f"for all orders.")
    Console().print(table)


def _backends(tmp: Path, postgres: str):
    """(name, URL factory) for SQLite and, when reachable, PostgreSQL (a new schema per store)."""
    counter = iter(range(1000))
    yield "SQLite", lambda: f"sqlite:///{tmp / f'l{next(counter)}.db'}"
    engine = sa.create_engine(postgres)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError:
        return

    def schema() -> str:
        name = f"bench_ledger_{uuid.uuid4().hex[:8]}"
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        return sa.make_url(postgres).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
            hide_password=False)

    yield "PostgreSQL", schema


if __name__ == "__main__":
    main()
