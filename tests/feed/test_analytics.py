"""Creator and merchant stats on a tiny hand-built world whose every number is worked out by hand in comments,
and Hypothesis properties on random logs (totals are sums of rows, intervals hold their estimate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed import analytics as A
from feed.attribution import DAY_MS, LedgerRules, RateBook, compute_ledger
from feed.validation import TableFile, validate_table

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z in epoch ms
H, S = 3_600_000, 1_000
DAY = pd.Timestamp("2026-01-02T00:00Z")  # T0 + 1 day


def events_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (ts as ms after T0) as a canonical events frame."""
    raw = pd.DataFrame([{**r, "ts": T0 + r["ts"]} for r in rows])
    return validate_table(TableFile(Path("test"), "events"), raw)


def ev(event_id, ts, user, video, event, **extra) -> dict:
    return {"event_id": event_id, "ts": ts, "user_id": user, "video_id": video, "event": event, **extra}


# c1 owns v1 (10 s, product p1) and v2 (no duration, p2); c2 owns v3 (p1). m1 sells p1 and p2, m2 sells p3.
# On v1, u1 shares s1 -> u2 shares s2 through it -> u3 shares s3 through that: a 3-level cascade; u4 buys through
# s3 (o1). u5 buys without a view (o2) and gets 20.00 of 50.00 back on day 3; u2 buys through s1 on day 2 (o3).
# s8 and s9 on v2 name each other (a cycle): s8 came first, so s8 is a root and s9 its child.
# c1 (a user too) shares c2's v3 as s10; u9 buys through it (o4), so c1 earns a sharer's commission.
ROWS = [
    ev("e01", 0, "u1", "v1", "impression", request_id="r1"),
    ev("e02", S, "u1", "v1", "view", watch_ms=5000),  # ratio 0.5
    ev("e03", 2 * S, "u1", "v1", "share", share_id="s1"),
    ev("e04", H, "u2", "v1", "view", via_share_id="s1", watch_ms=20000),  # ratio clipped to 1
    ev("e05", H + S, "u2", "v1", "share", share_id="s2", via_share_id="s1"),
    ev("e06", 2 * H, "u3", "v1", "view", via_share_id="s2", watch_ms=2500),  # ratio 0.25
    ev("e07", 2 * H + S, "u3", "v1", "share", share_id="s3", via_share_id="s2"),
    ev("e08", 3 * H, "u4", "v1", "view", via_share_id="s3"),  # no watch_ms: no ratio
    ev("e09", 3 * H + 60 * S, "u4", "v1", "purchase", via_share_id="s3", order_id="o1", amount=50.0, product_id="p1"),
    ev("e10", DAY_MS + H, "u5", "v1", "purchase", order_id="o2", amount=50.0, product_id="p1"),
    ev("e11", DAY_MS + 2 * H, "u2", "v1", "purchase", via_share_id="s1", order_id="o3", amount=50.0, product_id="p1"),
    ev("e12", 2 * DAY_MS + H, "u5", "v1", "refund", order_id="o2", amount=20.0),
    ev("e13", DAY_MS + 3 * H, "u1", "v2", "view", watch_ms=3000),  # v2 has no duration: no ratio
    ev("e14", DAY_MS + 3 * H + S, "u1", "v2", "impression"),  # no request_id: each event counts
    ev("e15", DAY_MS + 3 * H + 2 * S, "u1", "v2", "impression"),
    ev("e16", DAY_MS + 4 * H, "u6", "v2", "share", share_id="s8", via_share_id="s9"),
    ev("e17", DAY_MS + 5 * H, "u7", "v2", "share", share_id="s9", via_share_id="s8"),
    ev("e18", DAY_MS + 6 * H, "u1", "v3", "view", watch_ms=1000),
    ev("e19", DAY_MS + 7 * H, "c1", "v3", "share", share_id="s10"),
    ev("e20", DAY_MS + 8 * H, "u9", "v3", "purchase", via_share_id="s10", order_id="o4", amount=50.0, product_id="p1"),
]
EVENTS = events_frame(ROWS)
VIDEOS = pd.DataFrame({"video_id": ["v1", "v2", "v3"], "creator_id": ["c1", "c1", "c2"],
                       "product_id": ["p1", "p2", "p1"], "duration_ms": [10_000.0, np.nan, 20_000.0],
                       "title": ["<b>one</b>", "two", "three"]})
PRODUCTS = pd.DataFrame({"product_id": ["p1", "p2", "p3"], "merchant_id": ["m1", "m1", "m2"],
                         "category": ["home", "toys", "pets"], "price": [50.0, 20.0, 9.0],
                         "commission_rate": [0.10, 0.20, 0.30]})
# r1 repeats the impression event e01 (counted once); r2 is a served row without an event; r3 is c2's video
SERVED = pd.DataFrame({"request_id": ["r1", "r2", "r3"], "user_id": ["u1", "u2", "u1"], "video_id": ["v1", "v1", "v3"],
                       "source": ["video", "popular", "video"],
                       "ts": pd.to_datetime([T0, T0 + H - S, T0 + DAY_MS + 6 * H], unit="ms", utc=True)})
# the real ledger rule, 8 days and 3 hours in: o1, o2 and o3 have settled (7 days after purchase), o4 has not.
# p1 pays 10 %: 5.00 per order; a direct sharer 2 %: 1.00. o2's 20.00 refund claws back 40 % of 5.00 = 2.00.
ENTRIES = compute_ledger(EVENTS, VIDEOS, RateBook.current(PRODUCTS), LedgerRules(), T0 + 8 * DAY_MS + 3 * H)


def c1_stats(since=None, until=None, events=EVENTS) -> dict:
    return A.creator_stats(VIDEOS, PRODUCTS, events, SERVED, ENTRIES, since, until, creator_id="c1")


def row(stats: dict, video: str) -> dict:
    return next(r for r in stats["videos"] if r["video_id"] == video)


def states(accrued, clawed_back, settled) -> dict:
    return {"accrued": accrued, "clawed_back": clawed_back, "settled": settled,
            "pending": round(accrued - clawed_back - settled, 2)}


def test_wilson_interval_known_values():
    low, high = A.wilson(2, 4)  # p = 0.5, n = 4: centre 0.5, half-width 0.34996
    assert low == pytest.approx(0.15004, abs=1e-5) and high == pytest.approx(0.84996, abs=1e-5)
    assert A.wilson(0, 30)[1] == pytest.approx(1.959964**2 / (30 + 1.959964**2))  # z² / (n + z²) when p = 0
    assert A.conversion(0, 0) == {"rate": None, "low": None, "high": None}
    with pytest.raises(ValueError, match="0 <= successes <= trials"):
        A.wilson(5, 4)


def test_share_tree_three_levels_a_cycle_and_a_missing_parent():
    tree = A.share_tree(EVENTS).set_index("share_id")
    assert tree.loc[["s1", "s2", "s3"], "depth"].tolist() == [1, 2, 3]
    assert tree.loc[["s1", "s2", "s3"], "root_share_id"].tolist() == ["s1"] * 3
    assert tree.at["s3", "parent_share_id"] == "s2" and pd.isna(tree.at["s1", "parent_share_id"])
    # the cycle s8 <-> s9 is cut at the older link; s10 has no parent
    assert tree.at["s8", "depth"] == 1 and pd.isna(tree.at["s8", "parent_share_id"])
    assert tree.at["s9", "root_share_id"] == "s8"
    assert tree.at["s9", "depth"] == 2 and tree.at["s10", "depth"] == 1
    orphan = A.share_tree(EVENTS[EVENTS["share_id"] != "s1"]).set_index("share_id")  # s2's parent is gone
    assert orphan.at["s2", "depth"] == 1 and orphan.at["s3", "root_share_id"] == "s2"
    assert list(A.share_tree(EVENTS.iloc[:0]).columns) == ["share_id", "user_id", "video_id", "parent_share_id",
                                                           "root_share_id", "depth", "ts"]


def test_cascade_reach_depth_and_purchases():
    reach = A.cascades(EVENTS).set_index("root_share_id")
    # s1: u2, u3, u4 came through its links; o1 (via s3) and o3 (via s1) were bought through it
    assert reach.loc["s1"].to_dict() == {"video_id": "v1", "shares": 3, "reached_users": 3, "max_depth": 3,
                                         "purchases": 2}
    # s8: u7 came through s8 (sharing s9), u6 through s9 (sharing s8)
    assert reach.loc["s8"].to_dict() == {"video_id": "v2", "shares": 2, "reached_users": 2, "max_depth": 2,
                                         "purchases": 0}
    assert reach.loc["s10", "purchases"] == 1


def test_creator_stats_per_video_by_hand():
    stats = c1_stats()
    v1 = row(stats, "v1")
    assert {k: v1[k] for k in (*A.COUNTS, *A.CENTS)} == {
        "impressions": 2, "views": 4, "viewers": 4, "shares": 3, "views_via_shares": 3, "purchases": 3,
        "buyers": 3, "purchases_via_shares": 2, "converted_viewers": 2, "refunds": 1,
        "sales": 150.0, "refunded": 20.0, "gmv": 130.0}  # u5 bought without a view: a buyer, not a converted viewer
    assert v1["avg_watch_ratio"] == pytest.approx((0.5 + 1.0 + 0.25) / 3)
    assert v1["conversion"]["rate"] == 0.5 and v1["conversion"]["low"] == pytest.approx(0.15004, abs=1e-5)
    assert v1["commission"] == states(15.0, 2.0, 13.0)  # o2 settled net of its refund: 3.00
    assert v1["cascade"] == {"cascades": 1, "shares": 3, "reached_users": 3, "max_depth": 3, "purchases": 2}
    assert (v1["title"], v1["product_id"], v1["commission_rate"], v1["duration_ms"]) == ("<b>one</b>", "p1", 0.1,
                                                                                         10_000.0)
    v2 = row(stats, "v2")
    assert (v2["impressions"], v2["views"], v2["shares"], v2["avg_watch_ratio"], v2["duration_ms"]) == (
        2, 1, 2, None, None)
    assert v2["conversion"]["rate"] == 0.0 and v2["commission"] == states(0.0, 0.0, 0.0)
    assert [r["video_id"] for r in stats["videos"]] == ["v1", "v2"]  # ranked by conversion; v3 is c2's


def test_creator_stats_totals_commission_daily_and_cascades():
    stats = c1_stats()
    totals = stats["totals"]
    assert (totals["impressions"], totals["views"], totals["viewers"], totals["purchases"], totals["gmv"]) == (
        4, 5, 4, 3, 130.0)
    assert totals["commission"]["creator"] == states(15.0, 2.0, 13.0)
    assert totals["commission"]["sharer"] == states(1.0, 0.0, 0.0)  # o4 through s10 settles after the ledger's now
    assert totals["commission"]["total"] == states(16.0, 2.0, 13.0)
    assert totals["cascade"] == {"cascades": 2, "shares": 5, "reached_users": 5, "max_depth": 3, "purchases": 2}
    assert [c["root_share_id"] for c in stats["cascades"]] == ["s1", "s8"]
    assert stats["daily"] == [
        {"date": "2026-01-01", "views": 4, "purchases": 1, "gmv": 50.0, "commission": 5.0},
        {"date": "2026-01-02", "views": 1, "purchases": 2, "gmv": 100.0, "commission": 11.0},  # 5 + 5 + 1 (sharer)
        {"date": "2026-01-03", "views": 0, "purchases": 0, "gmv": -20.0, "commission": -2.0}]
    assert stats["creator_id"] == "c1" and stats["range"] == {"from": None, "to": None}
    assert stats["best"] is None and stats["worst"] is None  # no video has MIN_VIEWERS_TO_COMPARE viewers


def test_a_range_counts_what_happened_inside_it():
    stats = c1_stats(DAY, DAY + pd.Timedelta(days=1))  # day 2 only
    v1 = row(stats, "v1")
    assert (v1["views"], v1["purchases"], v1["purchases_via_shares"], v1["refunds"], v1["gmv"]) == (0, 2, 1, 0, 100.0)
    assert v1["conversion"] == {"rate": None, "low": None, "high": None}  # buyers, but no viewer in the range
    assert stats["totals"]["commission"]["creator"] == states(10.0, 0.0, 0.0)
    # s1 was made on day 1, so only the s8/s9 cascade is in the range
    assert stats["totals"]["cascade"] == {"cascades": 1, "shares": 2, "reached_users": 2, "max_depth": 2,
                                          "purchases": 0}
    assert stats["range"] == {"from": "2026-01-02T00:00:00+00:00", "to": "2026-01-03T00:00:00+00:00"}


def test_a_partial_refund_counts_on_the_day_it_was_made():
    day3 = (DAY + pd.Timedelta(days=1), DAY + pd.Timedelta(days=2))
    stats = c1_stats(*day3)
    assert (stats["totals"]["refunds"], stats["totals"]["refunded"], stats["totals"]["gmv"]) == (1, 20.0, -20.0)
    alone = c1_stats(*day3, events=EVENTS[EVENTS["event_id"] == "e12"])  # the purchase is not in the frame
    assert alone["totals"]["gmv"] == -20.0 and row(alone, "v1")["refunds"] == 1


def test_refunds_without_an_amount_take_the_rest_and_never_exceed_the_order():
    log = events_frame([ev("a", 0, "u", "v1", "purchase", order_id="o", amount=30.0),
                        ev("b", H, "u", "v1", "refund", order_id="o", amount=20.0),
                        ev("c", 2 * H, "u", "v1", "refund", order_id="o"),
                        ev("d", 3 * H, "u", "v1", "refund", order_id="o", amount=5.0)])
    back = A.refunds(log, A.orders(log))
    assert back["cents"].tolist() == [2000, 1000, 0]


def test_an_empty_range_is_all_zeros():
    stats = c1_stats(DAY, DAY)
    assert all(stats["totals"][k] == 0 for k in (*A.COUNTS, *A.CENTS))
    assert stats["totals"]["conversion"]["rate"] is None and stats["totals"]["avg_watch_ratio"] is None
    assert stats["totals"]["commission"]["total"] == states(0.0, 0.0, 0.0)
    assert stats["daily"] == [] and stats["cascades"] == [] and len(stats["videos"]) == 2
    assert stats["totals"]["cascade"] == dict.fromkeys(("cascades", "shares", "reached_users", "max_depth",
                                                        "purchases"), 0)


def test_a_creator_without_videos_still_sees_sharer_commission():
    stats = A.creator_stats(VIDEOS.iloc[:0], PRODUCTS, EVENTS, SERVED, ENTRIES, creator_id="u3")
    assert stats["videos"] == [] and stats["totals"]["views"] == 0 and stats["daily"][0]["commission"] == 1.0
    assert stats["totals"]["commission"]["sharer"] == states(1.0, 0.0, 1.0)  # u3's link s3 sold o1
    assert A.creator_stats(VIDEOS.iloc[:0], None, EVENTS.iloc[:0], None, ENTRIES.iloc[:0])["creator_id"] is None


def test_videos_of_two_creators_need_a_creator_id():
    with pytest.raises(ValueError, match="one creator"):
        A.creator_stats(VIDEOS, PRODUCTS, EVENTS, SERVED, ENTRIES)


def test_best_and_worst_need_enough_viewers():
    # vA: 40 viewers, 8 buy; vB: 30 viewers, none buys; vC: 5 viewers who all buy, too few to be named
    rows, n = [], 0
    for video, viewers, buyers in (("vA", 40, 8), ("vB", 30, 0), ("vC", 5, 5)):
        for i in range(viewers):
            n += 1
            rows.append(ev(f"w{n}", n, f"{video}-u{i}", video, "view", watch_ms=1000))
            if i < buyers:
                rows.append(ev(f"b{n}", n, f"{video}-u{i}", video, "purchase", order_id=f"o{n}", amount=10.0))
    videos = pd.DataFrame({"video_id": ["vA", "vB", "vC"], "creator_id": "c", "product_id": None,
                           "duration_ms": 2000.0, "title": ["A", "B", "C"]})
    stats = A.creator_stats(videos, None, events_frame(rows), None, ENTRIES.iloc[:0])
    assert stats["average_conversion"] == pytest.approx(13 / 75) and stats["min_viewers"] == 30
    assert stats["best"]["video_id"] == "vA" and stats["best"]["lift"] == pytest.approx(0.2 / (13 / 75))
    assert stats["best"]["vs_average"] == "within"  # [0.105, 0.348] holds 0.173
    assert stats["worst"]["video_id"] == "vB" and stats["worst"]["vs_average"] == "below"  # upper bound 0.114
    assert [r["video_id"] for r in stats["videos"]] == ["vC", "vA", "vB"]


def test_merchant_stats_by_hand():
    mine = PRODUCTS[PRODUCTS["merchant_id"] == "m1"]
    stats = A.merchant_stats(mine, VIDEOS, EVENTS, SERVED, ENTRIES, merchant_id="m1")
    totals = stats["totals"]
    assert (totals["impressions"], totals["views"], totals["viewers"], totals["purchases"], totals["gmv"]) == (
        5, 6, 4, 4, 180.0)
    assert totals["commission"]["creator"] == states(20.0, 2.0, 13.0)
    assert totals["commission"]["sharer"] == states(3.0, 0.0, 2.0)  # u3 and u1 settled; c1's o4 share has not
    p1, p2 = stats["products"]
    assert (p1["product_id"], p1["videos"], p1["views"], p1["viewers"], p1["purchases"], p1["gmv"]) == (
        "p1", 2, 5, 4, 4, 180.0)
    assert (p2["product_id"], p2["videos"], p2["views"], p2["purchases"]) == ("p2", 1, 1, 0)
    assert [(c["creator_id"], c["gmv"]) for c in stats["creators"]] == [("c1", 130.0), ("c2", 50.0)]
    assert stats["creators"][0]["commission"]["accrued"] == 17.0  # o1..o3: 3 × 5.00 + two sharers' 1.00
    c2 = stats["creators"][1]
    assert (c2["views"], c2["purchases"], c2["converted_viewers"], c2["commission"]["accrued"]) == (1, 1, 0, 6.0)
    assert [(s["creator_id"], s["video_id"]) for s in stats["sellers"]] == [("c1", "v1"), ("c2", "v3"), ("c1", "v2")]
    other = A.merchant_stats(PRODUCTS[PRODUCTS["merchant_id"] == "m2"], VIDEOS, EVENTS, SERVED, ENTRIES)
    assert other["totals"]["purchases"] == 0 and other["sellers"] == [] and other["products"][0]["videos"] == 0


# --- properties on random logs ------------------------------------------------------------------------------

ADDITIVE = ("impressions", "views", "shares", "views_via_shares", "purchases", "purchases_via_shares", "refunds")
KINDS = ("impression", "view", "share", "purchase", "refund", "like")
step = st.tuples(st.integers(0, 4 * DAY_MS), st.integers(0, 5), st.integers(0, 3), st.sampled_from(KINDS),
                 st.integers(0, 12), st.one_of(st.none(), st.integers(1, 9_999)), st.booleans())
bound = st.one_of(st.none(), st.integers(-DAY_MS, 5 * DAY_MS))


def random_log(steps) -> pd.DataFrame:
    """A log from Hypothesis steps: shares and purchases numbered, links and refunds to random (maybe absent) ids."""
    rows = []
    for i, (ts, user, video, kind, ref, cents, via) in enumerate(steps):
        extra = {"via_share_id": f"s{ref}" if via else None, "watch_ms": float(cents or 0) * 3,
                 "request_id": f"r{ref}" if via else None}
        if kind == "share":
            extra["share_id"] = f"s{i}"
        if kind in ("purchase", "refund"):
            amount = (cents or 100) / 100 if kind == "purchase" else (None if cents is None else cents / 100)
            extra |= {"order_id": f"o{i}" if kind == "purchase" else f"o{ref}", "amount": amount}
        rows.append(ev(f"e{i}", ts, f"u{user}", f"v{video}", kind, **extra))
    return events_frame(rows) if rows else EVENTS.iloc[:0]


RANDOM_VIDEOS = pd.DataFrame({"video_id": ["v0", "v1", "v2", "v3"], "creator_id": "c", "product_id": "p1",
                              "duration_ms": [10_000.0, np.nan, 5_000.0, 0.0], "title": list("abcd")})


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step, max_size=40), since=bound, until=bound)
def test_totals_are_the_sums_of_the_rows_and_intervals_hold_their_estimate(steps, since, until):
    log = random_log(steps)
    since, until = (None if b is None else pd.Timestamp(T0 + b, unit="ms", tz="UTC") for b in (since, until))
    entries = compute_ledger(log, RANDOM_VIDEOS, RateBook.current(PRODUCTS), LedgerRules(), T0 + 9 * DAY_MS)
    stats = A.creator_stats(RANDOM_VIDEOS, PRODUCTS, log, None, entries, since, until, creator_id="c")
    rows, totals = stats["videos"], stats["totals"]
    for name in ADDITIVE:
        assert totals[name] == sum(r[name] for r in rows), name
    for name in A.CENTS:
        assert totals[name] == pytest.approx(sum(r[name] for r in rows), abs=1e-6), name
    for name in ("viewers", "buyers"):  # distinct users: no more than the sum, no less than any row
        assert max([0] + [r[name] for r in rows]) <= totals[name] <= sum(r[name] for r in rows)
    # a user who viewed one video and bought through another converted for the creator, not for either video
    assert max([0] + [r["converted_viewers"] for r in rows]) <= totals["converted_viewers"]
    assert totals["converted_viewers"] <= min(totals["viewers"], totals["buyers"])
    for name in A.STATES:
        assert totals["commission"]["creator"][name] == pytest.approx(sum(r["commission"][name] for r in rows))
    for conv in [totals["conversion"], *(r["conversion"] for r in rows)]:
        assert conv["rate"] is None or 0.0 <= conv["low"] <= conv["rate"] <= conv["high"] <= 1.0
    daily = stats["daily"]
    assert sum(d["views"] for d in daily) == totals["views"] and sum(d["purchases"] for d in daily) == totals["purchases"]
    assert sum(d["gmv"] for d in daily) == pytest.approx(totals["gmv"], abs=1e-6)
    earned = totals["commission"]["total"]
    assert sum(d["commission"] for d in daily) == pytest.approx(earned["accrued"] - earned["clawed_back"], abs=1e-6)
    assert all(r["avg_watch_ratio"] is None or 0.0 <= r["avg_watch_ratio"] <= 1.0 for r in rows)


@settings(max_examples=120, deadline=None)
@given(steps=st.lists(step, max_size=40))
def test_every_share_is_one_deeper_than_its_parent_made_before_it(steps):
    tree = A.share_tree(random_log(steps)).set_index("share_id")
    for share, node in tree.iterrows():
        if pd.isna(node["parent_share_id"]):
            assert node["depth"] == 1 and node["root_share_id"] == share
        else:
            parent = tree.loc[node["parent_share_id"]]
            assert node["depth"] == parent["depth"] + 1 and node["root_share_id"] == parent["root_share_id"]
            assert parent["ts"] <= node["ts"]
