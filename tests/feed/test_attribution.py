"""The attribution rule on hand-made orders, and Hypothesis properties of one order's ledger targets."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.attribution import (
    DAY_MS,
    LedgerRules,
    Purchase,
    RateBook,
    Share,
    commission_cents,
    compute_ledger,
    deltas,
    entry_id,
    order_targets,
)

T0 = 1_767_225_600_000  # 2026-01-01 UTC in epoch ms
RULES = LedgerRules()
RATES = RateBook.from_frame(pd.DataFrame({"product_id": ["p1", "p1"], "valid_from": [0, T0 + 10 * DAY_MS],
                                          "rate": [0.10, 0.20]}))


def purchase(ts: int = T0, amount: float = 19.99, buyer: str = "b", creator: str | None = "c",
             via: str | None = None) -> Purchase:
    return Purchase(order_id="o1", buyer=buyer, ts=ts, amount=amount, video_id="v1", product_id="p1",
                    creator=creator, via_share_id=via)


def totals(targets):
    """(beneficiary, role, kind) → cents, summed over refunds."""
    out: dict[tuple[str, str, str], int] = {}
    for (who, role, kind, _), t in targets.items():
        out[(who, role, kind)] = out.get((who, role, kind), 0) + t.cents
    return out


def test_creator_earns_the_rate_in_effect_at_the_purchase_time():
    early = order_targets(purchase(), None, [], RATES, RULES, now_ms=T0)
    late = order_targets(purchase(ts=T0 + 11 * DAY_MS), None, [], RATES, RULES, now_ms=T0)
    assert totals(early) == {("c", "creator", "accrual"): 200}  # 19.99 × 0.10 = 1.999 → 2.00
    assert totals(late) == {("c", "creator", "accrual"): 400}


def test_the_direct_sharer_earns_only_within_the_window_and_before_the_purchase():
    ts = T0 + DAY_MS
    within = order_targets(purchase(ts=ts, via="s1"), Share("friend", ts - DAY_MS), [], RATES, RULES, ts)
    assert totals(within)[("friend", "sharer", "accrual")] == commission_cents(19.99, RULES.sharer_rate) == 40
    for share in (Share("friend", ts - 8 * DAY_MS), Share("friend", ts + 1), Share("b", ts - 1)):
        assert ("friend", "sharer", "accrual") not in totals(order_targets(purchase(ts=ts, via="s1"), share, [],
                                                                           RATES, RULES, ts))
    exactly = order_targets(purchase(ts=ts, via="s1"), Share("friend", ts - 7 * DAY_MS), [], RATES, RULES, ts)
    assert ("friend", "sharer", "accrual") in totals(exactly)


def test_nobody_earns_from_their_own_purchase():
    assert order_targets(purchase(buyer="c"), None, [], RATES, RULES, T0) == {}
    assert order_targets(purchase(creator=None), None, [], RATES, RULES, T0) == {}


def test_partial_refunds_claw_back_in_proportion_and_a_full_refund_nets_to_zero():
    half = order_targets(purchase(amount=100.0), None, [(T0 + 1, 50.0, "r1")], RATES, RULES, T0 + 2)
    assert totals(half) == {("c", "creator", "accrual"): 1000, ("c", "creator", "clawback"): -500}
    full = order_targets(purchase(amount=100.0), None, [(T0 + 1, 30.0, "r1"), (T0 + 2, 70.0, "r2"), (T0 + 3, None, "r3")],
                         RATES, RULES, T0 + 4)
    assert sum(totals(full).values()) == 0


def test_settlement_comes_after_the_settlement_days_net_of_earlier_refunds():
    settle = T0 + 7 * DAY_MS
    before = order_targets(purchase(amount=100.0), None, [], RATES, RULES, settle - 1)
    assert ("c", "creator", "settlement") not in before
    refunds = [(T0 + DAY_MS, 25.0, "r1"), (settle + 1, 25.0, "r2")]
    after = order_targets(purchase(amount=100.0), None, refunds, RATES, RULES, settle)
    assert after[("c", "creator", "settlement", "")].cents == 750
    assert after[("c", "creator", "settlement", "")].ts == settle
    assert totals(after)[("c", "creator", "clawback")] == -500  # the late refund still claws back


def test_deltas_append_only_what_is_missing_and_zero_what_is_no_longer_owed():
    targets = order_targets(purchase(), None, [], RATES, RULES, T0)
    assert deltas(targets, {k: t.cents for k, t in targets.items()}, T0) == {}
    stale = {("x", "sharer", "accrual", ""): 40}
    assert {k: t.cents for k, t in deltas(targets, stale, T0).items()} == {
        ("c", "creator", "accrual", ""): 200, ("x", "sharer", "accrual", ""): -40}


def test_entry_ids_are_deterministic_and_distinct():
    key = ("c", "creator", "accrual", "")
    assert entry_id("o1", key, 0) == entry_id("o1", key, 0)
    assert len({entry_id("o1", key, 0), entry_id("o1", key, 1), entry_id("o2", key, 0),
                entry_id("o1", ("c", "sharer", "accrual", ""), 0), entry_id("o1", ("c", "creator", "clawback", "r"), 0)
                }) == 5


def test_rules_are_validated():
    with pytest.raises(ValueError, match="sharer_rate"):
        LedgerRules(sharer_rate=1.5)
    with pytest.raises(ValueError, match="currency"):
        LedgerRules(currency="dollars")


def test_compute_ledger_on_a_small_dataset():
    events = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e4"], "ts": pd.to_datetime([T0, T0 + 1000, T0 + 2000, T0 + 3000], unit="ms",
                                                                   utc=True),
        "user_id": ["s", "b", "b", "b"], "video_id": ["v1"] * 4, "event": ["share", "purchase", "purchase", "refund"],
        "share_id": ["s1", None, None, None], "via_share_id": [None, "s1", None, None],
        "order_id": [None, "o1", "o1", "o1"], "amount": [None, 50.0, 50.0, 10.0], "product_id": [None, "p1", None, None]})
    videos = pd.DataFrame({"video_id": ["v1"], "creator_id": ["c"], "product_id": ["p1"]})
    ledger = compute_ledger(events, videos, RATES, RULES, now_ms=T0 + 4000)
    got = {(r.beneficiary_id, r.role, r.kind): r.amount for r in ledger.itertuples()}
    # the repeated purchase event of o1 is the same order, counted once
    assert got == {("c", "creator", "accrual"): 5.0, ("c", "creator", "clawback"): -1.0,
                   ("s", "sharer", "accrual"): 1.0, ("s", "sharer", "clawback"): -0.2}
    assert list(ledger.columns)[:6] == ["entry_id", "order_id", "beneficiary_id", "role", "kind", "amount"]


amounts = st.decimals(min_value="0.01", max_value="5000", places=2).map(float)
refund_lists = st.lists(st.tuples(st.integers(0, 30 * DAY_MS), st.one_of(st.none(), amounts)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(amount=amounts, rate=st.floats(0, 1), sharer_rate=st.floats(0, 1), refunds=refund_lists,
       share_age=st.integers(-DAY_MS, 10 * DAY_MS), now=st.integers(0, 40 * DAY_MS))
def test_an_order_never_pays_more_than_its_commission(amount, rate, sharer_rate, refunds, share_age, now):
    rules = LedgerRules(sharer_rate=sharer_rate)
    rates = RateBook.from_frame(pd.DataFrame({"product_id": ["p1"], "valid_from": [0], "rate": [rate]}))
    bought = purchase(amount=amount, via="s1")
    refunds = [(T0 + ts, a, f"r{i}") for i, (ts, a) in enumerate(refunds)]
    targets = totals(order_targets(bought, Share("friend", T0 - share_age), refunds, rates, rules, T0 + now))
    for role in ("creator", "sharer"):
        keys = [k for k in targets if k[1] == role]
        accrued = sum(v for k, v in targets.items() if k in keys and k[2] == "accrual")
        net = sum(v for k, v in targets.items() if k in keys and k[2] != "settlement")
        settled = sum(v for k, v in targets.items() if k in keys and k[2] == "settlement")
        assert 0 <= net <= accrued and 0 <= settled <= accrued
    refunded = sum(amount if a is None else a for _, a, _ in refunds)
    if refunded >= amount:
        assert sum(v for k, v in targets.items() if k[2] != "settlement") == 0


def test_each_refund_claws_back_its_own_share_on_its_own_day():
    refunds = [(T0 + DAY_MS, 30.0, "r1"), (T0 + 3 * DAY_MS, 30.0, "r2"), (T0 + 4 * DAY_MS, 100.0, "r3")]
    targets = order_targets(purchase(amount=100.0), None, refunds, RATES, RULES, T0)
    claws = {k[3]: (t.cents, t.ts) for k, t in targets.items() if k[2] == "clawback"}
    assert claws == {"r1": (-300, T0 + DAY_MS), "r2": (-300, T0 + 3 * DAY_MS), "r3": (-400, T0 + 4 * DAY_MS)}
