"""The database side of creator and merchant stats: a `feed.analytics.Rollup` summed by SQL.

Views and impressions, almost all of a creator's events, never leave the database: they come back as counts
per (video, UTC day), distinct counts over the range (distinct viewers do not add up across days or videos)
and the (video, user) views of the range's buyers. Only shares, purchases and refunds (about 1 % of events)
are read as rows, for share cascades and refund amounts, plus the distinct (link, user) pairs that came
through the range's share links. Each events query names its event type, so it reads one range of
ix_events_video_event_ts (video_id, event, ts, user_id) per video, and distinct viewers come from that index
alone; served rows are read by ix_impressions_video_ts, ledger entries by ix_ledger_entries_beneficiary_ts or
_video_ts. SQLAlchemy Core that runs the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa

from feed import analytics
from feed.schema import COLUMNS
from feed.store import ledger, tables
from feed.store.driver import fetch_frame
from feed.store.frames import from_rows, to_epoch_ms

DAY_MS = 86_400_000
_DAY = sa.literal_column(str(DAY_MS), sa.BigInteger)  # inline: PostgreSQL must see one GROUP BY expression
ROW_EVENTS = ("purchase", "refund", "share")  # the events read as rows: few, and needed one by one


def rollup(conn: sa.Connection, videos: pd.DataFrame, since: pd.Timestamp | None, until: pd.Timestamp | None,
           levels: tuple[str, ...] = ()) -> analytics.Rollup:
    """The rollup of since <= ts < until on `videos` (canonical, with video_id, creator_id, product_id and
    duration_ms), as `feed.analytics.rollup` computes it from frames; `levels`: catalog columns to count
    distinct viewers by, besides video_id and ALL."""
    ids = videos["video_id"].astype(str).tolist()
    if not ids:
        return analytics.rollup(videos, from_rows("events", []), None, since, until, levels)
    rows = _event_rows(conn, ids, since, until)
    bought, back = analytics.sales(rows[rows["event"].isin(analytics.MONEY)], videos.set_index("video_id"), since,
                                   until)
    return analytics.Rollup(
        views=_view_sums(conn, ids, since, until), impressions=_impressions(conn, ids, since, until),
        viewers={level: _viewers(conn, ids, since, until, level) for level in ("video_id", analytics.ALL, *levels)},
        seen=_seen(conn, ids, since, until, sorted(set(bought["user_id"].astype(str)))),
        shares=rows[rows["event"] == "share"].reset_index(drop=True),
        reached=_reached(conn, ids, since, until, sorted(set(rows["share_id"].dropna().astype(str)))),
        orders=bought, refunds=back)


def ledger_sums(conn: sa.Connection, where: Iterable[sa.ColumnElement[bool]]) -> pd.DataFrame:
    """Ledger cents per (role, kind, video_id, product_id, UTC day) of the entries matching every condition."""
    t = tables.ledger_entries
    day = utc_day(t.c.ts)
    keys = [t.c.role, t.c.kind, t.c.video_id, t.c.product_id, day]
    stmt = (sa.select(*keys[:4], day.label("day"), sa.cast(sa.func.sum(t.c.amount_cents), sa.BigInteger))
            .where(*where).group_by(*keys))
    frame = pd.DataFrame(conn.execute(stmt).all(), columns=[*analytics.LEDGER_KEYS, "cents"])
    frame = frame.astype({"role": "str", "kind": "str", "video_id": "str", "product_id": "str", "day": "int64",
                          "cents": "int64"})
    return frame.sort_values(analytics.LEDGER_KEYS, ignore_index=True)


def ledger_where(beneficiary_id: str | None = None, since: pd.Timestamp | None = None,
                 until: pd.Timestamp | None = None, video_ids: list[str] | None = None) -> list[sa.ColumnElement[bool]]:
    """Ledger entries of a beneficiary and/or of some videos with since <= ts < until (each part optional)."""
    t = tables.ledger_entries
    where = [] if beneficiary_id is None else [t.c.beneficiary_id == beneficiary_id]
    where += [] if video_ids is None else [t.c.video_id.in_(video_ids)]
    where += [] if since is None else [t.c.ts >= _ms(since)]
    return where + ([] if until is None else [t.c.ts < _ms(until)])


def has_entries(conn: sa.Connection, beneficiary_id: str) -> bool:
    """Whether any ledger entry ever paid this beneficiary."""
    t = tables.ledger_entries
    stmt = sa.select(sa.literal(1)).where(t.c.beneficiary_id == beneficiary_id).limit(1)
    return conn.execute(stmt).first() is not None


def utc_day(ts: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """Epoch ms → whole UTC days since 1970-01-01, floored also before 1970 (SQL's / and % truncate)."""
    return (ts - (ts % _DAY + _DAY) % _DAY) // _DAY


# --- the queries ----------------------------------------------------------------------------------------


def _on(t: sa.FromClause, ids: list[str], since: pd.Timestamp | None,
        until: pd.Timestamp | None) -> list[sa.ColumnElement[bool]]:
    """Rows of events or impressions (`t`) of these videos with since <= ts < until: one index range per video."""
    where = [t.c.video_id.in_(ids)]
    where += [] if since is None else [t.c.ts >= _ms(since)]
    return where + ([] if until is None else [t.c.ts < _ms(until)])


def _view_sums(conn: sa.Connection, ids: list[str], since: pd.Timestamp | None,
               until: pd.Timestamp | None) -> pd.DataFrame:
    """Per (video_id, day) with views: views, views_via_shares, watched, watch_ms (see analytics.view_sums)."""
    ev, vd = tables.events, tables.videos
    known = sa.and_(ev.c.watch_ms.is_not(None), vd.c.duration_ms > 0)
    clipped = sa.case((ev.c.watch_ms < 0, 0), (ev.c.watch_ms > vd.c.duration_ms, vd.c.duration_ms),
                      else_=ev.c.watch_ms)
    day = utc_day(ev.c.ts)
    stmt = (sa.select(ev.c.video_id, day.label("day"), sa.func.count().label("views"),
                      sa.func.count(ev.c.via_share_id).label("views_via_shares"),
                      sa.func.count(sa.case((known, 1))).label("watched"),
                      sa.cast(sa.func.coalesce(sa.func.sum(sa.case((known, clipped))), 0), sa.BigInteger))
            .select_from(ev.outerjoin(vd, vd.c.video_id == ev.c.video_id))
            .where(ev.c.event == "view", *_on(ev, ids, since, until)).group_by(ev.c.video_id, day)
            .order_by(ev.c.video_id, day))
    frame = pd.DataFrame(conn.execute(stmt).all(), columns=["video_id", "day", "views", "views_via_shares",
                                                            "watched", "watch_ms"])
    return frame.astype({"video_id": "str", "day": "int64", "views": "int64", "views_via_shares": "int64",
                         "watched": "int64", "watch_ms": "float64"})


def _impressions(conn: sa.Connection, ids: list[str], since: pd.Timestamp | None,
                 until: pd.Timestamp | None) -> pd.DataFrame:
    """video_id, impressions: distinct (request or event, user, video) of impression events and served rows."""
    ev, im = tables.events, tables.impressions
    key = sa.func.coalesce(ev.c.request_id, sa.literal("event:", sa.Text).concat(ev.c.event_id))
    shown = sa.select(key.label("key"), ev.c.user_id, ev.c.video_id).where(ev.c.event == "impression",
                                                                          *_on(ev, ids, since, until))
    served = sa.select(im.c.request_id, im.c.user_id, im.c.video_id).where(*_on(im, ids, since, until))
    both = sa.union_all(shown, served).subquery()
    # one row per distinct impression: a GROUP BY sorts, which both databases do faster than UNION's dedupe
    distinct = sa.select(both.c.video_id).group_by(both.c.video_id, both.c.key, both.c.user_id).subquery()
    stmt = sa.select(distinct.c.video_id, sa.func.count()).group_by(distinct.c.video_id).order_by(distinct.c.video_id)
    frame = pd.DataFrame(conn.execute(stmt).all(), columns=["video_id", "impressions"])
    return frame.astype({"video_id": "str", "impressions": "int64"})


def _viewers(conn: sa.Connection, ids: list[str], since: pd.Timestamp | None, until: pd.Timestamp | None,
             level: str) -> pd.Series:
    """Distinct users with a view per key of `level`: video_id, a column of the videos table, or ALL."""
    ev, vd = tables.events, tables.videos
    viewers, on = sa.func.count(sa.distinct(ev.c.user_id)), _on(ev, ids, since, until)
    if level == analytics.ALL:
        count = conn.execute(sa.select(viewers).where(ev.c.event == "view", *on)).scalar_one()
        return pd.Series({analytics.ALL: int(count)}, dtype="int64", name="user_id")
    by_video = level == "video_id"  # from the index alone; other levels join the videos table
    key = ev.c.video_id if by_video else vd.c[level]
    stmt = (sa.select(key, viewers).select_from(ev if by_video else ev.join(vd, vd.c.video_id == ev.c.video_id))
            .where(ev.c.event == "view", key.is_not(None), *on).group_by(key).order_by(key))
    rows = conn.execute(stmt).all()
    return pd.Series([int(n) for _, n in rows], index=pd.Index([k for k, _ in rows], dtype="str", name=level),
                     dtype="int64", name="user_id")


def _seen(conn: sa.Connection, ids: list[str], since: pd.Timestamp | None, until: pd.Timestamp | None,
          buyers: list[str]) -> pd.DataFrame:
    """Distinct (video_id, user_id) of the range's views by these users (the buyers: few).

    The buyers are a list, not a subquery: with a subquery SQLite reads every event of each buyer through
    ix_events_user_seq; with a list it filters the videos' view entries of ix_events_video_event_ts."""
    ev = tables.events
    pairs = [conn.execute(sa.select(ev.c.video_id, ev.c.user_id).distinct().where(
        ev.c.event == "view", ev.c.user_id.in_(chunk), *_on(ev, ids, since, until))).all() for chunk in _chunks(buyers)]
    return pd.DataFrame([p for chunk in pairs for p in chunk], columns=["video_id", "user_id"], dtype="str")


def _reached(conn: sa.Connection, ids: list[str], since: pd.Timestamp | None, until: pd.Timestamp | None,
             links: list[str]) -> pd.DataFrame:
    """Distinct (via_share_id, user_id) of the range's events on these videos that came through these links.

    Read by ix_events_via_share_id alone (the events through a creator's links are few) and filtered here: with
    the videos and range in the query, SQLite walked every event of the videos for an unbounded range, and
    PostgreSQL without statistics did the same for a subquery of the links."""
    ev = tables.events
    found = [conn.execute(sa.select(ev.c.via_share_id, ev.c.user_id, ev.c.video_id, ev.c.ts).where(
        ev.c.via_share_id.in_(chunk))).all() for chunk in _chunks(links)]
    came = pd.DataFrame([row for chunk in found for row in chunk], columns=["via_share_id", "user_id", "video_id",
                                                                           "ts"])
    keep = came["video_id"].isin(ids)
    if since is not None:
        keep &= came["ts"] >= _ms(since)
    if until is not None:
        keep &= came["ts"] < _ms(until)
    return came.loc[keep, ["via_share_id", "user_id"]].drop_duplicates(ignore_index=True).astype("str")


def _event_rows(conn: sa.Connection, ids: list[str], since: pd.Timestamp | None,
                until: pd.Timestamp | None) -> pd.DataFrame:
    """The range's shares, purchases and refunds on these videos, canonical, plus the earlier purchases and
    refunds of its orders (what a refund takes back depends on them), in (ts, event_id) order."""
    ev = tables.events
    select = sa.select(*(ev.c[c.name] for c in COLUMNS["events"]))
    # no ORDER BY: ordered by (ts, seq), PostgreSQL may walk ix_events_ts_seq through every video's events
    rows = fetch_frame(conn, select.where(ev.c.event.in_(ROW_EVENTS), *_on(ev, ids, since, until)), "events")
    money = rows.loc[rows["event"].isin(analytics.MONEY), "order_id"].dropna().unique().tolist()
    if since is None or not money:
        return rows.sort_values(["ts", "event_id"], ignore_index=True)
    # by ix_events_order_id, or the videos' earlier purchases and refunds in ix_events_video_event_ts: with
    # the order ids alone, PostgreSQL without statistics scanned the whole table
    earlier = pd.concat([fetch_frame(conn, select.where(
        ev.c.order_id.in_(chunk), ev.c.event.in_(analytics.MONEY), *_on(ev, ids, None, since)), "events")
        for chunk in _chunks(sorted(money))], ignore_index=True)
    return pd.concat([earlier, rows], ignore_index=True).sort_values(["ts", "event_id"], ignore_index=True)


def _ms(bound: pd.Timestamp) -> int:
    """A time bound as epoch ms (naive = UTC)."""
    return int(to_epoch_ms(pd.Series([bound]))[0])


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    """`ids` in IN-list sized pieces."""
    return (ids[start:start + ledger.CHUNK] for start in range(0, len(ids), ledger.CHUNK))
