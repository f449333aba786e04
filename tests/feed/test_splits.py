"""Evaluation splits on small hand-made event frames whose answer is known, plus a Hypothesis property."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from feed.errors import ConfigError, DataError
from feed.splits import (Split, parse_split, side_counts, split_given, split_leave_last_out, split_random,
                         split_time)

START = pd.Timestamp("2026-01-01", tz="UTC")


def frame(rows: list[tuple[float, str, str, str]]) -> pd.DataFrame:
    """Canonical events from (day, user, video, event) tuples."""
    out = pd.DataFrame(rows, columns=["day", "user_id", "video_id", "event"])
    out["ts"] = (START + pd.to_timedelta(out.pop("day"), unit="D")).astype("datetime64[ms, UTC]")
    return out.astype({"user_id": "str", "video_id": "str", "event": "str"})


def random_frame(seed: int, n_events: int = 3000, n_users: int = 40, n_videos: int = 60) -> pd.DataFrame:
    """Random views and purchases over ten days."""
    rng = np.random.default_rng(seed)
    return frame(list(zip(rng.random(n_events) * 10, [f"u{u}" for u in rng.integers(0, n_users, n_events)],
                          [f"v{v}" for v in rng.integers(0, n_videos, n_events)],
                          rng.choice(["view", "purchase"], n_events, p=[0.9, 0.1]), strict=True)))


def pairs(events: pd.DataFrame) -> set[tuple[str, str]]:
    """The distinct (user, video) pairs of a frame."""
    return set(zip(events["user_id"], events["video_id"], strict=True))


def assert_partition(events: pd.DataFrame, *sides: pd.DataFrame | None) -> None:
    """The sides' rows are the events' rows, each exactly once."""
    labels = np.concatenate([side.index.to_numpy() for side in sides if side is not None])
    assert len(labels) == len(events) and set(labels) == set(events.index)


DAILY = frame([(d, f"u{d % 3}", f"v{d}", "purchase" if d % 2 else "view") for d in range(10)])


def test_time_split_by_fraction_cuts_every_event_type_at_one_time():
    split = split_time(DAILY, fraction=0.2)  # span 9 days: cut-off 7.2 days after the start
    assert split.cutoff == START + pd.Timedelta(days=7.2)
    assert split.train["ts"].max() < split.cutoff <= split.test["ts"].min()
    assert list(split.test["video_id"]) == ["v8", "v9"] and set(split.test["event"]) == {"view", "purchase"}
    assert split.description == "time: cut-off 2026-01-08T04:48:00Z (last 20% of the span)"
    assert split.valid is None
    assert_partition(DAILY, split.train, split.test)
    assert split_time(DAILY).cutoff == split.cutoff  # neither argument: the last 20%


def test_time_split_by_date_is_utc_and_inclusive_on_the_test_side():
    split = split_time(DAILY, date="2026-01-05")
    assert split.cutoff == pd.Timestamp("2026-01-05", tz="UTC")
    assert list(split.train["video_id"]) == ["v0", "v1", "v2", "v3"]  # the event at exactly 01-05 tests
    assert split.description == "time: cut-off 2026-01-05T00:00:00Z (given date)"
    shifted = split_time(DAILY, date="2026-01-05T02:00:00+02:00")  # the same instant
    assert shifted.cutoff == split.cutoff and shifted.test.equals(split.test)
    assert split_time(DAILY, date=pd.Timestamp("2026-01-05")).cutoff == split.cutoff


@pytest.mark.parametrize("kwargs", [dict(fraction=0.2, date="2026-01-05"), dict(fraction=0.0),
                                    dict(fraction=1.0), dict(fraction=-0.5), dict(date="not a date")])
def test_time_split_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        split_time(DAILY, **kwargs)


@pytest.mark.parametrize("date", ["2025-12-31", "2026-01-11"])
def test_time_split_refuses_an_empty_side(date):
    with pytest.raises(DataError, match="empty side"):
        split_time(DAILY, date=date)


def test_splits_refuse_empty_frames_and_missing_columns():
    with pytest.raises(DataError, match="empty"):
        split_time(DAILY.iloc[:0])
    with pytest.raises(DataError, match="video_id"):
        split_random(DAILY.drop(columns="video_id"))


# u1: last event is (v3, day 3). u2: two events tie on day 2, the larger video id (v7) wins, and
# u2's earlier impression of v7 goes to test with it. u3 has one event, u4 one video: both train only.
LOG = frame([
    (0, "u1", "v1", "view"), (1, "u1", "v2", "view"), (2, "u1", "v1", "purchase"), (3, "u1", "v3", "view"),
    (0, "u2", "v7", "impression"), (1, "u2", "v5", "view"), (2, "u2", "v7", "view"), (2, "u2", "v6", "view"),
    (0, "u3", "v1", "view"),
    (0, "u4", "v2", "view"), (5, "u4", "v2", "purchase"),
])


def test_leave_last_out_holds_out_the_last_events_pair():
    split = split_leave_last_out(LOG)
    assert sorted(split.test.index) == [3, 4, 6]
    assert pairs(split.test) == {("u1", "v3"), ("u2", "v7")}
    assert not pairs(split.train) & pairs(split.test)
    assert set(split.train["user_id"]) == {"u1", "u2", "u3", "u4"}
    assert split.cutoff is None and split.valid is None and "2 users" in split.description
    assert_partition(LOG, split.train, split.test)


def test_leave_last_out_purchase_holds_out_the_pair_of_the_last_purchase():
    split = split_leave_last_out(LOG, target="purchase")
    assert sorted(split.test.index) == [0, 2]  # u1's view and purchase of v1; u4 has one video only
    assert list(split.train.index) == [1, 3, 4, 5, 6, 7, 8, 9, 10]  # later views of other videos train
    with pytest.raises(DataError, match="empty test side"):
        split_leave_last_out(LOG[LOG["event"] != "purchase"], target="purchase")
    with pytest.raises(ConfigError, match="target"):
        split_leave_last_out(LOG, target="cart")


def test_leave_last_out_does_not_depend_on_row_order():
    events = random_frame(3)
    events.loc[events.index[:200], "ts"] = START  # many ties on ts
    first = split_leave_last_out(events)
    again = split_leave_last_out(events.sample(frac=1.0, random_state=7))
    assert set(first.test.index) == set(again.test.index)
    assert not pairs(first.train) & pairs(first.test)
    assert first.test.groupby("user_id")["video_id"].nunique().max() == 1  # one pair per user


def test_random_split_divides_each_users_pairs_by_the_ratios():
    ten = [(i, "u1", f"v{i}", "view") for i in range(10)] + [(i + 0.5, "u1", f"v{i}", "like") for i in range(10)]
    events = frame(ten + [(0, "u2", "v1", "view"), (1, "u2", "v1", "purchase")])
    split = split_random(events, (0.8, 0.1, 0.1), seed=3)
    assert split.valid is not None
    per_side = [len(pairs(side)) for side in (split.train, split.valid, split.test)]
    assert per_side == [9, 1, 1]  # u1: 8/1/1 pairs; u2's single pair stays in train
    assert ("u2", "v1") in pairs(split.train) and len(split.train) == 8 * 2 + 2  # events follow their pair
    assert not (pairs(split.train) & pairs(split.test)) and not (pairs(split.valid) & pairs(split.test))
    assert split.description == "random: each user's (user, video) pairs shuffled and divided 0.8/0.1/0.1 (seed 3)"
    assert_partition(events, split.train, split.valid, split.test)


def test_random_split_with_two_ratios_has_no_valid_side():
    split = split_random(random_frame(0), (0.7, 0.3))
    assert split.valid is None and not pairs(split.train) & pairs(split.test)


def test_random_split_is_deterministic_for_a_seed_and_independent_of_row_order():
    events = random_frame(1)
    first, again = split_random(events, seed=5), split_random(events.sample(frac=1.0, random_state=2), seed=5)
    assert set(first.test.index) == set(again.test.index) and set(first.valid.index) == set(again.valid.index)
    assert set(split_random(events, seed=6).test.index) != set(first.test.index)


def test_random_split_refuses_bad_ratios_and_an_empty_test_side():
    for ratios in [(0.5, 0.4), (0.9, -0.1, 0.2), (1.0,), (0.25, 0.25, 0.25, 0.25)]:
        with pytest.raises(ConfigError, match="ratios"):
            split_random(LOG, ratios)
    with pytest.raises(DataError, match="empty test side"):
        split_random(LOG.iloc[:3], (0.8, 0.2))  # one user with two pairs: both stay in train


def test_side_counts_round_by_largest_remainder_and_never_starve_train():
    counts = side_counts(np.array([1, 3, 10, 20]), (0.8, 0.1, 0.1), np.random.default_rng(0))
    np.testing.assert_array_equal(counts[[0, 1, 2, 3]], [[1, 0, 0], [3, 0, 0], [8, 1, 1], [16, 2, 2]])
    np.testing.assert_array_equal(side_counts(np.array([1]), (0.1, 0.9), np.random.default_rng(0)), [[1, 0]])


def test_given_split_keeps_the_frames():
    split = split_given(LOG.iloc[:5], LOG.iloc[5:])
    assert isinstance(split, Split) and split.train.equals(LOG.iloc[:5]) and split.test.equals(LOG.iloc[5:])
    assert split.description == "given: 5 train and 6 test events"
    with pytest.raises(DataError, match="test"):
        split_given(LOG, LOG.iloc[:0])


@pytest.mark.parametrize(("spec", "expected"), [
    ("time", "time: cut-off 2026-01-08T04:48:00Z (last 20% of the span)"),
    ("time:0.1", "(last 10% of the span)"),
    ("time:2026-01-05", "time: cut-off 2026-01-05T00:00:00Z (given date)"),
    ("time:2026-01-05T12:00:00Z", "time: cut-off 2026-01-05T12:00:00Z (given date)"),
    ("leave-last-out", "leave-last-out (event)"),
    ("leave-last-out:event", "leave-last-out (event)"),
    ("leave-last-out:purchase", "leave-last-out (purchase)"),
    ("random", "divided 0.8/0.1/0.1 (seed 4)"),
    ("random:0.8,0.1,0.1", "divided 0.8/0.1/0.1 (seed 4)"),
    ("random:0.8,0.2", "divided 0.8/0.2 (seed 4)"),
])
def test_parse_split_accepts_every_form(spec, expected):
    events = DAILY if spec.startswith("time") else random_frame(0)
    assert expected in parse_split(spec, seed=4)(events).description


def test_parse_split_passes_the_seed_and_builds_the_same_split_as_the_function():
    events = random_frame(2)
    assert parse_split("random:0.8,0.2", seed=9)(events).test.equals(split_random(events, (0.8, 0.2), 9).test)
    assert parse_split("time:0.3")(DAILY).cutoff == split_time(DAILY, fraction=0.3).cutoff


@pytest.mark.parametrize("spec", ["", "bogus", "time:1.5", "time:0", "time:yesterday-ish", "random:0.5,0.4",
                                  "random:0.8,-0.1,0.3", "random:1", "random:0.2,0.2,0.2,0.4", "random:a,b",
                                  "leave-last-out:cart", "Time:0.1"])
def test_parse_split_rejects_bad_specs_and_lists_the_accepted_forms(spec):
    with pytest.raises(ConfigError, match="accepted forms") as error:
        parse_split(spec)
    assert "leave-last-out:purchase" in str(error.value) and "random:<train>,<test>" in str(error.value)


@st.composite
def pair_logs(draw: st.DrawFn) -> pd.DataFrame:
    """Users with 1–30 videos each, every (user, video) pair seen 1–3 times, at random times."""
    rows = []
    for user in range(draw(st.integers(1, 6))):
        for video in range(draw(st.integers(1, 30))):
            for _repeat in range(draw(st.integers(1, 3))):
                rows.append((draw(st.integers(0, 100)) / 10, f"u{user}", f"v{video}", "view"))
    return frame(rows)


RATIOS = st.sampled_from([(0.8, 0.2), (0.5, 0.5), (0.7, 0.3), (0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.34, 0.33, 0.33)])


@settings(max_examples=60, deadline=None)
@given(events=pair_logs(), ratios=RATIOS, seed=st.integers(0, 2**32 - 1))
def test_random_split_partitions_events_and_follows_the_ratios(events, ratios, seed):
    try:
        split = split_random(events, ratios, seed)
    except DataError:  # every user too small to hold a pair out for test: the split refuses, as it should
        assume(False)
    sides = [split.train, split.test] if split.valid is None else [split.train, split.valid, split.test]
    assert_partition(events, *sides)
    for i, side in enumerate(sides):
        assert all(not pairs(side) & pairs(other) for other in sides[i + 1:])
    n_pairs = events.groupby("user_id")["video_id"].nunique()
    share = dict(zip(("train", "valid", "test") if len(ratios) == 3 else ("train", "test"), ratios, strict=True))
    named = {"train": split.train, "test": split.test, "valid": split.valid}
    for name, ratio in share.items():
        got = named[name].groupby("user_id")["video_id"].nunique().reindex(n_pairs.index, fill_value=0)
        big = n_pairs >= 10
        assert (abs(got[big] - n_pairs[big] * ratio) < 1 + 1e-9).all(), name
