"""Creator and merchant stats: funnels, conversion, GMV, commission, share cascades (cascades: `feed.cascades`).

Pure pandas/numpy; the results are JSON-ready dicts (ints, floats, strings, None). The definitions:

- range: `since <= ts < until`, either bound optional; every frame is filtered here (callers may pass more);
- impression: a distinct (request_id, user_id, video_id) among served-feed rows and `impression` events (an
  impression event without a request_id counts once per event);
- order: its first purchase event (by ts, then event_id), on that event's video and at its amount, as in the
  ledger (`feed.attribution.purchases_of`); its product is the event's product_id, else the video's;
- GMV: amounts of the orders bought in the range minus the amounts refunded in the range (whenever the order
  was bought), so it moves on the days money moves, like commission. A refund without an amount refunds the
  whole order, and an order's refunds never exceed its amount (both need the purchase in `events`);
- conversion: viewers who bought / viewers (distinct users of the range), with a 95 % Wilson interval;
- avg_watch_ratio: the mean of watch_ms / duration_ms clipped to [0, 1] over the views with both known;
- commission: ledger entries with ts in the range; accrued = sum(accrual), clawed_back = -sum(clawback),
  settled = sum(settlement), pending = accrued - clawed_back - settled (currency units, exact to the cent);
- share cascade: the tree of share links (`share_tree`); its reach is the distinct users with any event that
  came through one of its links. Cascades are built from the shares of the range: a share whose parent link
  was made before `since` is a root.

The reports read a `Rollup`: counts per (video, day), distinct counts over the range, and the few raw rows
(shares, purchases, refunds) that cascades and refunds need. The service gets it summed by the database
(`feed.store.EventStore.stats_rollup`) and calls `creator_report`/`merchant_report`; `creator_stats` and
`merchant_stats` build the same rollup from raw frames. `facts` and `measure` keep the raw rows (notebooks).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from feed.cascades import (
    as_lists,
    came_through,
    overall,
    per_root,
    per_video,
    share_tree,
    video_reach,
)

Z95 = 1.959963984540054  # the standard normal quantile of 0.975: 95 % two-sided intervals
MIN_VIEWERS_TO_COMPARE = 30  # a video needs this many viewers in the range to be named best or worst
TOP_CASCADES = 10  # the largest cascades listed by creator_stats
ALL = "_all"  # the key column that puts every row in one group (totals)
STATES = ("accrued", "clawed_back", "settled", "pending")
COUNTS = ("impressions", "views", "viewers", "shares", "views_via_shares", "purchases", "buyers",
          "purchases_via_shares", "converted_viewers", "refunds")
CENTS = ("sales", "refunded", "gmv")
MONEY = ("purchase", "refund")
MERCHANT_LEVELS = ("product_id", "creator_id")  # merchant stats count distinct viewers per product and creator
LEDGER_KEYS = ["role", "kind", "video_id", "product_id", "day"]  # the grain of `ledger_sums`
TimeBound = pd.Timestamp | str | None


# --- small pieces ---------------------------------------------------------------------------------------


def utc(value: Any) -> pd.Timestamp | None:
    """A time bound as a UTC timestamp (naive values are taken as UTC); None stays None."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def in_range(frame: pd.DataFrame, since: TimeBound = None, until: TimeBound = None) -> pd.DataFrame:
    """The rows with since <= ts < until (either bound optional)."""
    keep = np.ones(len(frame), dtype=bool)
    if (start := utc(since)) is not None:
        keep &= (frame["ts"] >= start).to_numpy()
    if (end := utc(until)) is not None:
        keep &= (frame["ts"] < end).to_numpy()
    return frame[keep]


def days_of(ts: pd.Series) -> np.ndarray:
    """UTC days of timestamps as whole days since 1970-01-01 (floored, as the database counts them)."""
    return ts.dt.tz_convert(None).to_numpy().astype("datetime64[D]").astype(np.int64)


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of successes/trials; ValueError unless 0 <= successes <= trials, trials > 0."""
    if not 0 <= successes <= trials or trials <= 0:
        raise ValueError(f"wilson needs 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    p, n = successes / trials, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def conversion(converted: int, viewers: int) -> dict[str, float | None]:
    """{rate, low, high} of converted/viewers with the 95 % Wilson interval; all None without viewers."""
    if viewers == 0:
        return {"rate": None, "low": None, "high": None}
    low, high = wilson(converted, viewers)
    rate = converted / viewers
    return {"rate": rate, "low": min(low, rate), "high": max(high, rate)}  # guard float rounding at 0 and 1


def to_cents(amounts: pd.Series) -> pd.Series:
    """Currency amounts as integer cents, rounded half away from zero (19.99 → 1999)."""
    values = amounts.to_numpy(dtype=np.float64, na_value=np.nan) * 100
    return pd.Series(np.sign(values) * np.floor(np.abs(values) + 0.5 + 1e-9), index=amounts.index).fillna(0).astype(
        "int64")


def first_of(first: pd.Series, fallback: pd.Series) -> pd.Series:
    """Text values of `first`, with `fallback`'s where `first` is missing."""
    chosen = np.where(first.notna().to_numpy(), first.to_numpy(dtype=object), fallback.to_numpy(dtype=object))
    return pd.Series(chosen, index=first.index, dtype="str")


def money(cents: Any) -> float:
    """Integer cents as currency units."""
    return round(int(cents) / 100, 2)


def ledger_sums(entries: pd.DataFrame) -> pd.DataFrame:
    """Ledger entries (feed.attribution.ENTRY_COLUMNS) as integer `cents` per (role, kind, video_id, product_id,
    UTC day); `feed.store.EventStore.ledger_sums` reads the same from the database."""
    frame = entries.assign(day=days_of(entries["ts"]), cents=to_cents(entries["amount"]))
    return frame.groupby(LEDGER_KEYS, dropna=False, as_index=False, sort=True)["cents"].sum()


def commission_states(sums: pd.DataFrame) -> dict[str, float]:
    """{accrued, clawed_back, settled, pending} of ledger sums (`ledger_sums` rows), in currency units."""
    return _states(sums.groupby("kind")["cents"].sum().to_dict())


def _states(cents: dict[str, Any]) -> dict[str, float]:
    """commission_states of the cents per kind (accrual, clawback, settlement)."""
    accrued, clawed, settled = (int(cents.get(kind, 0)) for kind in ("accrual", "clawback", "settlement"))
    return {"accrued": money(accrued), "clawed_back": money(-clawed), "settled": money(settled),
            "pending": money(accrued + clawed - settled)}


def _states_by(sums: pd.DataFrame, by: str) -> dict[str, dict[str, float]]:
    """commission_states per value of column `by` (one groupby, not one per value)."""
    cents: dict[str, dict[str, Any]] = {}
    for (key, kind), total in sums.groupby([by, "kind"])["cents"].sum().items():
        cents.setdefault(str(key), {})[kind] = total
    return {key: _states(kinds) for key, kinds in cents.items()}


def _by_role(sums: pd.DataFrame) -> dict[str, dict[str, float]]:
    """commission_states as the video's creator, as a direct sharer, and both."""
    return {"creator": commission_states(sums[sums["role"] == "creator"]),
            "sharer": commission_states(sums[sums["role"] == "sharer"]), "total": commission_states(sums)}


def _json(value: Any) -> Any:
    """A numpy/pandas scalar as a plain JSON value (NaN and NA → None)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


# --- share cascades over raw events (notebooks; the reports use feed.cascades directly) ----------------------


def cascades(events: pd.DataFrame, tree: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per root share: video_id, shares, reached_users, max_depth, purchases (distinct orders through it)."""
    tree = share_tree(events) if tree is None else tree
    return per_root(tree, came_through(events, tree), orders(events))


def reach_by(events: pd.DataFrame, tree: pd.DataFrame, roots: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cascade reach per video (of the root share): cascades, shares, reached_users, max_depth, purchases."""
    roots = cascades(events, tree) if roots is None else roots
    return per_video(tree, roots, came_through(events, tree))


def reach_total(events: pd.DataFrame, tree: pd.DataFrame) -> dict[str, int]:
    """Cascade reach over every cascade of `tree` together."""
    return overall(tree, came_through(events, tree), orders(events))


# --- facts of a range -----------------------------------------------------------------------------------


def orders(events: pd.DataFrame) -> pd.DataFrame:
    """Each order's first purchase event (by ts, then event_id) with its amount in integer `cents`."""
    bought = events[(events["event"] == "purchase") & events["order_id"].notna()]
    bought = bought.sort_values([c for c in ("ts", "event_id") if c in bought.columns], kind="stable")
    bought = bought.drop_duplicates("order_id", keep="first")
    return bought.assign(cents=to_cents(bought["amount"]))


def refunds(events: pd.DataFrame, bought: pd.DataFrame) -> pd.DataFrame:
    """Refund events with the `cents` they take back: blank = the whole order, never past the order's amount.

    A refund of an order missing from `bought` keeps its own amount (0 when blank) and goes to the video and
    product of the order's first refund event, so that every order stays on one video.
    """
    back = events[(events["event"] == "refund") & events["order_id"].notna()]
    if back.empty:  # the usual case; the steps below cost ~15 ms of pandas calls even on no rows
        return back.assign(cents=pd.Series(dtype="int64"))
    back = back.sort_values([c for c in ("ts", "event_id") if c in back.columns], kind="stable")
    paid = bought.set_index("order_id")["cents"]
    order_cents = back["order_id"].map(paid)  # NaN when the purchase is not in the frame
    asked = to_cents(back["amount"]).where(back["amount"].notna(), order_cents.fillna(0).astype("int64"))
    total = asked.groupby(back["order_id"].to_numpy()).cumsum()
    capped = np.minimum(total, order_cents.fillna(np.inf))
    before = capped.groupby(back["order_id"].to_numpy()).shift(fill_value=0)
    first = back.groupby("order_id")[["video_id", "product_id"]].transform("first")
    video = first_of(back["order_id"].map(bought.set_index("order_id")["video_id"]), first["video_id"])
    product = first_of(back["order_id"].map(bought.set_index("order_id")["product_id"]), first["product_id"])
    return back.assign(cents=(capped - before).astype("int64"), video_id=video, product_id=product)


def sales(events: pd.DataFrame, catalog: pd.DataFrame, since: TimeBound = None,
          until: TimeBound = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(orders bought in the range, refunds of the range with their cents), with creator_id and product_id.

    `catalog` is the videos indexed by video_id; `events` must hold every purchase and every earlier refund of
    the range's orders (on the catalog's videos) for the orders and the refunds' cents to be right.
    """
    bought = _label(orders(events), catalog, own_product=True)
    back = _label(in_range(refunds(events, bought), since, until), catalog, own_product=True)
    return in_range(bought, since, until), back


@dataclass(frozen=True)
class Facts:
    """The range's facts on a set of videos; every frame has video_id, product_id and creator_id columns."""

    impressions: pd.DataFrame  # distinct impressions: user_id, ts
    views: pd.DataFrame  # view events, plus watch_ratio (NaN when unknown)
    shares: pd.DataFrame  # share events
    orders: pd.DataFrame  # orders bought in the range (see `orders`)
    refunds: pd.DataFrame  # refund events of the range, with the cents they take back


def facts(videos: pd.DataFrame, events: pd.DataFrame, impressions: pd.DataFrame | None,
          since: TimeBound = None, until: TimeBound = None) -> Facts:
    """The facts of since <= ts < until on `videos` (events and impressions of other videos are ignored)."""
    catalog = videos.set_index("video_id")
    events = events[events["video_id"].isin(list(catalog.index))]
    served = None if impressions is None else impressions[impressions["video_id"].isin(list(catalog.index))]
    views = in_range(events[events["event"] == "view"], since, until)
    duration = views["video_id"].map(catalog["duration_ms"]).astype("float64")
    ratio = (views["watch_ms"].astype("float64") / duration.where(duration > 0)).clip(0.0, 1.0)
    bought, back = sales(events, catalog, since, until)
    return Facts(
        impressions=_label(distinct_impressions(events, served, since, until), catalog),
        views=_label(views.assign(watch_ratio=ratio), catalog),
        shares=_label(in_range(events[events["event"] == "share"], since, until), catalog),
        orders=bought, refunds=back)


def distinct_impressions(events: pd.DataFrame, served: pd.DataFrame | None, since: TimeBound = None,
                         until: TimeBound = None) -> pd.DataFrame:
    """Distinct (request_id, user_id, video_id) of the range among served rows and `impression` events."""
    shown = in_range(events[events["event"] == "impression"], since, until)
    key = shown["request_id"].astype("object").where(shown["request_id"].notna(), "event:" + shown["event_id"])
    rows = [shown.assign(key=key)[["key", "user_id", "video_id", "ts"]]]
    if served is not None and len(served):
        served = in_range(served, since, until)
        rows.append(served.assign(key=served["request_id"].astype("object"))[["key", "user_id", "video_id", "ts"]])
    both = pd.concat(rows, ignore_index=True) if len(rows) > 1 else rows[0]
    return both.sort_values("ts", kind="stable").drop_duplicates(["key", "user_id", "video_id"])


def _label(frame: pd.DataFrame, catalog: pd.DataFrame, own_product: bool = False) -> pd.DataFrame:
    """`frame` with its video's creator_id and product_id (its own product_id first, when `own_product`)."""
    product = frame["video_id"].map(catalog["product_id"])
    if own_product and "product_id" in frame.columns:
        product = first_of(frame["product_id"], product)
    return frame.assign(creator_id=frame["video_id"].map(catalog["creator_id"]), product_id=product)


def measure(f: Facts, by: str, keys: list[str]) -> pd.DataFrame:
    """Counts, watch ratio and cents per value of column `by` (one row per key, zeros when nothing happened)."""
    views, bought = f.views, f.orders
    counts = pd.DataFrame({"impressions": f.impressions.groupby(by).size(), "views": views.groupby(by).size(),
                           "viewers": views.groupby(by)["user_id"].nunique(), "shares": f.shares.groupby(by).size(),
                           "views_via_shares": views[views["via_share_id"].notna()].groupby(by).size()})
    out = _table([counts, _money_counts(bought.assign(key=bought[by]), f.refunds.assign(key=f.refunds[by]),
                                        views.assign(key=views[by]))], keys)
    out["avg_watch_ratio"] = views.groupby(by)["watch_ratio"].mean()  # NaN: no view with a known ratio
    return out


def _money_counts(bought: pd.DataFrame, back: pd.DataFrame, seen: pd.DataFrame) -> pd.DataFrame:
    """The order, buyer, converted-viewer, refund and cents columns per `key` (a column of each frame).

    bought: orders; back: refunds with their cents; seen: (key, user_id) of the viewers (at least the buyers).
    Plain counters: these frames are small, and a pandas groupby costs a millisecond each. Rows without a key
    are left out, as groupby leaves them out.
    """
    bought, back, seen = (frame[frame["key"].notna()] for frame in (bought, back, seen))
    keys, users, cents, via = as_lists(bought.assign(via=bought["via_share_id"].notna()), "key", "user_id", "cents",
                                       "via")
    back_keys, orders_back, cents_back = as_lists(back, "key", "order_id", "cents")
    viewed = set(zip(*as_lists(seen, "key", "user_id"), strict=True))
    buyers = set(zip(keys, users, strict=True))
    columns = {"purchases": Counter(keys), "buyers": Counter(key for key, _ in buyers),
               "purchases_via_shares": Counter(key for key, shared in zip(keys, via, strict=True) if shared),
               "converted_viewers": Counter(key for key, user in buyers if (key, user) in viewed),
               "refunds": Counter(key for key, _ in set(zip(back_keys, orders_back, strict=True))),
               "sales": _sums(keys, cents), "refunded": _sums(back_keys, cents_back)}
    return pd.DataFrame(columns, columns=list(columns), dtype="float64")  # float: absent keys are NaN until _table


def _sums(keys: list[Any], values: list[int]) -> Counter[Any]:
    """The values summed per key."""
    out: Counter[Any] = Counter()
    for key, value in zip(keys, values, strict=True):
        out[key] += value
    return out


def _table(parts: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """Count columns (frames by key) as one int64 row per key, zeros where missing, plus gmv = sales - refunded."""
    out = pd.concat(parts, axis=1).reindex(pd.Index(keys, dtype="object")).fillna(0).astype("int64")
    out["gmv"] = out["sales"] - out["refunded"]
    return out


def measures_json(row: pd.Series | dict[str, Any]) -> dict[str, Any]:
    """One measure row as JSON: counts, money in currency units, conversion with its interval."""
    out: dict[str, Any] = {name: int(row[name]) for name in COUNTS}
    out.update({name: money(row[name]) for name in CENTS})
    out["avg_watch_ratio"] = _json(row["avg_watch_ratio"])
    out["conversion"] = conversion(int(row["converted_viewers"]), int(row["viewers"]))
    return out


# --- rollups: what the reports read ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rollup:
    """A range's stats inputs on a set of videos: counts per (video, day), distinct counts over the range (they
    do not add up across days or videos), and the few raw rows that orders, refunds and cascades need.

    `rollup` builds it from raw frames; `feed.store.EventStore.stats_rollup` has the database build the same
    without sending view or impression rows (only the distinct (video, user) views of the range's buyers).
    """

    views: pd.DataFrame  # per (video_id, day) with views: views, views_via_shares, watched, watch_ms (`view_sums`)
    impressions: pd.DataFrame  # video_id, impressions (distinct, as `distinct_impressions`)
    viewers: dict[str, pd.Series]  # distinct viewers per key of "video_id", ALL and each catalog column asked
    seen: pd.DataFrame  # distinct (video_id, user_id) of the range's views; at least those of its buyers
    shares: pd.DataFrame  # share events of the range
    reached: pd.DataFrame  # feed.cascades.came_through pairs of the range's events and share links
    orders: pd.DataFrame  # orders bought in the range, with creator_id and product_id (`sales`)
    refunds: pd.DataFrame  # refund events of the range with the cents they take back (`sales`)


def rollup(videos: pd.DataFrame, events: pd.DataFrame, impressions: pd.DataFrame | None, since: TimeBound = None,
           until: TimeBound = None, levels: tuple[str, ...] = ()) -> Rollup:
    """The rollup of since <= ts < until on `videos` from raw frames; `levels`: more catalog columns to count
    distinct viewers by (besides video_id and ALL)."""
    catalog = videos.set_index("video_id")
    events = events[events["video_id"].isin(list(catalog.index))]
    served = None if impressions is None else impressions[impressions["video_id"].isin(list(catalog.index))]
    ranged = in_range(events, since, until)
    views, shares = ranged[ranged["event"] == "view"], ranged[ranged["event"] == "share"]
    bought, back = sales(events[events["event"].isin(MONEY)], catalog, since, until)
    shown = distinct_impressions(events, served, since, until).groupby("video_id").size()
    return Rollup(views=view_sums(views, catalog), impressions=shown.rename("impressions").reset_index(),
                  viewers=viewers_by(_label(views, catalog), ("video_id", ALL, *levels)),
                  seen=views.loc[views["user_id"].isin(list(bought["user_id"])), ["video_id", "user_id"]]
                  .drop_duplicates(ignore_index=True),
                  shares=shares, reached=came_through(ranged, share_tree(shares)), orders=bought, refunds=back)


def view_sums(views: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Per (video_id, day): views, views_via_shares, watched (views with watch_ms and a positive duration_ms)
    and watch_ms (theirs clipped to [0, duration_ms], summed: the video's ratio sum is watch_ms / duration_ms)."""
    duration = views["video_id"].map(catalog["duration_ms"]).to_numpy(dtype=np.float64, na_value=np.nan)
    watch = views["watch_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
    known = ~np.isnan(watch) & (np.nan_to_num(duration) > 0)
    frame = pd.DataFrame({"video_id": views["video_id"].to_numpy(), "day": days_of(views["ts"]), "views": 1,
                          "views_via_shares": views["via_share_id"].notna().to_numpy().astype(np.int64),
                          "watched": known.astype(np.int64),
                          "watch_ms": np.where(known, np.clip(watch, 0.0, np.nan_to_num(duration)), 0.0)})
    return frame.groupby(["video_id", "day"], as_index=False, sort=True).sum()


def viewers_by(views: pd.DataFrame, levels: tuple[str, ...]) -> dict[str, pd.Series]:
    """Distinct users of `views` per key of each level: a column of `views`, or ALL (one key)."""
    return {level: views.assign(**{ALL: ALL}).groupby(level)["user_id"].nunique() for level in levels}


def tally(r: Rollup, catalog: pd.DataFrame, by: str, keys: list[str]) -> pd.DataFrame:
    """What `measure` counts, from a rollup: per video_id, catalog column or ALL (`catalog`: videos by video_id)."""
    videos = _per_video(r, catalog)
    grouped = videos.groupby(_key(videos.index.to_series(), catalog, by)).sum()
    bought, back = (frame.assign(key=frame[by] if by in frame.columns else ALL) for frame in (r.orders, r.refunds))
    seen = r.seen.assign(key=_key(r.seen["video_id"], catalog, by))
    out = _table([grouped[["impressions", "views", "views_via_shares", "shares"]], r.viewers[by].rename("viewers"),
                  _money_counts(bought, back, seen)], keys)
    ratio = grouped["ratio"] / grouped["watched"].where(grouped["watched"] > 0)
    return out.assign(avg_watch_ratio=ratio.reindex(out.index))  # NaN: no view with a known ratio


def _per_video(r: Rollup, catalog: pd.DataFrame) -> pd.DataFrame:
    """The rollup's additive counts per video: impressions, views, views_via_shares, shares, watched, and ratio
    (the sum of the watched views' watch ratios, watch_ms / duration_ms)."""
    views = r.views.groupby("video_id")[["views", "views_via_shares", "watched", "watch_ms"]].sum()
    per = pd.concat([views, r.impressions.set_index("video_id")["impressions"],
                     r.shares["video_id"].value_counts().rename("shares")], axis=1).fillna(0).sort_index()
    duration = per.index.map(catalog["duration_ms"]).to_numpy(dtype=np.float64, na_value=np.nan)
    watched = per["watched"].to_numpy() > 0  # then duration > 0: a watch ratio needs one
    ratio = np.divide(per["watch_ms"].to_numpy(dtype=np.float64), duration, out=np.zeros(len(per)), where=watched)
    return per.assign(ratio=ratio)  # sorted by video: the same float sums whichever way the rollup was built


def _key(videos: pd.Series, catalog: pd.DataFrame, by: str) -> np.ndarray:
    """The `by` key of each video id: the id itself, its catalog column `by`, or ALL."""
    if by == "video_id":
        return videos.to_numpy()
    if by == ALL:
        return np.full(len(videos), ALL, dtype=object)
    return videos.map(catalog[by]).to_numpy()


def daily(r: Rollup, earned: pd.DataFrame) -> list[dict[str, Any]]:
    """Per UTC day from the first to the last active one: views, purchases, gmv and net commission earned."""
    net = earned[earned["kind"].isin(["accrual", "clawback"])]
    bought, back = days_of(r.orders["ts"]), days_of(r.refunds["ts"])
    table = pd.DataFrame({"views": r.views.groupby("day")["views"].sum(), "purchases": r.orders.groupby(bought).size(),
                          "sales": r.orders["cents"].groupby(bought).sum(),
                          "refunded": r.refunds["cents"].groupby(back).sum(),
                          "commission": net.groupby("day")["cents"].sum()}).fillna(0).astype("int64")
    if table.empty:
        return []
    table = table.reindex(range(int(min(table.index)), int(max(table.index)) + 1), fill_value=0)
    return [{"date": str(np.datetime64(day, "D")), "views": int(t.views), "purchases": int(t.purchases),
             "gmv": money(t.sales - t.refunded), "commission": money(t.commission)} for day, t in table.iterrows()]


def compare(rows: list[dict[str, Any]], min_viewers: int = MIN_VIEWERS_TO_COMPARE) -> dict[str, Any]:
    """The pooled conversion of `rows` and their best and worst converters among those with min_viewers."""
    viewers = sum(r["viewers"] for r in rows)
    average = sum(r["converted_viewers"] for r in rows) / viewers if viewers else None
    able = sorted((r for r in rows if r["viewers"] >= min_viewers),
                  key=lambda r: (-r["conversion"]["rate"], -r["viewers"], r["video_id"]))
    out: dict[str, Any] = {"average_conversion": average, "min_viewers": min_viewers, "best": None, "worst": None}
    if len(able) >= 2:  # with one video, "best" and "worst" would both be it
        out["best"], out["worst"] = _versus(able[0], average), _versus(able[-1], average)
    return out


def _versus(row: dict[str, Any], average: float | None) -> dict[str, Any]:
    """A video's conversion against the average: lift (rate / average) and whether its interval excludes it."""
    conv = conversion(row["converted_viewers"], row["viewers"])
    side = "within"
    if average is not None and conv["low"] > average:
        side = "above"
    elif average is not None and conv["high"] < average:
        side = "below"
    return {"video_id": row["video_id"], "title": row["title"], "viewers": row["viewers"], "conversion": conv,
            "lift": conv["rate"] / average if average else None, "vs_average": side}


# --- the two reports ------------------------------------------------------------------------------------


def creator_stats(videos: pd.DataFrame, products: pd.DataFrame | None, events: pd.DataFrame,
                  impressions: pd.DataFrame | None, entries: pd.DataFrame, since: TimeBound = None,
                  until: TimeBound = None, *, creator_id: str | None = None) -> dict[str, Any]:
    """A creator's funnel, conversion, GMV, commission, daily series and share cascades over a range.

    `videos` are the creator's (other creators' rows are dropped when `creator_id` is given); `entries` are the
    ledger entries where the creator is the beneficiary (filtered to `creator_id` when given).
    """
    creator_id = _one_creator(videos, creator_id)
    videos = videos[videos["creator_id"] == creator_id] if creator_id is not None else videos
    entries = entries if creator_id is None else entries[entries["beneficiary_id"] == creator_id]
    r = rollup(videos, events, impressions, since, until)
    return creator_report(videos, products, r, ledger_sums(in_range(entries, since, until)), since, until,
                          creator_id=creator_id)


def creator_report(videos: pd.DataFrame, products: pd.DataFrame | None, r: Rollup, earned: pd.DataFrame,
                   since: TimeBound = None, until: TimeBound = None, *,
                   creator_id: str | None = None) -> dict[str, Any]:
    """creator_stats from the rollup of the creator's `videos` and the `ledger_sums` of the range's entries that
    pay the creator."""
    tree = share_tree(r.shares)
    roots = per_root(tree, r.reached, r.orders)
    rows = _video_rows(videos, products, r, earned, per_video(tree, roots, r.reached))
    totals = measures_json(tally(r, videos.set_index("video_id"), ALL, [ALL]).iloc[0])
    totals["commission"] = _by_role(earned)
    totals["cascade"] = overall(tree, r.reached, r.orders)
    top = roots.sort_values(["reached_users", "purchases", "root_share_id"],
                            ascending=[False, False, True]).head(TOP_CASCADES)
    return {"creator_id": creator_id, "range": _range(since, until), "totals": totals, **compare(rows),
            "videos": rows, "daily": daily(r, earned),
            "cascades": [{k: _json(v) for k, v in row.items()} for row in top.to_dict("records")]}


def _one_creator(videos: pd.DataFrame, creator_id: str | None) -> str | None:
    """The creator the stats are about: `creator_id`, else the videos' only creator."""
    if creator_id is not None:
        return creator_id
    found = videos["creator_id"].dropna().unique()
    if len(found) > 1:
        raise ValueError(f"creator_stats expects the videos of one creator, got {len(found)} creators; "
                         "pass creator_id")
    return str(found[0]) if len(found) else None


def _video_rows(videos: pd.DataFrame, products: pd.DataFrame | None, r: Rollup, earned: pd.DataFrame,
                reach: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per video with its creator-role commission and cascade reach, best converting first."""
    table = tally(r, videos.set_index("video_id"), "video_id", videos["video_id"].astype(str).tolist())
    measured, reached = table.to_dict("index"), reach.to_dict("index")
    paid, unpaid = _states_by(earned[earned["role"] == "creator"], "video_id"), _states({})
    rate = (products.set_index("product_id")["commission_rate"] if products is not None and len(products)
            else pd.Series(dtype="float64"))
    rows = []
    for video in videos.itertuples(index=False):
        row = {"video_id": video.video_id, "title": _json(video.title), "product_id": _json(video.product_id),
               "duration_ms": _json(video.duration_ms),
               "commission_rate": _json(rate.get(video.product_id)) if isinstance(video.product_id, str) else None,
               **measures_json(measured[video.video_id])}
        row["commission"] = paid.get(video.video_id, unpaid)
        row["cascade"] = video_reach(reached, video.video_id)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["conversion"]["rate"] is None, -(r["conversion"]["rate"] or 0),
                                       -r["viewers"], r["video_id"]))


def _range(since: TimeBound, until: TimeBound) -> dict[str, str | None]:
    """The range as ISO-8601 UTC strings."""
    return {"from": None if since is None else utc(since).isoformat(),
            "to": None if until is None else utc(until).isoformat()}


def merchant_stats(products: pd.DataFrame, videos: pd.DataFrame, events: pd.DataFrame,
                   impressions: pd.DataFrame | None, entries: pd.DataFrame, since: TimeBound = None,
                   until: TimeBound = None, *, merchant_id: str | None = None) -> dict[str, Any]:
    """A merchant's sales per product and per (creator, video) selling it, and which creators sell best.

    `products` are the merchant's; `videos` those linking them; `entries` any ledger entries (those of other
    products are dropped). Orders count for the merchant when their product is one of `products`.
    """
    videos = videos[videos["product_id"].isin(list(products["product_id"].astype(str)))]
    r = rollup(videos, events, impressions, since, until, MERCHANT_LEVELS)
    return merchant_report(products, videos, r, ledger_sums(in_range(entries, since, until)), since, until,
                           merchant_id=merchant_id)


def merchant_report(products: pd.DataFrame, videos: pd.DataFrame, r: Rollup, earned: pd.DataFrame,
                    since: TimeBound = None, until: TimeBound = None, *,
                    merchant_id: str | None = None) -> dict[str, Any]:
    """merchant_stats from the rollup (with MERCHANT_LEVELS) of the videos linking the merchant's `products` and
    the `ledger_sums` of the range's entries (those of other products are dropped)."""
    own = set(products["product_id"].astype(str))
    videos = videos[videos["product_id"].isin(list(own))]
    r = replace(r, orders=r.orders[r.orders["product_id"].isin(list(own))],  # of the merchant's products only
                refunds=r.refunds[r.refunds["product_id"].isin(list(own))])
    earned = _merchant_entries(earned, videos, own)
    totals = measures_json(tally(r, videos.set_index("video_id"), ALL, [ALL]).iloc[0])
    totals["commission"] = _by_role(earned)
    return {"merchant_id": merchant_id, "range": _range(since, until), "totals": totals,
            "products": _product_rows(products, videos, r, earned),
            "sellers": _seller_rows(videos, r, earned), "creators": _creator_rows(videos, r, earned)}


def _merchant_entries(sums: pd.DataFrame, videos: pd.DataFrame, own: set[str]) -> pd.DataFrame:
    """Ledger sums of the merchant's products (by the entry's product, else by its video's product)."""
    catalog = videos.set_index("video_id")
    product = first_of(sums["product_id"], sums["video_id"].map(catalog["product_id"]))
    return sums.assign(product_id=product, creator_id=sums["video_id"].map(catalog["creator_id"]))[
        product.isin(list(own))]


def _rows(table: pd.DataFrame, earned: pd.DataFrame, by: str) -> dict[str, dict[str, Any]]:
    """Measure rows as JSON with their commission (all roles), keyed by `by`."""
    paid = _states_by(earned, by)
    return {key: {**measures_json(row), "commission": paid.get(key, _states({}))}
            for key, row in table.to_dict("index").items()}


def _product_rows(products: pd.DataFrame, videos: pd.DataFrame, r: Rollup,
                  earned: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per product, highest GMV first."""
    ids = products["product_id"].astype(str).tolist()
    rows = _rows(tally(r, videos.set_index("video_id"), "product_id", ids), earned, "product_id")
    count = videos.groupby("product_id").size()
    out = [{"product_id": p.product_id, "category": _json(p.category), "price": _json(p.price),
            "commission_rate": _json(p.commission_rate), "videos": int(count.get(p.product_id, 0)),
            **rows[p.product_id]} for p in products.itertuples(index=False)]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["product_id"]))


def _seller_rows(videos: pd.DataFrame, r: Rollup, earned: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per (creator, video) selling the merchant's products, highest GMV first."""
    ids = videos["video_id"].astype(str).tolist()
    rows = _rows(tally(r, videos.set_index("video_id"), "video_id", ids), earned, "video_id")
    out = [{"creator_id": v.creator_id, "video_id": v.video_id, "title": _json(v.title), "product_id": v.product_id,
            **rows[v.video_id]} for v in videos.itertuples(index=False)]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["creator_id"], r["video_id"]))


def _creator_rows(videos: pd.DataFrame, r: Rollup, earned: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per creator selling the merchant's products, best seller (GMV, then purchases) first."""
    ids = sorted(videos["creator_id"].astype(str).unique())
    rows = _rows(tally(r, videos.set_index("video_id"), "creator_id", ids), earned, "creator_id")
    count = videos.groupby("creator_id").size()
    out = [{"creator_id": c, "videos": int(count.get(c, 0)), **rows[c]} for c in ids]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["creator_id"]))
