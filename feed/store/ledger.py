"""The ledger's database side: queue orders as their events are stored, then append what they owe.

`process` runs in one write transaction under a lock (PostgreSQL advisory lock; SQLite's write lock), so two
replicas never append the same correction twice. It takes queued orders (and orders bought through queued share
links) and orders whose settlement is due, computes their targets with `feed.attribution`, appends the
differences, and only then deletes the queue rows it read (by id, so rows queued meanwhile stay).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import pandas as pd
import sqlalchemy as sa

from feed.attribution import (
    Key,
    LedgerRules,
    RateBook,
    deltas,
    entries_frame,
    entry_row,
    order_targets,
    purchases_of,
    refunds_by_order,
    settle_time,
    shares_of,
)
from feed.schema import COLUMNS
from feed.store import tables
from feed.store.driver import fetch_frame

LEDGER_LOCK = 0x66656564_6C6467  # PostgreSQL advisory lock key of the ledger processor (ASCII 'feed_ldg')
CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class LedgerRun:
    """What one processing pass did."""

    orders: int  # orders looked at
    entries: int  # entries appended
    remaining: int  # queue rows left for the next pass (0 = caught up)


def queue_rows(events: pd.DataFrame) -> list[dict[str, str | None]]:
    """Queue rows for a stored batch: the order of each purchase or refund, the link of each share."""
    rows: list[dict[str, str | None]] = []
    money = events[events["event"].isin(("purchase", "refund")) & events["order_id"].notna()]
    rows += [{"order_id": str(o), "share_id": None} for o in money["order_id"].unique()]
    shared = events[(events["event"] == "share") & events["share_id"].notna()]
    rows += [{"order_id": None, "share_id": str(s)} for s in shared["share_id"].unique()]
    return rows


def enqueue(conn: sa.Connection, rows: list[dict[str, str | None]]) -> None:
    """Add rows to the queue (in the caller's transaction)."""
    if rows:
        conn.execute(tables.ledger_queue.insert(), rows)


def enqueue_all(conn: sa.Connection) -> int:
    """Queue every order that has a purchase (a full rebuild); returns how many."""
    ev = tables.events
    orders = sa.select(ev.c.order_id).distinct().where(ev.c.event == "purchase", ev.c.order_id.is_not(None))
    done = conn.execute(tables.ledger_queue.insert().from_select(["order_id"], orders))
    return int(done.rowcount or 0)


def enqueue_videos(conn: sa.Connection, video_ids: list[str]) -> None:
    """Queue the orders bought through these videos (their creator or product changed: so may who earns)."""
    ev = tables.events
    for chunk in _chunks(sorted(set(video_ids))):
        _enqueue_purchases(conn, ev.c.video_id.in_(chunk))


def enqueue_products(conn: sa.Connection, product_ids: list[str]) -> None:
    """Queue the orders of these products (bought as the event's product, or through a video selling one)."""
    ev, v = tables.events, tables.videos
    for chunk in _chunks(sorted(set(product_ids))):
        selling = sa.select(v.c.video_id).where(v.c.product_id.in_(chunk))
        _enqueue_purchases(conn, sa.or_(ev.c.product_id.in_(chunk), ev.c.video_id.in_(selling)))


def _enqueue_purchases(conn: sa.Connection, where: sa.ColumnElement[bool]) -> None:
    """Queue the distinct orders of the purchase events matching `where`."""
    ev = tables.events
    orders = sa.select(ev.c.order_id).distinct().where(where, ev.c.event == "purchase", ev.c.order_id.is_not(None))
    conn.execute(tables.ledger_queue.insert().from_select(["order_id"], orders))


def record_rates(conn: sa.Connection, products: pd.DataFrame, now_ms: int) -> None:
    """Append a rate version for each product whose commission_rate differs from its latest one.

    A product's first version is valid from 0 (it covers purchases stored before the catalog knew the product);
    a change is valid from `now_ms`, so it applies to later purchases only.
    """
    if "commission_rate" not in products.columns:
        return
    latest_rows = products.drop_duplicates("product_id", keep="last")  # the row the upsert stored
    given = latest_rows[latest_rows["commission_rate"].notna()]
    if given.empty:
        return
    latest = _latest_rates(conn, given["product_id"].astype(str).tolist())
    rows = [{"product_id": p, "valid_from": 0 if p not in latest else now_ms, "rate": float(r)}
            for p, r in zip(given["product_id"].astype(str), given["commission_rate"], strict=True)
            if latest.get(p) != float(r)]
    if rows:
        conn.execute(tables.commission_rates.insert(), rows)
        # a first version also covers the purchases stored before it: queue them, as a rebuild would see them
        enqueue_products(conn, [r["product_id"] for r in rows if r["valid_from"] == 0])


def process(conn: sa.Connection, rules: LedgerRules, now_ms: int, limit: int, postgres: bool) -> LedgerRun:
    """One pass over at most `limit` queue rows and due settlements (in the caller's write transaction)."""
    if postgres:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LEDGER_LOCK})
    q = tables.ledger_queue
    queued = conn.execute(sa.select(q.c.id, q.c.order_id, q.c.share_id).order_by(q.c.id).limit(limit)).all()
    orders = {r.order_id for r in queued if r.order_id is not None}
    orders |= _orders_through(conn, [r.share_id for r in queued if r.share_id is not None])
    orders |= _due(conn, now_ms, limit)
    appended = sum(_settle_orders(conn, sorted(chunk), rules, now_ms) for chunk in _chunks(orders))
    for chunk in _chunks([r.id for r in queued]):
        conn.execute(q.delete().where(q.c.id.in_(chunk)))
    remaining = int(conn.execute(sa.select(sa.func.count()).select_from(q)).scalar_one())
    return LedgerRun(orders=len(orders), entries=appended, remaining=remaining)


def entries(conn: sa.Connection, where: Iterable[sa.ColumnElement[bool]]) -> pd.DataFrame:
    """Ledger entries matching every condition, in append order (ENTRY_COLUMNS; amounts in currency units)."""
    t = tables.ledger_entries
    stmt = sa.select(t.c.entry_id, t.c.order_id, t.c.beneficiary_id, t.c.role, t.c.kind, t.c.amount_cents,
                     t.c.currency, t.c.ts, t.c.video_id, t.c.product_id).where(*where).order_by(t.c.seq)
    return entries_frame([dict(r._mapping) for r in conn.execute(stmt)])


def money(amount_cents: int) -> str:
    """Cents as an exact decimal string: 1234 → '12.34', -5 → '-0.05'."""
    return f"{Decimal(amount_cents).scaleb(-2):.2f}"


# --- internals ----------------------------------------------------------------------------------------------


def _settle_orders(conn: sa.Connection, orders: list[str], rules: LedgerRules, now_ms: int) -> int:
    """Append the entries that bring these orders' sums to their targets; returns how many."""
    events = _order_events(conn, orders)
    purchases = purchases_of(events, _videos(conn, events["video_id"].unique().tolist()))
    if not purchases:
        return 0
    shares = shares_of(_share_events(conn, [p.via_share_id for p in purchases.values() if p.via_share_id]))
    rates = _rates(conn, [p.product_id for p in purchases.values() if p.product_id])
    refunds, held = refunds_by_order(events), _held(conn, list(purchases))
    rows, created = [], int(time.time() * 1000)
    for order, purchase in purchases.items():
        share = shares.get(purchase.via_share_id or "")
        targets = order_targets(purchase, share, refunds.get(order, []), rates, rules, now_ms)
        have = held.get(order, {})
        for key, change in deltas(targets, {k: v[0] for k, v in have.items()}, purchase.ts).items():
            row = entry_row(purchase, key, change, have.get(key, (0, 0))[1], rules.currency)
            rows.append({**row, "created_at": created})
    if rows:
        conn.execute(tables.ledger_entries.insert(), rows)
    _mark_orders(conn, purchases.values(), rules, now_ms)
    return len(rows)


def _mark_orders(conn: sa.Connection, purchases: Iterable, rules: LedgerRules, now_ms: int) -> None:
    """Record each order's settlement time, and whether its settlement is now in the ledger."""
    t = tables.ledger_orders
    rows = [{"order_id": p.order_id, "settle_at": settle_time(p, rules), "settled": now_ms >= settle_time(p, rules)}
            for p in purchases]
    conn.execute(t.delete().where(t.c.order_id.in_([r["order_id"] for r in rows])))
    conn.execute(t.insert(), rows)


def _order_events(conn: sa.Connection, orders: list[str]) -> pd.DataFrame:
    """The purchase and refund events of these orders (canonical frame)."""
    ev = tables.events
    return _events(conn, sa.and_(ev.c.order_id.in_(orders), ev.c.event.in_(("purchase", "refund"))))


def _share_events(conn: sa.Connection, share_ids: list[str]) -> pd.DataFrame:
    """The share events that created these links."""
    ev = tables.events
    return _events(conn, sa.and_(ev.c.share_id.in_(sorted(set(share_ids))), ev.c.event == "share"))


def _events(conn: sa.Connection, where: sa.ColumnElement[bool]) -> pd.DataFrame:
    """Canonical events matching `where`."""
    ev = tables.events
    return fetch_frame(conn, sa.select(*(ev.c[c.name] for c in COLUMNS["events"])).where(where), "events")


def _videos(conn: sa.Connection, video_ids: list[str]) -> pd.DataFrame:
    """video_id, creator_id, product_id of these videos."""
    v = tables.videos
    rows = conn.execute(sa.select(v.c.video_id, v.c.creator_id, v.c.product_id).where(v.c.video_id.in_(video_ids)))
    return pd.DataFrame(rows.all(), columns=["video_id", "creator_id", "product_id"])


def _rates(conn: sa.Connection, product_ids: list[str]) -> RateBook:
    """The rate history of these products."""
    t = tables.commission_rates
    rows = conn.execute(sa.select(t.c.product_id, t.c.valid_from, t.c.rate)
                        .where(t.c.product_id.in_(sorted(set(product_ids)))))
    return RateBook.from_frame(pd.DataFrame(rows.all(), columns=["product_id", "valid_from", "rate"]))


def _latest_rates(conn: sa.Connection, product_ids: list[str]) -> dict[str, float]:
    """Each product's newest rate (products without a version are absent)."""
    book = _rates(conn, product_ids)
    return {p: rates[-1] for p, rates in book.rates.items()}


def _held(conn: sa.Connection, orders: list[str]) -> dict[str, dict[Key, tuple[int, int]]]:
    """order → (beneficiary, role, kind, ref) → (sum of cents, number of entries) already in the ledger."""
    t = tables.ledger_entries
    keys = (t.c.order_id, t.c.beneficiary_id, t.c.role, t.c.kind, t.c.ref)
    stmt = (sa.select(*keys, sa.func.sum(t.c.amount_cents), sa.func.count()).where(t.c.order_id.in_(orders))
            .group_by(*keys))
    out: dict[str, dict[Key, tuple[int, int]]] = {}
    for order, who, role, kind, ref, total, n in conn.execute(stmt):
        out.setdefault(order, {})[(who, role, kind, ref)] = (int(total), int(n))
    return out


def _orders_through(conn: sa.Connection, share_ids: list[str]) -> set[str]:
    """Orders whose purchase came through one of these share links."""
    ev = tables.events
    found: set[str] = set()
    for chunk in _chunks(set(share_ids)):
        stmt = sa.select(ev.c.order_id).distinct().where(ev.c.via_share_id.in_(chunk), ev.c.event == "purchase")
        found |= {o for o in conn.execute(stmt).scalars() if o is not None}
    return found


def _due(conn: sa.Connection, now_ms: int, limit: int) -> set[str]:
    """Orders whose settlement time has come and that the ledger has not settled yet."""
    t = tables.ledger_orders
    stmt = sa.select(t.c.order_id).where(~t.c.settled, t.c.settle_at <= now_ms).limit(limit)
    return set(conn.execute(stmt).scalars())


def _chunks(values: Iterable) -> Iterable[list]:
    """Lists of at most CHUNK values."""
    items = list(values)
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]
