"""Creator and merchant stats read from a real store (SQLite and PostgreSQL), checked against an oracle: the
pandas computation over the raw events that the stats route ran before the database aggregated them (kept
below, frozen, in this file only).

The store holds the small generated world plus hand-made edge cases: a creator without events, a video with
impressions but no views, a video without a duration, refunds before and across a range's start (blank ones,
ones past the order's amount, one without its purchase), and a share cascade cut by a range's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

from feed.analytics import (
    MERCHANT_LEVELS,
    MIN_VIEWERS_TO_COMPARE,
    TOP_CASCADES,
    conversion,
    days_of,
    in_range,
    ledger_sums,
    rollup,
    to_cents,
    utc,
)
from feed.attribution import DAY_MS, LedgerRules
from feed.store.stats import utc_day
from feed.store.store import EventStore, migration_config
from feed.validation import TableFile, validate_table
from serving.stats_routes import read_creator_stats, read_merchant_stats

NOW_MS = 1_767_225_600_000 + 40 * 86_400_000  # 40 days after the world starts: every order has settled
DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2026-01-01", tz="UTC")
RANGES = [(None, None), ("2026-01-08", None), (None, "2026-01-15"), ("2026-01-07T06:00", "2026-01-12T18:30"),
          ("2026-01-10", "2026-01-11"), ("2026-03-01", "2026-03-02")]


# --- the world and its edge cases ---------------------------------------------------------------------------


def edge_events(creator: str, video: str, product: str) -> pd.DataFrame:
    """Hand-made events on `creator`'s videos: refunds across a range's start, a cascade, impressions only."""
    rows = [
        ("x01", 1.5, "xu1", video, "purchase", {"order_id": "xo1", "amount": 40.0, "product_id": product}),
        ("x02", 9.5, "xu1", video, "refund", {"order_id": "xo1"}),  # blank: the whole order, bought before
        ("x03", 2.5, "xu2", video, "purchase", {"order_id": "xo2", "amount": 30.0, "product_id": product}),
        ("x04", 3.5, "xu2", video, "refund", {"order_id": "xo2", "amount": 20.0}),
        ("x05", 9.6, "xu2", video, "refund", {"order_id": "xo2", "amount": 20.0}),  # only 10.00 is left
        ("x06", 11.5, "xu2", video, "refund", {"order_id": "xo2"}),  # nothing is left
        ("x07", 9.7, "xu3", video, "refund", {"order_id": "xo9", "amount": 5.0}),  # its purchase is not stored
        ("x08", 1.2, "xu3", video, "purchase", {"order_id": "xo4", "amount": 12.0, "product_id": product}),
        # the same order again, later: it was bought on day 1, so a range from day 8 does not buy it again
        ("x09", 9.8, "xu3", video, "purchase", {"order_id": "xo4", "amount": 12.0, "product_id": product}),
        ("x10", 4.5, "xu4", video, "view", {"watch_ms": 1000.0}),
        ("x11", 4.6, "xu4", video, "share", {"share_id": "xs1"}),
        ("x12", 7.5, "xu5", video, "view", {"via_share_id": "xs1", "watch_ms": 10.0**9}),  # clipped to 1
        ("x13", 7.6, "xu5", video, "share", {"share_id": "xs2", "via_share_id": "xs1"}),
        ("x14", 8.5, "xu6", video, "view", {"via_share_id": "xs2"}),
        ("x15", 8.6, "xu6", video, "share", {"share_id": "xs3", "via_share_id": "xs2"}),
        ("x16", 9.0, "xu7", video, "view", {"via_share_id": "xs3", "watch_ms": 500.0}),
        ("x17", 9.1, "xu7", video, "purchase", {"via_share_id": "xs3", "order_id": "xo3", "amount": 25.0,
                                                    "product_id": product}),
        ("x18", 9.2, "xu8", video, "like", {"via_share_id": "xs2"}),
        ("x20", 5.5, "xu1", "x-v-shown", "impression", {"request_id": "xr1"}),
        ("x21", 5.6, "xu2", "x-v-shown", "impression", {}),  # without request_id: each event counts
        ("x22", 5.7, "xu2", "x-v-shown", "impression", {}),
        ("x30", 6.5, "xu1", "x-v-nodur", "view", {"watch_ms": 3000.0}),
        ("x31", 6.6, "xu2", "x-v-nodur", "view", {}),
    ]
    raw = pd.DataFrame([{"event_id": e, "ts": T0 + day * DAY, "user_id": u, "video_id": v, "event": k, **extra}
                        for e, day, u, v, k, extra in rows])
    return validate_table(TableFile(Path("edge"), "events"), raw)


def served_rows(events: pd.DataFrame, video_ids: list[str]) -> pd.DataFrame:
    """Served feed rows: repeats of 200 impression events on the videos, 50 new ones, and 2 of x-v-shown."""
    shown = events[(events["event"] == "impression") & events["video_id"].isin(video_ids)].head(200)
    rows = shown[["request_id", "user_id", "video_id", "ts"]].copy()
    extra = rows.head(50).assign(request_id=[f"extra-{i}" for i in range(50)])
    edge = pd.DataFrame({"request_id": ["xr1", "xr2"], "user_id": ["xu1", "xu9"], "video_id": "x-v-shown",
                         "ts": [T0 + 5.5 * DAY, T0 + 5.8 * DAY]}).astype({"ts": "datetime64[ms, UTC]"})
    rows = pd.concat([rows, extra, edge], ignore_index=True)
    return rows.assign(position=range(len(rows)), source="video")


@dataclass
class World:
    """The frames stored, and the creators and merchants worth asking about."""

    videos: pd.DataFrame
    products: pd.DataFrame
    events: pd.DataFrame
    served: pd.DataFrame
    creators: list[str]
    merchants: list[str]


def build_world(small_world) -> World:
    data = small_world.dataset
    busiest = data.events.merge(data.videos[["video_id", "creator_id"]])["creator_id"].value_counts()
    top = str(busiest.index[0])
    mine = data.videos[data.videos["creator_id"] == top].iloc[0]
    extra_videos = pd.DataFrame({"video_id": ["x-v-shown", "x-v-nodur", "x-v-quiet"],
                                 "creator_id": [top, top, "x-quiet"], "product_id": mine["product_id"],
                                 "duration_ms": [20_000.0, np.nan, 5_000.0], "title": ["shown", "nodur", "quiet"]})
    videos = pd.concat([data.videos, extra_videos.astype({"duration_ms": "float64"})], ignore_index=True)
    events = pd.concat([data.events, edge_events(top, str(mine["video_id"]), str(mine["product_id"]))],
                       ignore_index=True).sort_values("ts", kind="stable", ignore_index=True)
    served = served_rows(events, videos.loc[videos["creator_id"] == top, "video_id"].tolist())
    creators = [*map(str, busiest.index[[0, 1, 2, len(busiest) // 2, -1]]), "x-quiet", "nobody"]
    merchant = data.products["merchant_id"].value_counts()
    return World(videos, data.products, events, served, creators, [*map(str, merchant.index[[0, 1, -1]]), "m-none"])


def load(world: World, url: str) -> EventStore:
    """A store at `url` holding the world, its served rows and its caught-up ledger."""
    store = EventStore(url)
    store.upgrade()
    store.upsert_products(world.products, now_ms=0)
    store.upsert_videos(world.videos)
    store.insert_events(world.events)
    store.log_impressions(world.served)
    store.catch_up_ledger(LedgerRules(), now_ms=NOW_MS)
    return store


@pytest.fixture(scope="module")
def world(small_world) -> World:
    return build_world(small_world)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stored(request, world, tmp_path_factory):
    """(store, every ledger entry) on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('stats_sql') / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_schemas")()
    store = load(world, url)
    yield store, store.ledger_entries()
    store.close()


def bounds(since: str | None, until: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    return utc(since), utc(until)


def assert_same(actual: Any, expected: Any, path: str = "") -> None:
    """Equal JSON values; avg_watch_ratio within float rounding (the database sums in another order)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), path
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    elif path.endswith("avg_watch_ratio") and expected is not None:
        assert actual == pytest.approx(expected, rel=1e-12, abs=0), path
    else:
        assert actual == expected and type(actual) is type(expected), f"{path}: {actual!r} != {expected!r}"


# --- the tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_creator_stats_equal_the_raw_rows_oracle(stored, world, since, until):
    store, entries = stored
    since, until = bounds(since, until)
    sharers = set(entries.loc[entries["role"] == "sharer", "beneficiary_id"]) - set(world.videos["creator_id"])
    for creator in [*world.creators, min(sharers)]:  # the last one earns only as a sharer
        expected = oracle_creator(world, entries, creator, since, until)
        assert_same(read_creator_stats(store, creator, since, until), expected, creator)


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_merchant_stats_equal_the_raw_rows_oracle(stored, world, since, until):
    store, entries = stored
    since, until = bounds(since, until)
    for merchant in world.merchants:
        expected = oracle_merchant(world, entries, merchant, since, until)
        assert_same(read_merchant_stats(store, merchant, since, until), expected, merchant)


def test_the_edge_cases_are_in_the_numbers(stored, world):
    """The hand-made cases show up where they should (so the comparisons above are not vacuous)."""
    store, _ = stored
    top = world.creators[0]
    stats = read_creator_stats(store, top, *bounds("2026-01-08", None))
    shown = next(r for r in stats["videos"] if r["video_id"] == "x-v-shown")
    assert (shown["impressions"], shown["views"], shown["conversion"]["rate"]) == (0, 0, None)
    every = read_creator_stats(store, top, None, None)
    shown = next(r for r in every["videos"] if r["video_id"] == "x-v-shown")
    assert (shown["impressions"], shown["views"]) == (4, 0)  # xr1 once, two events without request, xr2
    nodur = next(r for r in every["videos"] if r["video_id"] == "x-v-nodur")
    assert (nodur["views"], nodur["avg_watch_ratio"]) == (2, None)
    assert stats["totals"]["refunds"] >= 3  # xo1 whole, xo2 the 10.00 left, xo9 its own 5.00
    videos = world.videos[world.videos["creator_id"] == top]
    assert "xo4" in set(store.stats_rollup(videos, *bounds(None, "2026-01-08")).orders["order_id"])
    assert "xo4" not in set(store.stats_rollup(videos, *bounds("2026-01-08", None)).orders["order_id"])  # a repeat
    quiet = read_creator_stats(store, "x-quiet", None, None)
    assert quiet["videos"][0]["views"] == 0 and quiet["daily"] == [] and quiet["totals"]["impressions"] == 0
    assert read_creator_stats(store, "nobody", None, None) is None
    assert read_merchant_stats(store, "m-none", None, None) is None


@pytest.mark.parametrize(("since", "until"), RANGES[:5])
def test_the_database_rollup_equals_the_rollup_of_the_frames(stored, world, since, until):
    """EventStore.stats_rollup and ledger_sums equal feed.analytics' pandas versions, piece by piece."""
    store, entries = stored
    since, until = bounds(since, until)
    top = world.videos[world.videos["creator_id"] == world.creators[0]]
    merchant = world.products.loc[world.products["merchant_id"] == world.merchants[0], "product_id"]
    for videos, levels in ((top, ()), (world.videos[world.videos["product_id"].isin(merchant)], MERCHANT_LEVELS)):
        got = store.stats_rollup(videos, since, until, levels)
        want = rollup(videos, world.events, world.served, since, until, levels)
        for name in ("views", "impressions"):
            mine, theirs = getattr(got, name), getattr(want, name).astype(getattr(got, name).dtypes)
            pd.testing.assert_frame_equal(sort(mine), sort(theirs))
        assert {k: counts(v) for k, v in got.viewers.items()} == {k: counts(v) for k, v in want.viewers.items()}
        for name in ("seen", "reached"):
            assert pairs(getattr(got, name)) == pairs(getattr(want, name)), name
        for name in ("orders", "refunds", "shares"):
            columns = ["event_id", "order_id", "video_id", "product_id", "user_id", "ts"]
            columns += ["creator_id", "cents"] if name != "shares" else ["share_id", "via_share_id"]
            assert rows(getattr(got, name), columns) == rows(getattr(want, name), columns), name
    mine = in_range(entries[entries["beneficiary_id"] == world.creators[0]], since, until)
    pd.testing.assert_frame_equal(store.ledger_sums(beneficiary_id=world.creators[0], since=since, until=until),
                                  ledger_sums(mine), check_dtype=False)


def sort(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns[:2]), ignore_index=True)  # by video_id (and day)


def counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.items() if v}


def pairs(frame: pd.DataFrame) -> set[tuple[str, ...]]:
    return set(frame.astype(str).itertuples(index=False, name=None))


def rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return sorted(frame[columns].astype(str).itertuples(index=False, name=None))


def test_days_are_floored_the_same_in_sql_and_pandas(stored):
    """UTC days of epoch ms, also before 1970 (SQL's integer / and % truncate towards zero)."""
    store, _ = stored
    ms = [-DAY_MS - 1, -DAY_MS, -1, 0, DAY_MS - 1, DAY_MS, 1_767_225_600_000]
    with store._engine.connect() as conn:
        got = [conn.execute(sa.select(utc_day(sa.literal(m, sa.BigInteger)))).scalar_one() for m in ms]
    assert got == days_of(pd.Series(pd.to_datetime(ms, unit="ms", utc=True))).tolist() == [-2, -1, -1, 0, 0, 1, 20454]


def test_migration_0004_swaps_the_video_index_and_back(store_url):
    """0003 → 0004 replaces ix_events_video_ts by ix_events_video_event_ts; the downgrade restores it."""
    config = migration_config(url=store_url)
    command.upgrade(config, "0003")
    engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool)

    def indexes() -> set[str]:
        return {ix["name"] for ix in sa.inspect(engine).get_indexes("events")}

    assert "ix_events_video_ts" in indexes() and "ix_events_video_event_ts" not in indexes()
    command.upgrade(config, "0004")
    assert "ix_events_video_event_ts" in indexes() and "ix_events_video_ts" not in indexes()
    command.downgrade(config, "0003")
    assert "ix_events_video_ts" in indexes() and "ix_events_video_event_ts" not in indexes()
    engine.dispose()


# --- the oracle: the pandas computation over raw events (feed.analytics at 121dbc3, frozen) --------------------


def oracle_creator(world: World, entries: pd.DataFrame, creator: str, since, until) -> dict[str, Any] | None:
    """What the route answered: None for an unknown creator, else the stats over the raw frames."""
    videos = world.videos[world.videos["creator_id"] == creator]
    if videos.empty and (entries["beneficiary_id"] == creator).sum() == 0:
        return None
    return o_creator_stats(videos, world.events, world.served, entries, since, until, creator)


def oracle_merchant(world: World, entries: pd.DataFrame, merchant: str, since, until) -> dict[str, Any] | None:
    products = world.products[world.products["merchant_id"] == merchant]
    if products.empty:
        return None
    return o_merchant_stats(products, world.videos, world.events, world.served, entries, since, until, merchant)


ALL = "_all"
COUNTS = ("impressions", "views", "viewers", "shares", "views_via_shares", "purchases", "buyers",
          "purchases_via_shares", "converted_viewers", "refunds")
CENTS = ("sales", "refunded", "gmv")


def o_first_of(first: pd.Series, fallback: pd.Series) -> pd.Series:
    chosen = np.where(first.notna().to_numpy(), first.to_numpy(dtype=object), fallback.to_numpy(dtype=object))
    return pd.Series(chosen, index=first.index, dtype="str")


def o_money(cents: Any) -> float:
    return round(int(cents) / 100, 2)


def o_states(entries: pd.DataFrame) -> dict[str, float]:
    by_kind = to_cents(entries["amount"]).groupby(entries["kind"].to_numpy()).sum()
    accrued, clawed, settled = (int(by_kind.get(kind, 0)) for kind in ("accrual", "clawback", "settlement"))
    return {"accrued": o_money(accrued), "clawed_back": o_money(-clawed), "settled": o_money(settled),
            "pending": o_money(accrued + clawed - settled)}


def o_states_by(entries: pd.DataFrame, by: str) -> dict[str, dict[str, float]]:
    return {str(key): o_states(group) for key, group in entries.groupby(by, sort=True)}


def o_json(value: Any) -> Any:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def o_share_tree(events: pd.DataFrame) -> pd.DataFrame:
    made = events[(events["event"] == "share") & events["share_id"].notna()]
    made = made.sort_values(["ts", "event_id"], kind="stable").drop_duplicates("share_id", keep="first")
    roots: dict[str, str] = {}
    depths: dict[str, int] = {}
    parents: list[str | None] = []
    for share, via in zip(made["share_id"], made["via_share_id"], strict=True):
        parent = via if isinstance(via, str) and via in roots else None
        roots[share] = share if parent is None else roots[parent]
        depths[share] = 1 if parent is None else depths[parent] + 1
        parents.append(parent)
    ids = made["share_id"].astype("str").tolist()
    return pd.DataFrame({
        "share_id": pd.Series(ids, dtype="str"), "video_id": made["video_id"].astype("str").to_numpy(),
        "root_share_id": pd.Series([roots[s] for s in ids], dtype="str"),
        "depth": np.array([depths[s] for s in ids], dtype=np.int64)})


def o_cascades(events: pd.DataFrame, tree: pd.DataFrame) -> pd.DataFrame:
    root_of = dict(zip(tree["share_id"], tree["root_share_id"], strict=True))
    came = events[events["via_share_id"].isin(list(root_of))]
    came = came.assign(root=came["via_share_id"].map(root_of))
    bought = o_orders(events)
    bought = bought[bought["via_share_id"].isin(list(root_of))]
    out = tree.groupby("root_share_id").agg(shares=("share_id", "size"), max_depth=("depth", "max"))
    out["video_id"] = tree.set_index("share_id")["video_id"].reindex(out.index)
    out["reached_users"] = came.groupby("root")["user_id"].nunique().reindex(out.index, fill_value=0)
    out["purchases"] = bought["via_share_id"].map(root_of).value_counts().reindex(out.index, fill_value=0)
    out = out.reset_index()[["root_share_id", "video_id", "shares", "reached_users", "max_depth", "purchases"]]
    return out.astype({c: "int64" for c in ("shares", "reached_users", "max_depth", "purchases")})


def o_reach_by(events: pd.DataFrame, tree: pd.DataFrame, per_root: pd.DataFrame) -> pd.DataFrame:
    video_of = dict(zip(per_root["root_share_id"], per_root["video_id"], strict=True))
    root_of = dict(zip(tree["share_id"], tree["root_share_id"], strict=True))
    came = events[events["via_share_id"].isin(list(root_of))]
    out = per_root.groupby("video_id").agg(cascades=("root_share_id", "size"), shares=("shares", "sum"),
                                           max_depth=("max_depth", "max"), purchases=("purchases", "sum"))
    group = came["via_share_id"].map(root_of).map(video_of).to_numpy()
    out["reached_users"] = came.groupby(group)["user_id"].nunique().reindex(out.index, fill_value=0)
    return out.astype("int64")


def o_reach_total(events: pd.DataFrame, tree: pd.DataFrame) -> dict[str, int]:
    came = events[events["via_share_id"].isin(list(tree["share_id"]))]
    bought = o_orders(events)
    return {"cascades": int(tree["root_share_id"].nunique()), "shares": len(tree),
            "reached_users": int(came["user_id"].nunique()), "max_depth": int(tree["depth"].max()) if len(tree) else 0,
            "purchases": int(bought["via_share_id"].isin(list(tree["share_id"])).sum())}


def o_orders(events: pd.DataFrame) -> pd.DataFrame:
    bought = events[(events["event"] == "purchase") & events["order_id"].notna()]
    bought = bought.sort_values(["ts", "event_id"], kind="stable").drop_duplicates("order_id", keep="first")
    return bought.assign(cents=to_cents(bought["amount"]))


def o_refunds(events: pd.DataFrame, bought: pd.DataFrame) -> pd.DataFrame:
    back = events[(events["event"] == "refund") & events["order_id"].notna()]
    back = back.sort_values(["ts", "event_id"], kind="stable")
    paid = bought.set_index("order_id")["cents"]
    order_cents = back["order_id"].map(paid)
    asked = to_cents(back["amount"]).where(back["amount"].notna(), order_cents.fillna(0).astype("int64"))
    total = asked.groupby(back["order_id"].to_numpy()).cumsum()
    capped = np.minimum(total, order_cents.fillna(np.inf))
    before = capped.groupby(back["order_id"].to_numpy()).shift(fill_value=0)
    first = back.groupby("order_id")[["video_id", "product_id"]].transform("first")
    video = o_first_of(back["order_id"].map(bought.set_index("order_id")["video_id"]), first["video_id"])
    product = o_first_of(back["order_id"].map(bought.set_index("order_id")["product_id"]), first["product_id"])
    return back.assign(cents=(capped - before).astype("int64"), video_id=video, product_id=product)


@dataclass(frozen=True)
class OFacts:
    impressions: pd.DataFrame
    views: pd.DataFrame
    shares: pd.DataFrame
    orders: pd.DataFrame
    refunds: pd.DataFrame


def o_facts(videos, events, served, since, until) -> OFacts:
    catalog = videos.set_index("video_id")
    events = events[events["video_id"].isin(list(catalog.index))]
    served = served[served["video_id"].isin(list(catalog.index))]
    bought = o_label(o_orders(events), catalog, own_product=True)
    views = in_range(events[events["event"] == "view"], since, until)
    duration = views["video_id"].map(catalog["duration_ms"]).astype("float64")
    ratio = (views["watch_ms"].astype("float64") / duration.where(duration > 0)).clip(0.0, 1.0)
    return OFacts(
        impressions=o_label(o_impressions(events, served, since, until), catalog),
        views=o_label(views.assign(watch_ratio=ratio), catalog),
        shares=o_label(in_range(events[events["event"] == "share"], since, until), catalog),
        orders=in_range(bought, since, until),
        refunds=o_label(in_range(o_refunds(events, bought), since, until), catalog, own_product=True))


def o_impressions(events, served, since, until) -> pd.DataFrame:
    shown = in_range(events[events["event"] == "impression"], since, until)
    key = shown["request_id"].astype("object").where(shown["request_id"].notna(), "event:" + shown["event_id"])
    rows = [shown.assign(key=key)[["key", "user_id", "video_id", "ts"]]]
    served = in_range(served, since, until)
    rows.append(served.assign(key=served["request_id"].astype("object"))[["key", "user_id", "video_id", "ts"]])
    both = pd.concat(rows, ignore_index=True)
    return both.sort_values("ts", kind="stable").drop_duplicates(["key", "user_id", "video_id"])


def o_label(frame: pd.DataFrame, catalog: pd.DataFrame, own_product: bool = False) -> pd.DataFrame:
    product = frame["video_id"].map(catalog["product_id"])
    if own_product and "product_id" in frame.columns:
        product = o_first_of(frame["product_id"], product)
    return frame.assign(creator_id=frame["video_id"].map(catalog["creator_id"]), product_id=product)


def o_measure(f: OFacts, by: str, keys: list[str]) -> pd.DataFrame:
    views, bought = f.views, f.orders
    out = pd.DataFrame(index=pd.Index(keys, dtype="object"))
    out["impressions"] = f.impressions.groupby(by).size()
    out["views"] = views.groupby(by).size()
    out["viewers"] = views.groupby(by)["user_id"].nunique()
    out["shares"] = f.shares.groupby(by).size()
    out["views_via_shares"] = views[views["via_share_id"].notna()].groupby(by).size()
    out["purchases"] = bought.groupby(by).size()
    out["buyers"] = bought.groupby(by)["user_id"].nunique()
    out["purchases_via_shares"] = bought[bought["via_share_id"].notna()].groupby(by).size()
    pairs = views[[by, "user_id"]].drop_duplicates().merge(bought[[by, "user_id"]].drop_duplicates())
    out["converted_viewers"] = pairs.groupby(by).size()
    out["refunds"] = f.refunds.groupby(by)["order_id"].nunique()
    out["sales"] = bought.groupby(by)["cents"].sum()
    out["refunded"] = f.refunds.groupby(by)["cents"].sum()
    out = out.fillna(0).astype("int64")
    out["gmv"] = out["sales"] - out["refunded"]
    out["avg_watch_ratio"] = views.groupby(by)["watch_ratio"].mean()
    return out


def o_measures_json(row: pd.Series) -> dict[str, Any]:
    out: dict[str, Any] = {name: int(row[name]) for name in COUNTS}
    out.update({name: o_money(row[name]) for name in CENTS})
    out["avg_watch_ratio"] = o_json(row["avg_watch_ratio"])
    out["conversion"] = conversion(int(row["converted_viewers"]), int(row["viewers"]))
    return out


def o_totals(f: OFacts) -> pd.Series:
    together = OFacts(**{name: getattr(f, name).assign(**{ALL: ALL}) for name in OFacts.__dataclass_fields__})
    return o_measure(together, ALL, [ALL]).iloc[0]


def o_compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    viewers = sum(r["viewers"] for r in rows)
    average = sum(r["converted_viewers"] for r in rows) / viewers if viewers else None
    able = sorted((r for r in rows if r["viewers"] >= MIN_VIEWERS_TO_COMPARE),
                  key=lambda r: (-r["conversion"]["rate"], -r["viewers"], r["video_id"]))
    out: dict[str, Any] = {"average_conversion": average, "min_viewers": MIN_VIEWERS_TO_COMPARE, "best": None,
                           "worst": None}
    if len(able) >= 2:
        out["best"], out["worst"] = o_versus(able[0], average), o_versus(able[-1], average)
    return out


def o_versus(row: dict[str, Any], average: float | None) -> dict[str, Any]:
    conv = conversion(row["converted_viewers"], row["viewers"])
    side = "within"
    if average is not None and conv["low"] > average:
        side = "above"
    elif average is not None and conv["high"] < average:
        side = "below"
    return {"video_id": row["video_id"], "title": row["title"], "viewers": row["viewers"], "conversion": conv,
            "lift": conv["rate"] / average if average else None, "vs_average": side}


def o_daily(f: OFacts, entries: pd.DataFrame) -> list[dict[str, Any]]:
    def per_day(frame: pd.DataFrame, values: pd.Series | None = None) -> pd.Series:
        days = frame["ts"].dt.strftime("%Y-%m-%d").to_numpy()
        return (pd.Series(1, index=frame.index) if values is None else values).groupby(days).sum()

    earned = entries[entries["kind"].isin(["accrual", "clawback"])]
    table = pd.DataFrame({"views": per_day(f.views), "purchases": per_day(f.orders),
                          "sales": per_day(f.orders, f.orders["cents"]),
                          "refunded": per_day(f.refunds, f.refunds["cents"]),
                          "commission": per_day(earned, to_cents(earned["amount"]))}).fillna(0).astype("int64")
    if table.empty:
        return []
    span = pd.date_range(min(table.index), max(table.index), freq="D").strftime("%Y-%m-%d")
    table = table.reindex(span, fill_value=0)
    return [{"date": day, "views": int(r.views), "purchases": int(r.purchases), "gmv": o_money(r.sales - r.refunded),
             "commission": o_money(r.commission)} for day, r in table.iterrows()]


def o_creator_stats(videos, events, served, entries, since, until, creator_id) -> dict[str, Any]:
    entries = in_range(entries[entries["beneficiary_id"] == creator_id], since, until)
    f = o_facts(videos, events, served, since, until)
    ranged = in_range(events[events["video_id"].isin(list(videos["video_id"]))], since, until)
    tree = o_share_tree(ranged)
    per_root = o_cascades(ranged, tree)
    rows = o_video_rows(videos, f, entries, o_reach_by(ranged, tree, per_root))
    totals = o_measures_json(o_totals(f))
    totals["commission"] = {"creator": o_states(entries[entries["role"] == "creator"]),
                            "sharer": o_states(entries[entries["role"] == "sharer"]), "total": o_states(entries)}
    totals["cascade"] = o_reach_total(ranged, tree)
    top = per_root.sort_values(["reached_users", "purchases", "root_share_id"],
                               ascending=[False, False, True]).head(TOP_CASCADES)
    return {"creator_id": creator_id, "range": o_range(since, until), "totals": totals, **o_compare(rows),
            "videos": rows, "daily": o_daily(f, entries),
            "cascades": [{k: o_json(v) for k, v in r.items()} for r in top.to_dict("records")]}


def o_video_rows(videos, f: OFacts, entries, reach: pd.DataFrame) -> list[dict[str, Any]]:
    table = o_measure(f, "video_id", videos["video_id"].astype(str).tolist())
    earned = o_states_by(entries[entries["role"] == "creator"], "video_id")
    names = ("cascades", "shares", "reached_users", "max_depth", "purchases")
    rows = []
    for video in videos.itertuples(index=False):
        row = {"video_id": video.video_id, "title": o_json(video.title), "product_id": o_json(video.product_id),
               "duration_ms": o_json(video.duration_ms), "commission_rate": None,  # the route passes no products
               **o_measures_json(table.loc[video.video_id])}
        row["commission"] = earned.get(video.video_id, o_states(entries.iloc[:0]))
        row["cascade"] = ({name: int(reach.at[video.video_id, name]) for name in names} if video.video_id in
                          reach.index else dict.fromkeys(names, 0))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["conversion"]["rate"] is None, -(r["conversion"]["rate"] or 0),
                                       -r["viewers"], r["video_id"]))


def o_range(since, until) -> dict[str, str | None]:
    return {"from": None if since is None else utc(since).isoformat(),
            "to": None if until is None else utc(until).isoformat()}


def o_merchant_stats(products, videos, events, served, entries, since, until, merchant_id) -> dict[str, Any]:
    own = set(products["product_id"].astype(str))
    videos = videos[videos["product_id"].isin(list(own))]
    f = o_facts(videos, events, served, since, until)
    f = OFacts(f.impressions, f.views, f.shares, f.orders[f.orders["product_id"].isin(list(own))],
               f.refunds[f.refunds["product_id"].isin(list(own))])
    entries = entries[entries["video_id"].isin(list(videos["video_id"]))]  # what the route read
    product = o_first_of(entries["product_id"], entries["video_id"].map(videos.set_index("video_id")["product_id"]))
    entries = in_range(entries.assign(product_id=product)[product.isin(list(own))].assign(
        creator_id=entries["video_id"].map(videos.set_index("video_id")["creator_id"])), since, until)
    totals = o_measures_json(o_totals(f))
    totals["commission"] = {role: o_states(entries[entries["role"] == role]) for role in ("creator", "sharer")}
    totals["commission"]["total"] = o_states(entries)
    return {"merchant_id": merchant_id, "range": o_range(since, until), "totals": totals,
            "products": o_product_rows(products, videos, f, entries), "sellers": o_seller_rows(videos, f, entries),
            "creators": o_creator_rows(videos, f, entries)}


def o_rows(table: pd.DataFrame, entries: pd.DataFrame, by: str) -> dict[str, dict[str, Any]]:
    earned = o_states_by(entries, by)
    empty = o_states(entries.iloc[:0])
    return {key: {**o_measures_json(row), "commission": earned.get(key, empty)} for key, row in table.iterrows()}


def o_product_rows(products, videos, f: OFacts, entries) -> list[dict[str, Any]]:
    rows = o_rows(o_measure(f, "product_id", products["product_id"].astype(str).tolist()), entries, "product_id")
    count = videos.groupby("product_id").size()
    out = [{"product_id": p.product_id, "category": o_json(p.category), "price": o_json(p.price),
            "commission_rate": o_json(p.commission_rate), "videos": int(count.get(p.product_id, 0)),
            **rows[p.product_id]} for p in products.itertuples(index=False)]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["product_id"]))


def o_seller_rows(videos, f: OFacts, entries) -> list[dict[str, Any]]:
    rows = o_rows(o_measure(f, "video_id", videos["video_id"].astype(str).tolist()), entries, "video_id")
    out = [{"creator_id": v.creator_id, "video_id": v.video_id, "title": o_json(v.title), "product_id": v.product_id,
            **rows[v.video_id]} for v in videos.itertuples(index=False)]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["creator_id"], r["video_id"]))


def o_creator_rows(videos, f: OFacts, entries) -> list[dict[str, Any]]:
    ids = sorted(videos["creator_id"].astype(str).unique())
    rows = o_rows(o_measure(f, "creator_id", ids), entries, "creator_id")
    count = videos.groupby("creator_id").size()
    out = [{"creator_id": c, "videos": int(count.get(c, 0)), **rows[c]} for c in ids]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["creator_id"]))
