"""Creator and merchant stats over canonical frames: funnels, conversion, GMV, commission, share cascades.

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
- commission: ledger entries with ts in the range; accrued = sum(accrual), clawed_back = -sum(clawback),
  settled = sum(settlement), pending = accrued - clawed_back - settled (currency units, exact to the cent);
- share cascade: the tree of share links (`share_tree`); its reach is the distinct users with any event that
  came through one of its links. Cascades are built from the shares of the range: a share whose parent link
  was made before `since` is a root.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd

Z95 = 1.959963984540054  # the standard normal quantile of 0.975: 95 % two-sided intervals
MIN_VIEWERS_TO_COMPARE = 30  # a video needs this many viewers in the range to be named best or worst
TOP_CASCADES = 10  # the largest cascades listed by creator_stats
ALL = "_all"  # the key column that puts every row in one group (totals)
STATES = ("accrued", "clawed_back", "settled", "pending")
COUNTS = ("impressions", "views", "viewers", "shares", "views_via_shares", "purchases", "buyers",
          "purchases_via_shares", "converted_viewers", "refunds")
CENTS = ("sales", "refunded", "gmv")
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


def commission_states(entries: pd.DataFrame) -> dict[str, float]:
    """{accrued, clawed_back, settled, pending} of ledger entries, in currency units."""
    by_kind = to_cents(entries["amount"]).groupby(entries["kind"].to_numpy()).sum()
    accrued, clawed, settled = (int(by_kind.get(kind, 0)) for kind in ("accrual", "clawback", "settlement"))
    return {"accrued": money(accrued), "clawed_back": money(-clawed), "settled": money(settled),
            "pending": money(accrued + clawed - settled)}


def _states_by(entries: pd.DataFrame, by: str) -> dict[str, dict[str, float]]:
    """commission_states per value of column `by`."""
    return {str(key): commission_states(group) for key, group in entries.groupby(by, sort=True)}


def _json(value: Any) -> Any:
    """A numpy/pandas scalar as a plain JSON value (NaN and NA → None)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


# --- share cascades -------------------------------------------------------------------------------------


def share_tree(events: pd.DataFrame) -> pd.DataFrame:
    """Share links as a forest: share_id, user_id, video_id, parent_share_id, root_share_id, depth (root 1), ts.

    A share's parent is the link it was made through (its via_share_id) when that link was made before it (by
    ts, then event_id); any other parent (missing, itself, later: a cycle or skewed clocks) makes it a root.
    """
    made = events[(events["event"] == "share") & events["share_id"].notna()]
    made = made.sort_values([c for c in ("ts", "event_id") if c in made.columns], kind="stable")
    made = made.drop_duplicates("share_id", keep="first")
    roots: dict[str, str] = {}
    depths: dict[str, int] = {}
    parents: list[str | None] = []
    for share, via in zip(made["share_id"], made["via_share_id"], strict=True):
        parent = via if isinstance(via, str) and via in roots else None  # only links made earlier are known
        roots[share] = share if parent is None else roots[parent]
        depths[share] = 1 if parent is None else depths[parent] + 1
        parents.append(parent)
    ids = made["share_id"].astype("str").tolist()
    return pd.DataFrame({
        "share_id": pd.Series(ids, dtype="str"), "user_id": made["user_id"].astype("str").to_numpy(),
        "video_id": made["video_id"].astype("str").to_numpy(), "parent_share_id": pd.Series(parents, dtype="str"),
        "root_share_id": pd.Series([roots[s] for s in ids], dtype="str"),
        "depth": np.array([depths[s] for s in ids], dtype=np.int64), "ts": made["ts"].to_numpy()})


def cascades(events: pd.DataFrame, tree: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per root share: video_id, shares, reached_users, max_depth, purchases (distinct orders through it)."""
    tree = share_tree(events) if tree is None else tree
    root_of = dict(zip(tree["share_id"], tree["root_share_id"], strict=True))
    came = events[events["via_share_id"].isin(list(root_of))]
    came = came.assign(root=came["via_share_id"].map(root_of))
    bought = orders(events)
    bought = bought[bought["via_share_id"].isin(list(root_of))]
    out = tree.groupby("root_share_id").agg(shares=("share_id", "size"), max_depth=("depth", "max"))
    out["video_id"] = tree.set_index("share_id")["video_id"].reindex(out.index)
    out["reached_users"] = came.groupby("root")["user_id"].nunique().reindex(out.index, fill_value=0)
    out["purchases"] = bought["via_share_id"].map(root_of).value_counts().reindex(out.index, fill_value=0)
    out = out.reset_index()[["root_share_id", "video_id", "shares", "reached_users", "max_depth", "purchases"]]
    return out.astype({c: "int64" for c in ("shares", "reached_users", "max_depth", "purchases")})


def reach_by(events: pd.DataFrame, tree: pd.DataFrame, per_root: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cascade reach per video (of the root share): cascades, shares, reached_users, max_depth, purchases."""
    per_root = cascades(events, tree) if per_root is None else per_root
    video_of = dict(zip(per_root["root_share_id"], per_root["video_id"], strict=True))
    root_of = dict(zip(tree["share_id"], tree["root_share_id"], strict=True))
    came = events[events["via_share_id"].isin(list(root_of))]
    out = per_root.groupby("video_id").agg(cascades=("root_share_id", "size"), shares=("shares", "sum"),
                                           max_depth=("max_depth", "max"), purchases=("purchases", "sum"))
    group = came["via_share_id"].map(root_of).map(video_of).to_numpy()
    out["reached_users"] = came.groupby(group)["user_id"].nunique().reindex(out.index, fill_value=0)
    return out.astype("int64")


def reach_total(events: pd.DataFrame, tree: pd.DataFrame) -> dict[str, int]:
    """Cascade reach over every cascade of `tree` together."""
    came = events[events["via_share_id"].isin(list(tree["share_id"]))]
    bought = orders(events)
    return {"cascades": int(tree["root_share_id"].nunique()), "shares": len(tree),
            "reached_users": int(came["user_id"].nunique()), "max_depth": int(tree["depth"].max()) if len(tree) else 0,
            "purchases": int(bought["via_share_id"].isin(list(tree["share_id"])).sum())}


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
    bought = _label(orders(events), catalog, own_product=True)
    views = in_range(events[events["event"] == "view"], since, until)
    duration = views["video_id"].map(catalog["duration_ms"]).astype("float64")
    ratio = (views["watch_ms"].astype("float64") / duration.where(duration > 0)).clip(0.0, 1.0)
    return Facts(
        impressions=_label(distinct_impressions(events, served, since, until), catalog),
        views=_label(views.assign(watch_ratio=ratio), catalog),
        shares=_label(in_range(events[events["event"] == "share"], since, until), catalog),
        orders=in_range(bought, since, until),
        refunds=_label(in_range(refunds(events, bought), since, until), catalog, own_product=True))


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


# --- measures -------------------------------------------------------------------------------------------


def measure(f: Facts, by: str, keys: list[str]) -> pd.DataFrame:
    """Counts, watch ratio and cents per value of column `by` (one row per key, zeros when nothing happened)."""
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
    out["avg_watch_ratio"] = views.groupby(by)["watch_ratio"].mean()  # NaN: no view with a known ratio
    return out


def measures_json(row: pd.Series) -> dict[str, Any]:
    """One measure row as JSON: counts, money in currency units, conversion with its interval."""
    out: dict[str, Any] = {name: int(row[name]) for name in COUNTS}
    out.update({name: money(row[name]) for name in CENTS})
    out["avg_watch_ratio"] = _json(row["avg_watch_ratio"])
    out["conversion"] = conversion(int(row["converted_viewers"]), int(row["viewers"]))
    return out


def _totals(f: Facts) -> pd.Series:
    """The measures of every fact together."""
    together = Facts(**{fl.name: getattr(f, fl.name).assign(**{ALL: ALL}) for fl in fields(f)})
    return measure(together, ALL, [ALL]).iloc[0]


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


def daily(f: Facts, entries: pd.DataFrame) -> list[dict[str, Any]]:
    """Per UTC day from the first to the last active one: views, purchases, gmv and net commission earned."""
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
    return [{"date": day, "views": int(r.views), "purchases": int(r.purchases), "gmv": money(r.sales - r.refunded),
             "commission": money(r.commission)} for day, r in table.iterrows()]


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
    entries = in_range(entries if creator_id is None else entries[entries["beneficiary_id"] == creator_id],
                       since, until)
    f = facts(videos, events, impressions, since, until)
    ranged = in_range(events[events["video_id"].isin(list(videos["video_id"]))], since, until)
    tree = share_tree(ranged)
    per_root = cascades(ranged, tree)
    rows = _video_rows(videos, products, f, entries, reach_by(ranged, tree, per_root))
    totals = measures_json(_totals(f))
    totals["commission"] = {"creator": commission_states(entries[entries["role"] == "creator"]),
                            "sharer": commission_states(entries[entries["role"] == "sharer"]),
                            "total": commission_states(entries)}
    totals["cascade"] = reach_total(ranged, tree)
    top = per_root.sort_values(["reached_users", "purchases", "root_share_id"],
                                             ascending=[False, False, True]).head(TOP_CASCADES)
    return {"creator_id": creator_id, "range": _range(since, until), "totals": totals, **compare(rows),
            "videos": rows, "daily": daily(f, entries),
            "cascades": [{k: _json(v) for k, v in r.items()} for r in top.to_dict("records")]}


def _one_creator(videos: pd.DataFrame, creator_id: str | None) -> str | None:
    """The creator the stats are about: `creator_id`, else the videos' only creator."""
    if creator_id is not None:
        return creator_id
    found = videos["creator_id"].dropna().unique()
    if len(found) > 1:
        raise ValueError(f"creator_stats expects the videos of one creator, got {len(found)} creators; "
                         "pass creator_id")
    return str(found[0]) if len(found) else None


def _video_rows(videos: pd.DataFrame, products: pd.DataFrame | None, f: Facts, entries: pd.DataFrame,
                reach: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per video with its creator-role commission and cascade reach, best converting first."""
    table = measure(f, "video_id", videos["video_id"].astype(str).tolist())
    earned = _states_by(entries[entries["role"] == "creator"], "video_id")
    rate = (products.set_index("product_id")["commission_rate"] if products is not None and len(products)
            else pd.Series(dtype="float64"))
    rows = []
    for video in videos.itertuples(index=False):
        row = {"video_id": video.video_id, "title": _json(video.title), "product_id": _json(video.product_id),
               "duration_ms": _json(video.duration_ms), "commission_rate": _json(rate.get(video.product_id)) if isinstance(video.product_id, str) else None,
               **measures_json(table.loc[video.video_id])}
        row["commission"] = earned.get(video.video_id, commission_states(entries.iloc[:0]))
        row["cascade"] = _reach_row(reach, video.video_id)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["conversion"]["rate"] is None, -(r["conversion"]["rate"] or 0),
                                       -r["viewers"], r["video_id"]))


def _reach_row(reach: pd.DataFrame, video_id: str) -> dict[str, int]:
    """A video's cascade reach (zeros without shares)."""
    names = ("cascades", "shares", "reached_users", "max_depth", "purchases")
    if video_id not in reach.index:
        return dict.fromkeys(names, 0)
    return {name: int(reach.at[video_id, name]) for name in names}


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
    own = set(products["product_id"].astype(str))
    videos = videos[videos["product_id"].isin(list(own))]
    f = facts(videos, events, impressions, since, until)
    f = replace(f, orders=f.orders[f.orders["product_id"].isin(list(own))],  # of the merchant's products only
                refunds=f.refunds[f.refunds["product_id"].isin(list(own))])
    entries = in_range(_merchant_entries(entries, videos, own), since, until)
    totals = measures_json(_totals(f))
    totals["commission"] = {role: commission_states(entries[entries["role"] == role]) for role in ("creator",
                                                                                                  "sharer")}
    totals["commission"]["total"] = commission_states(entries)
    return {"merchant_id": merchant_id, "range": _range(since, until), "totals": totals,
            "products": _product_rows(products, videos, f, entries),
            "sellers": _seller_rows(videos, f, entries), "creators": _creator_rows(videos, f, entries)}


def _merchant_entries(entries: pd.DataFrame, videos: pd.DataFrame, own: set[str]) -> pd.DataFrame:
    """Ledger entries of the merchant's products (by the entry's product, else by its video's product)."""
    product = first_of(entries["product_id"], entries["video_id"].map(videos.set_index("video_id")["product_id"]))
    return entries.assign(product_id=product)[product.isin(list(own))].assign(
        creator_id=entries["video_id"].map(videos.set_index("video_id")["creator_id"]))


def _rows(table: pd.DataFrame, entries: pd.DataFrame, by: str) -> dict[str, dict[str, Any]]:
    """Measure rows as JSON with their commission (all roles), keyed by `by`."""
    earned = _states_by(entries, by)
    empty = commission_states(entries.iloc[:0])
    return {key: {**measures_json(row), "commission": earned.get(key, empty)} for key, row in table.iterrows()}


def _product_rows(products: pd.DataFrame, videos: pd.DataFrame, f: Facts,
                  entries: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per product, highest GMV first."""
    ids = products["product_id"].astype(str).tolist()
    rows = _rows(measure(f, "product_id", ids), entries, "product_id")
    count = videos.groupby("product_id").size()
    out = [{"product_id": p.product_id, "category": _json(p.category), "price": _json(p.price),
            "commission_rate": _json(p.commission_rate), "videos": int(count.get(p.product_id, 0)),
            **rows[p.product_id]} for p in products.itertuples(index=False)]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["product_id"]))


def _seller_rows(videos: pd.DataFrame, f: Facts, entries: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per (creator, video) selling the merchant's products, highest GMV first."""
    rows = _rows(measure(f, "video_id", videos["video_id"].astype(str).tolist()), entries, "video_id")
    out = [{"creator_id": v.creator_id, "video_id": v.video_id, "title": _json(v.title), "product_id": v.product_id,
            **rows[v.video_id]} for v in videos.itertuples(index=False)]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["creator_id"], r["video_id"]))


def _creator_rows(videos: pd.DataFrame, f: Facts, entries: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per creator selling the merchant's products, best seller (GMV, then purchases) first."""
    ids = sorted(videos["creator_id"].astype(str).unique())
    rows = _rows(measure(f, "creator_id", ids), entries, "creator_id")
    count = videos.groupby("creator_id").size()
    out = [{"creator_id": c, "videos": int(count.get(c, 0)), **rows[c]} for c in ids]
    return sorted(out, key=lambda r: (-r["gmv"], -r["purchases"], r["creator_id"]))
