"""Evaluation splits of the canonical events frame: by time, leave-last-out, per-user random, or given.

Every split works on whole events frames (the columns of `feed.schema.EVENTS`; only `ts`, `user_id`,
`video_id` and `event` are read) and returns the rows unchanged, in their original order and index.
All of them are deterministic: the same events, in any row order, give the same sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from feed.errors import ConfigError, DataError

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)
TARGETS: tuple[str, ...] = ("event", "purchase")
ACCEPTED_SPECS = (
    "time (last 20% of the span)", "time:<fraction in (0, 1)>", "time:<ISO date or timestamp, UTC>",
    "leave-last-out", "leave-last-out:event", "leave-last-out:purchase",
    "random (0.8,0.1,0.1)", "random:<train>,<test>", "random:<train>,<valid>,<test>",
)
_REQUIRED = ("ts", "user_id", "video_id", "event")


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames with == has no single truth value
class Split:
    """Training, test and optional validation events, with a human-readable account of how they were cut."""

    train: pd.DataFrame
    test: pd.DataFrame
    valid: pd.DataFrame | None = None
    description: str = ""
    cutoff: pd.Timestamp | None = None


def split_time(
    events: pd.DataFrame, fraction: float | None = None, date: str | pd.Timestamp | None = None
) -> Split:
    """One cut-off for every event type: before it trains, from it on tests (`ts < cutoff ≤ test ts`).

    Give either `fraction` (the share of the log's time span left for testing) or `date` (naive
    dates and times are UTC); with neither, the last 20% of the span is the test period.
    """
    if fraction is not None and date is not None:
        raise ConfigError("split_time takes either fraction or date, not both")
    ts = _utc(_checked(events)["ts"])
    if date is not None:
        cutoff, why = parse_date(date), "given date"
    else:
        fraction = DEFAULT_TEST_FRACTION if fraction is None else _fraction(fraction)
        start, end = ts.min(), ts.max()
        cutoff, why = start + (end - start) * (1.0 - fraction), f"last {fraction * 100:g}% of the span"
    before = (ts < cutoff).to_numpy()
    if before.all() or not before.any():
        raise DataError(f"time split at {_iso(cutoff)} leaves an empty side; the log spans "
                        f"{_iso(ts.min())} to {_iso(ts.max())}")
    return Split(events[before], events[~before], None, f"time: cut-off {_iso(cutoff)} ({why})", cutoff)


def split_leave_last_out(events: pd.DataFrame, target: str = "event") -> Split:
    """Per user, hold out the (user, video) pair of the last event (or last purchase) with all its events.

    The held-out pair's events, earlier ones included, all go to test, so no pair is on both sides;
    every other event of the user trains, whatever its time (use `split_time` to respect time).
    Ties on `ts` go to the largest `video_id`, so row order never matters. Users whose events all
    concern one video (holding it out would leave no history), or who never purchased (target
    "purchase"), stay entirely in train.
    """
    if target not in TARGETS:
        raise ConfigError(f"leave-last-out target must be one of {list(TARGETS)}, got {target!r}")
    events = _checked(events)
    user, video = _codes(events["user_id"]), _codes(events["video_id"])  # (n_events,) each
    pair = user * (video.max() + 1) + video  # (n_events,) one key per (user, video)
    candidate = np.ones(len(events), bool) if target == "event" else (events["event"] == "purchase").to_numpy()
    order = np.lexsort((video, _utc(events["ts"]).astype("int64").to_numpy(), user))  # by user, ts, video
    order = order[candidate[order]]
    last = order[np.diff(user[order], append=-1) != 0]  # (n_candidate_users,) each user's last row
    eligible = _n_distinct_videos(user, pair)[user[last]] >= 2
    test = np.isin(pair, pair[last[eligible]])
    description = (f"leave-last-out ({target}): the last {target}'s (user, video) pair of "
                   f"{int(eligible.sum())} users held out with all its events")
    return _two_sides(events, test, description)


def _n_distinct_videos(user: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """(n_users,) distinct videos per user code."""
    first = np.unique(pair, return_index=True)[1]  # (n_pairs,) one row per pair
    return np.bincount(user[first], minlength=user.max() + 1)


def split_random(
    events: pd.DataFrame, ratios: tuple[float, ...] = DEFAULT_RATIOS, seed: int = 0
) -> Split:
    """Per user, shuffle the distinct (user, video) pairs and divide them by `ratios` (RecBole's split).

    `ratios` are (train, test) or (train, valid, test). All events of a pair go to one side. A user with
    n pairs gets round(n·ratio) pairs per side by largest remainder (Hamilton) rounding, so each side is
    within one pair of its share and the counts add up to n (equal remainders are broken at random,
    seeded). If train would get nothing (few pairs), one pair moves to train from the largest other
    side: a user with a single pair keeps it in train, and with (0.8, 0.1, 0.1) a user needs 4 pairs
    before one is held out (3.2/0.4/0.4: valid or test wins the last pair, train keeps 3).
    """
    ratios = _ratios(ratios)
    events = _checked(events)
    user, video = _codes(events["user_id"]), _codes(events["video_id"])
    pairs, pair_of_event = np.unique(user * (video.max() + 1) + video, return_inverse=True)  # sorted keys
    pair_user = pairs // (video.max() + 1)  # (n_pairs,) non-decreasing
    rng = np.random.default_rng(seed)
    shuffled = np.lexsort((rng.random(len(pairs)), pair_user))  # (n_pairs,) users in order, pairs shuffled
    counts = side_counts(np.bincount(pair_user), ratios, rng)  # (n_users, n_sides)
    rank = np.empty(len(pairs), np.int64)  # position of each pair in its user's shuffled order
    rank[shuffled] = np.arange(len(pairs)) - np.searchsorted(pair_user, pair_user[shuffled])
    bounds = np.cumsum(counts, axis=1)[pair_user]  # (n_pairs, n_sides)
    side = (rank[:, None] >= bounds).sum(axis=1)[pair_of_event]  # (n_events,) 0 train, last test
    return _sides(events, side, ratios, seed)


def side_counts(n_pairs: np.ndarray, ratios: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """(n_users, n_sides) pairs per side: largest-remainder rounding of n·ratio, train never empty."""
    shares = np.asarray(ratios) / sum(ratios)  # exactly normalized: the ±1e-6 slack must not add a pair
    ideal = n_pairs[:, None] * shares[None, :]  # (n_users, n_sides)
    counts = np.floor(ideal + 1e-9).astype(np.int64)
    missing = n_pairs - counts.sum(axis=1)  # (n_users,) pairs still to hand out, < n_sides
    remainder = np.round(ideal - counts, 9)  # rounded so that float noise makes exact ties
    # equal remainders (equal ratios) are broken at random: a fixed order would favour one side overall
    by_remainder = np.lexsort((rng.random(ideal.shape), -remainder), axis=-1)  # (n_users, n_sides)
    counts[np.arange(len(n_pairs))[:, None], by_remainder] += np.arange(len(ratios)) < missing[:, None]
    starved = (counts[:, 0] == 0) & (n_pairs > 0)
    donor = 1 + np.argmax(counts[:, 1:], axis=1)  # (n_users,) the largest other side
    counts[starved, donor[starved]] -= 1
    counts[starved, 0] = 1
    return counts


def _sides(events: pd.DataFrame, side: np.ndarray, ratios: tuple[float, ...], seed: int) -> Split:
    """The Split of a random assignment of events to sides (0 train, then valid, then test)."""
    shares = "/".join(f"{r:g}" for r in ratios)
    description = f"random: each user's (user, video) pairs shuffled and divided {shares} (seed {seed})"
    train, test = events[side == 0], events[side == len(ratios) - 1]
    _nonempty(train, test, description, len(events))
    return Split(train, test, events[side == 1] if len(ratios) == 3 else None, description)


def split_given(train: pd.DataFrame, test: pd.DataFrame) -> Split:
    """A split whose sides were decided elsewhere (for example, published train and test files)."""
    _checked(train, "train")
    _checked(test, "test")
    return Split(train, test, None, f"given: {len(train)} train and {len(test)} test events")


def parse_split(spec: str, seed: int = 0) -> Callable[[pd.DataFrame], Split]:
    """The split function a CLI spec names ("time:0.1", "leave-last-out:purchase", "random:0.8,0.2" …)."""
    kind, _, argument = spec.strip().partition(":")
    try:
        if kind == "time":
            return _parse_time(argument)
        if kind == "leave-last-out" and argument in ("", *TARGETS):
            return partial(split_leave_last_out, target=argument or "event")
        if kind == "random":
            ratios = DEFAULT_RATIOS if not argument else tuple(float(x) for x in argument.split(","))
            return partial(split_random, ratios=_ratios(ratios), seed=seed)
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"bad split spec {spec!r}: {exc}; accepted forms: {', '.join(ACCEPTED_SPECS)}") from exc
    raise ConfigError(f"unknown split spec {spec!r}; accepted forms: {', '.join(ACCEPTED_SPECS)}")


def _parse_time(argument: str) -> Callable[[pd.DataFrame], Split]:
    """A time split from the part of the spec after "time:" (empty, a fraction or a date)."""
    if not argument:
        return partial(split_time, fraction=DEFAULT_TEST_FRACTION)
    try:
        fraction = float(argument)
    except ValueError:
        return partial(split_time, date=parse_date(argument))
    return partial(split_time, fraction=_fraction(fraction))


def parse_date(value: str | pd.Timestamp) -> pd.Timestamp:
    """A UTC timestamp from an ISO date or time (naive means UTC)."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an ISO date or timestamp: {value!r}") from exc
    if pd.isna(stamp):
        raise ConfigError(f"not an ISO date or timestamp: {value!r}")
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _fraction(value: float) -> float:
    """A test fraction strictly between 0 and 1."""
    if not 0.0 < value < 1.0:
        raise ConfigError(f"test fraction must be in (0, 1), got {value}")
    return float(value)


def _ratios(ratios: tuple[float, ...]) -> tuple[float, ...]:
    """Two or three positive ratios summing to 1 (±1e-6)."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) not in (2, 3) or min(ratios) <= 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(f"ratios must be 2 or 3 positive numbers summing to 1, got {ratios}")
    return ratios


def _two_sides(events: pd.DataFrame, test: np.ndarray, description: str) -> Split:
    """Train and test from a boolean test mask; both sides must have events."""
    split = Split(events[~test], events[test], None, description)
    _nonempty(split.train, split.test, description, len(events))
    return split


def _nonempty(train: pd.DataFrame, test: pd.DataFrame, description: str, n_events: int) -> None:
    """DataError when a split left train or test without events."""
    if train.empty or test.empty:
        side = "train" if train.empty else "test"
        raise DataError(f"{description}: leaves an empty {side} side ({n_events} events)")


def _checked(events: pd.DataFrame, name: str = "events") -> pd.DataFrame:
    """The frame itself, once it has events and the columns the splits read."""
    missing = [c for c in _REQUIRED if c not in events.columns]
    if missing:
        raise DataError(f"{name} lack the columns {missing}", column=missing[0])
    if events.empty:
        raise DataError(f"{name} are empty: nothing to split")
    return events


def _codes(values: pd.Series) -> np.ndarray:
    """(n,) int64 codes in sorted order of the values, so codes do not depend on row order."""
    return pd.factorize(values.astype(str), sort=True)[0].astype(np.int64)


def _utc(ts: pd.Series) -> pd.Series:
    """Timestamps as UTC (naive ones are taken to be UTC)."""
    ts = pd.to_datetime(ts)
    return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")


def _iso(stamp: pd.Timestamp) -> str:
    """ISO-8601 with a Z for UTC."""
    return stamp.isoformat().replace("+00:00", "Z")
