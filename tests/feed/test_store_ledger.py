"""The commission ledger in a real store (SQLite file and PostgreSQL): reconciliation to the cent against an
independent recomputation from the raw events, order independence, idempotence, rate versions, settlement."""

from __future__ import annotations

import threading
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feed.attribution import DAY_MS, LedgerRules
from feed.store import EventStore

RULES = LedgerRules()


# --- an independent, simple recomputation: plain loops and Decimal, nothing from feed.attribution ---------


def _cents(value: Decimal) -> int:
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_ledger(events: pd.DataFrame, videos: pd.DataFrame, products: pd.DataFrame, rules: LedgerRules,
                    now_ms: int) -> dict[tuple[str, str, str, str], int]:
    """(order, beneficiary, role, kind) → cents, per the documented rule, from the raw tables."""
    ev = events.assign(ms=(events["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1))
    creator_of = dict(zip(videos["video_id"], videos["creator_id"]))
    product_of = dict(zip(videos["video_id"], videos["product_id"]))
    rate_of = dict(zip(products["product_id"], products["commission_rate"]))
    shares = ev[ev["event"] == "share"].sort_values(["ms", "event_id"]).drop_duplicates("share_id")
    share_by_id = {r.share_id: r for r in shares.itertuples()}
    out: dict[tuple[str, str, str, str], int] = {}
    buys = ev[ev["event"] == "purchase"].sort_values(["ms", "event_id"]).drop_duplicates("order_id")
    for buy in buys.itertuples():
        paid = Decimal(repr(float(buy.amount)))
        product = buy.product_id if isinstance(buy.product_id, str) else product_of.get(buy.video_id)
        earners = []
        creator = creator_of.get(buy.video_id)
        rate = rate_of.get(product)
        if creator is not None and creator != buy.user_id and rate is not None and not np.isnan(rate):
            earners.append((creator, "creator", _cents(paid * Decimal(repr(float(rate))))))
        link = share_by_id.get(buy.via_share_id) if isinstance(buy.via_share_id, str) else None
        if (link is not None and link.user_id != buy.user_id and link.ms <= buy.ms
                and buy.ms - link.ms <= rules.window_days * DAY_MS):
            earners.append((link.user_id, "sharer", _cents(paid * Decimal(repr(rules.sharer_rate)))))
        refunds = ev[(ev["event"] == "refund") & (ev["order_id"] == buy.order_id)]
        settle_at = buy.ms + int(rules.settlement_days * DAY_MS)
        for who, role, accrued in earners:
            if accrued == 0:
                continue
            out[(buy.order_id, who, role, "accrual")] = accrued
            back = _taken_back(accrued, paid, refunds)
            if len(refunds):
                out[(buy.order_id, who, role, "clawback")] = -back
            if now_ms >= settle_at:
                early = refunds[refunds["ms"] < settle_at]
                out[(buy.order_id, who, role, "settlement")] = accrued - _taken_back(accrued, paid, early)
    return {k: v for k, v in out.items() if v != 0}


def _taken_back(accrued: int, paid: Decimal, refunds: pd.DataFrame) -> int:
    if refunds.empty:
        return 0
    refunded = sum((Decimal(repr(float(a))) if not np.isnan(a) else paid for a in refunds["amount"]), Decimal(0))
    return min(_cents(Decimal(accrued) / 100 * min(refunded / paid, Decimal(1))), accrued)


def ledger_sums(store: EventStore) -> dict[tuple[str, str, str, str], int]:
    """The store's ledger summed per (order, beneficiary, role, kind), zero sums dropped."""
    entries = store.ledger_entries()
    cents = (entries["amount"] * 100).round().astype("int64")
    sums = cents.groupby([entries["order_id"], entries["beneficiary_id"], entries["role"], entries["kind"]]).sum()
    return {k: int(v) for k, v in sums.items() if v != 0}


# --- a world with every case the rule distinguishes ----------------------------------------------------------


def rich_events(world) -> pd.DataFrame:
    """The world's events plus purchases through shares (in and out of the window, by the sharer themselves),
    partial and repeated refunds, and a refund without an amount."""
    ev = world.dataset.events.copy()
    shares = ev[ev["event"] == "share"].head(40)
    users = ev["user_id"].unique()
    extra = []
    for i, s in enumerate(shares.itertuples()):
        delay = [DAY_MS, 3 * DAY_MS, 9 * DAY_MS, DAY_MS // 2][i % 4]
        buyer = s.user_id if i % 10 == 9 else users[(i * 7) % len(users)]
        order = f"xo{i}"
        ts = s.ts + pd.Timedelta(milliseconds=delay)
        extra.append(dict(event_id=f"xp{i}", ts=ts, user_id=buyer, video_id=s.video_id, event="purchase",
                          via_share_id=s.share_id, order_id=order, amount=10.0 + i * 1.37))
        if i % 3 == 0:
            extra.append(dict(event_id=f"xr{i}", ts=ts + pd.Timedelta(days=1), user_id=buyer, video_id=s.video_id,
                              event="refund", order_id=order, amount=3.33))
        if i % 6 == 0:
            extra.append(dict(event_id=f"xq{i}", ts=ts + pd.Timedelta(days=9), user_id=buyer, video_id=s.video_id,
                              event="refund", order_id=order, amount=None))
    added = pd.DataFrame({c: pd.Series([row.get(c) for row in extra], dtype=ev[c].dtype) for c in ev.columns})
    refunds = ev["event"] == "refund"
    ev.loc[refunds & (ev.index % 2 == 0), "amount"] = ev.loc[refunds & (ev.index % 2 == 0), "amount"] / 2
    return pd.concat([ev, added], ignore_index=True)


@pytest.fixture(scope="module")
def world_events(small_world) -> pd.DataFrame:
    return rich_events(small_world)


def open_world_store(url: str, world) -> EventStore:
    store = EventStore(url)
    store.upgrade()
    store.upsert_videos(world.dataset.videos)
    store.upsert_products(world.dataset.products)
    return store


def end_ms(events: pd.DataFrame) -> int:
    return int(events["ts"].max().value // 1_000_000)


# --- tests ------------------------------------------------------------------------------------------------


def test_the_ledger_reconciles_to_the_cent_with_a_simple_recomputation(store_url, small_world, world_events):
    store = open_world_store(store_url, small_world)
    now = end_ms(world_events) + 3 * DAY_MS  # some orders settled, the latest not yet
    for start in range(0, len(world_events), 20_000):
        store.insert_events(world_events.iloc[start:start + 20_000])
        store.catch_up_ledger(RULES, now_ms=now)
    expected = expected_ledger(world_events, small_world.dataset.videos, small_world.dataset.products, RULES, now)
    kinds = {k[3] for k in expected} | {k[2] for k in expected}
    assert {"accrual", "clawback", "settlement", "creator", "sharer"} <= kinds  # every case is exercised
    assert ledger_sums(store) == expected
    store.close()


def test_processing_order_does_not_change_the_ledger_and_reprocessing_adds_nothing(tmp_path, small_world,
                                                                                   world_events):
    money = world_events[world_events["event"].isin(("purchase", "refund", "share"))]
    now = end_ms(world_events) + 3 * DAY_MS
    in_order = open_world_store(f"sqlite:///{tmp_path / 'a.db'}", small_world)
    in_order.insert_events(money)
    in_order.catch_up_ledger(RULES, now_ms=now)
    shuffled = open_world_store(f"sqlite:///{tmp_path / 'b.db'}", small_world)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(money))
    for part in np.array_split(order, 25):  # refunds before purchases, purchases before their share links
        shuffled.insert_events(money.iloc[part])
        shuffled.process_ledger(RULES, now_ms=now - int(rng.integers(0, 20)) * DAY_MS)  # time moves unevenly
    shuffled.catch_up_ledger(RULES, now_ms=now)
    assert ledger_sums(shuffled) == ledger_sums(in_order)
    before = shuffled.ledger_entries()
    assert shuffled.insert_events(money).inserted == 0
    assert shuffled.rebuild_ledger(RULES, now_ms=now).entries == 0
    pd.testing.assert_frame_equal(shuffled.ledger_entries(), before)


def test_the_ledger_is_append_only(tmp_path, small_world, world_events):
    store = open_world_store(f"sqlite:///{tmp_path / 's.db'}", small_world)
    purchases = world_events[world_events["event"].isin(("purchase", "share"))]
    store.insert_events(purchases)
    start = int(purchases["ts"].min().value // 1_000_000)
    store.catch_up_ledger(RULES, now_ms=start)
    first = store.ledger_entries()
    store.insert_events(world_events[world_events["event"] == "refund"])
    store.catch_up_ledger(RULES, now_ms=end_ms(world_events) + 30 * DAY_MS)
    after = store.ledger_entries()
    pd.testing.assert_frame_equal(after.head(len(first)), first)  # earlier entries never change
    assert set(after["kind"].iloc[len(first):]) == {"clawback", "settlement"}


def test_a_rate_change_applies_to_later_purchases_only(tmp_path):
    store = EventStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.upgrade()
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    store.upsert_videos(pd.DataFrame({"video_id": ["v"], "creator_id": ["c"], "product_id": ["p"]}))
    product = pd.DataFrame({"product_id": ["p"], "merchant_id": ["m"], "commission_rate": [0.10]})
    store.upsert_products(product, now_ms=int(t0.value // 1_000_000))
    store.insert_events(_purchase("o1", t0 + pd.Timedelta(days=1), 50.0))
    store.catch_up_ledger(RULES, now_ms=int(t0.value // 1_000_000))
    store.upsert_products(product.assign(commission_rate=0.30), now_ms=int((t0 + pd.Timedelta(days=2)).value // 1e6))
    store.upsert_products(product.assign(commission_rate=0.30))  # the same rate again is not a new version
    store.insert_events(_purchase("o2", t0 + pd.Timedelta(days=3), 50.0))
    store.rebuild_ledger(RULES, now_ms=int(t0.value // 1_000_000))
    accrued = store.ledger_entries().set_index("order_id")["amount"].to_dict()
    assert accrued == {"o1": 5.0, "o2": 15.0}
    assert store.count("commission_rates") == 2


def _purchase(order: str, ts: pd.Timestamp, amount: float, user: str = "b") -> pd.DataFrame:
    return pd.DataFrame({"event_id": [f"e-{order}"], "ts": pd.Series([ts]).astype("datetime64[ms, UTC]"),
                         "user_id": [user], "video_id": ["v"], "event": ["purchase"], "order_id": [order],
                         "amount": [amount]})


def test_a_refund_stored_after_settlement_corrects_it_by_appending(tmp_path):
    store = EventStore(f"sqlite:///{tmp_path / 'l.db'}")
    store.upgrade()
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    store.upsert_videos(pd.DataFrame({"video_id": ["v"], "creator_id": ["c"], "product_id": ["p"]}))
    store.upsert_products(pd.DataFrame({"product_id": ["p"], "commission_rate": [0.10]}))
    store.insert_events(_purchase("o1", t0, 100.0))
    late = int((t0 + pd.Timedelta(days=8)).value // 1_000_000)
    assert store.catch_up_ledger(RULES, now_ms=late).entries == 2  # accrual, settlement
    refund = _purchase("o1", t0 + pd.Timedelta(days=2), 40.0).assign(event="refund", event_id="r1")
    store.insert_events(refund)  # made within the settlement period, but reported late
    store.catch_up_ledger(RULES, now_ms=late)
    entries = store.ledger_entries()
    assert entries["amount"].tolist() == [10.0, 10.0, -4.0, -4.0]
    assert entries["kind"].tolist() == ["accrual", "settlement", "clawback", "settlement"]


def test_two_processors_at_once_never_double_an_entry(store_url, small_world, world_events):
    store = open_world_store(store_url, small_world)
    other = EventStore(store_url)
    store.insert_events(world_events[world_events["event"].isin(("purchase", "refund", "share"))])
    now = end_ms(world_events) + 30 * DAY_MS
    errors: list[BaseException] = []

    def run(s: EventStore) -> None:
        try:
            for _ in range(5):
                s.process_ledger(RULES, now_ms=now, limit=50)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store.catch_up_ledger(RULES, now_ms=now)
    expected = expected_ledger(world_events, small_world.dataset.videos, small_world.dataset.products, RULES, now)
    assert ledger_sums(store) == expected
    assert store.ledger_entries()["entry_id"].is_unique
    other.close()
    store.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), parts=st.integers(1, 8))
def test_any_arrival_order_gives_the_same_sums(tmp_path_factory, small_world, world_events, seed, parts):
    money = world_events[world_events["event"].isin(("purchase", "refund", "share"))]
    now = end_ms(world_events) + 5 * DAY_MS
    store = open_world_store(f"sqlite:///{tmp_path_factory.mktemp('h') / 'h.db'}", small_world)
    for part in np.array_split(np.random.default_rng(seed).permutation(len(money)), parts):
        store.insert_events(money.iloc[part])
        store.process_ledger(RULES, now_ms=now, limit=40)
    store.catch_up_ledger(RULES, now_ms=now)
    expected = expected_ledger(world_events, small_world.dataset.videos, small_world.dataset.products, RULES, now)
    assert ledger_sums(store) == expected
    store.close()


def test_upgrading_a_0002_store_seeds_the_rates_and_queues_every_stored_purchase(store_url, small_world,
                                                                                 world_events):
    from alembic import command

    from feed.store.store import migration_config

    command.upgrade(migration_config(url=store_url), "0002")
    old = EventStore(store_url)
    # written as 0002 code would: no ledger queue, no rate history
    import sqlalchemy as sa

    from feed.store import tables
    from feed.store.frames import to_rows

    with old._engine.begin() as conn:
        for name, frame in (("videos", small_world.dataset.videos), ("products", small_world.dataset.products)):
            names, rows = to_rows(frame, name, catalog_seq=1)
            conn.execute(sa.insert(tables.metadata.tables[name]), [dict(zip(names, r)) for r in rows])
        names, rows = to_rows(world_events, "events")
        conn.execute(sa.insert(tables.events), [dict(zip(names, r)) for r in rows])
    assert old.upgrade() == "0004"
    now = end_ms(world_events) + 3 * DAY_MS
    old.catch_up_ledger(RULES, now_ms=now)
    expected = expected_ledger(world_events, small_world.dataset.videos, small_world.dataset.products, RULES, now)
    assert ledger_sums(old) == expected
    old.close()


def test_purchases_stored_before_their_catalog_rows_are_credited_once_the_catalog_arrives(tmp_path):
    """Events may arrive before the catalog: the creator is paid without waiting for a manual rebuild."""
    store = EventStore(f"sqlite:///{tmp_path / 'c.db'}")
    store.upgrade()
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    store.insert_events(_purchase("o1", t0, 50.0))
    store.insert_events(_purchase("o2", t0, 20.0).assign(video_id="v2", event_id="e-o2b"))
    now = int(t0.value // 1_000_000)
    store.catch_up_ledger(RULES, now_ms=now)
    assert store.ledger_entries().empty  # nobody known to pay yet
    store.upsert_videos(pd.DataFrame({"video_id": ["v", "v2"], "creator_id": ["c", "c2"], "product_id": ["p", "q"]}))
    store.catch_up_ledger(RULES, now_ms=now)
    store.upsert_products(pd.DataFrame({"product_id": ["p", "q"], "commission_rate": [0.10, 0.05]}))
    store.catch_up_ledger(RULES, now_ms=now)
    accrued = store.ledger_entries().set_index("order_id")["amount"].to_dict()
    assert accrued == {"o1": 5.0, "o2": 1.0}
    assert store.rebuild_ledger(RULES, now_ms=now).entries == 0  # what a full rebuild gives
    store.close()


def test_a_catalog_frame_that_repeats_a_product_is_upserted_with_one_rate_version(tmp_path):
    store = EventStore(f"sqlite:///{tmp_path / 'd.db'}")
    store.upgrade()
    store.upsert_products(pd.DataFrame({"product_id": ["p", "p"], "commission_rate": [0.10, 0.20]}))
    assert store.count("commission_rates") == 1
    store.upsert_videos(pd.DataFrame({"video_id": ["v"], "creator_id": ["c"], "product_id": ["p"]}))
    store.insert_events(_purchase("o1", pd.Timestamp("2026-03-01", tz="UTC"), 50.0))
    store.catch_up_ledger(RULES, now_ms=0)
    assert store.ledger_entries()["amount"].tolist() == [10.0]  # the frame's last row wins, as in products
    store.close()


def test_refunds_processed_together_or_apart_give_the_same_dated_entries(tmp_path):
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    refunds = [_purchase("o1", t0 + pd.Timedelta(days=d), 20.0).assign(event="refund", event_id=f"r{d}")
               for d in (2, 5)]
    dated = []
    for name, batches in (("together", [[0, 1]]), ("apart", [[0], [1]])):
        store = EventStore(f"sqlite:///{tmp_path / name}.db")
        store.upgrade()
        store.upsert_videos(pd.DataFrame({"video_id": ["v"], "creator_id": ["c"], "product_id": ["p"]}))
        store.upsert_products(pd.DataFrame({"product_id": ["p"], "commission_rate": [0.10]}))
        store.insert_events(_purchase("o1", t0, 100.0))
        for batch in batches:
            store.insert_events(pd.concat([refunds[i] for i in batch]))
            store.catch_up_ledger(RULES, now_ms=int(t0.value // 1_000_000))
        entries = store.ledger_entries()
        dated.append(sorted(zip(entries["kind"], entries["ts"], entries["amount"], strict=True)))
        store.close()
    assert dated[0] == dated[1]
    assert [(kind, ts.day, amount) for kind, ts, amount in dated[0] if kind == "clawback"] == [
        ("clawback", 3, -2.0), ("clawback", 6, -2.0)]
