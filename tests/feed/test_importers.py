"""feed.importers: hand-made files whose answer is known, every malformed case, round trips, then the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feed.errors import ConfigError, DataError
from feed.importers import IMPORTERS, describe, import_adjacency, import_lastfm, import_movielens, import_taobao
from feed.io import derive_event_ids, load_dataset, write_dataset
from feed.schema import COLUMNS, TABLES, Dataset
from feed.validation import TS_DTYPE

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
EVENT_COLUMNS = [c.name for c in COLUMNS["events"]]


def write(folder: Path, name: str, *lines: str) -> Path:
    """A text file with these lines (each ending in a newline)."""
    path = folder / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def utc(*values: str | int) -> pd.Series:
    """Times (ISO text or unix seconds) as the canonical datetime64[ms, UTC] column."""
    unit = {"unit": "s"} if isinstance(values[0], int) else {}
    return pd.Series(pd.to_datetime(list(values), utc=True, **unit)).astype(TS_DTYPE).rename("ts")


def text(*values: str | None, name: str) -> pd.Series:
    """A canonical str column (None → missing)."""
    return pd.Series(list(values), dtype="str", name=name)


def raised(exc: pytest.ExceptionInfo[DataError], path: Path, row: int | None, column: str | None,
           *words: str) -> None:
    """The DataError names this file, row and column, and its message contains every word."""
    err = exc.value
    assert (err.path, err.row, err.column) == (str(path), row, column), str(err)
    for word in words:
        assert word in str(err), f"{word!r} not in {str(err)!r}"


def round_trips(ds: Dataset, folder: Path, fmt: str = "parquet") -> None:
    """write_dataset then load_dataset gives back equal frames for every table."""
    write_dataset(ds, folder, fmt=fmt)
    back = load_dataset(folder)
    for table in TABLES:
        mine, theirs = getattr(ds, table), getattr(back, table)
        assert (mine is None) == (theirs is None), table
        if mine is not None:
            pd.testing.assert_frame_equal(theirs, mine)


def check_ids(events: pd.DataFrame) -> None:
    """Event ids are the content hashes load_dataset would derive, hence unique and deterministic."""
    assert list(events.columns[: len(EVENT_COLUMNS)]) == EVENT_COLUMNS
    assert events["event_id"].is_unique
    pd.testing.assert_series_equal(events["event_id"], derive_event_ids(events), check_names=False)


# --- MovieLens -------------------------------------------------------------------------------------------

ML_LINES = ("196\t242\t3\t881250949", "186\t302\t3\t891717742", "22\t377\t1\t878887116", "196\t302\t5\t881250950")


def test_movielens_turns_each_rating_into_a_view(tmp_path: Path) -> None:
    write(tmp_path, "u.data", *ML_LINES)
    ds = import_movielens(tmp_path)
    events = ds.events
    assert (ds.videos, ds.products, ds.follows) == (None, None, None)
    pd.testing.assert_series_equal(events["ts"], utc(881250949, 891717742, 878887116, 881250950))
    pd.testing.assert_series_equal(events["user_id"], text("196", "186", "22", "196", name="user_id"))
    pd.testing.assert_series_equal(events["video_id"], text("242", "302", "377", "302", name="video_id"))
    assert events["event"].tolist() == ["view"] * 4
    assert events["rating"].tolist() == [3, 3, 1, 5]
    check_ids(events)
    pd.testing.assert_frame_equal(import_movielens(tmp_path / "u.data").events, events)  # file or folder
    round_trips(ds, tmp_path / "out")


def test_movielens_min_rating_keeps_ratings_at_or_above_it(tmp_path: Path) -> None:
    write(tmp_path, "u.data", *ML_LINES)
    events = import_movielens(tmp_path, min_rating=3).events
    assert events["rating"].tolist() == [3, 3, 5]
    assert events["video_id"].tolist() == ["242", "302", "302"]
    assert events.index.equals(pd.RangeIndex(3))
    assert set(events["event_id"]) < set(import_movielens(tmp_path).events["event_id"])  # ids depend on content only
    round_trips(Dataset(events=events), tmp_path / "out")
    with pytest.raises(DataError, match="no ratings >= 6"):
        import_movielens(tmp_path, min_rating=6)


def test_movielens_bad_rating_names_file_row_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", ML_LINES[0], "186\t302\tgood\t891717742", "22\t377\tbad\t878887116")
    with pytest.raises(DataError) as exc:
        import_movielens(path)
    raised(exc, path, 2, "rating", "'good'", "line 2", "(and 1 more row)")


def test_movielens_rows_skip_empty_lines_and_messages_give_the_file_line(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", ML_LINES[0], "", ML_LINES[1], "22\t377\t1\tlater")
    with pytest.raises(DataError) as exc:
        import_movielens(path)
    raised(exc, path, 3, "ts", "'later'", "line 4")


def test_movielens_wrong_number_of_fields_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", ML_LINES[0], ML_LINES[1], "22\t377\t1")
    with pytest.raises(DataError) as exc:
        import_movielens(path)
    raised(exc, path, 3, None, "3 fields on line 3", "expected 4")


def test_movielens_blank_id_and_out_of_range_time(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", ML_LINES[0], " \t302\t3\t891717742")
    with pytest.raises(DataError) as exc:
        import_movielens(path)
    raised(exc, path, 2, "user", "blank user")
    write(tmp_path, "u.data", "1\t2\t3\t99999999999999")
    with pytest.raises(DataError) as exc:
        import_movielens(path)
    raised(exc, path, 1, "ts", "out of range")


def test_movielens_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        import_movielens(tmp_path / "nowhere")
    raised(exc, tmp_path / "nowhere", None, None, "not found")
    with pytest.raises(DataError) as exc:
        import_movielens(tmp_path)
    raised(exc, tmp_path, None, None, "u.data", "found none")
    empty = write(tmp_path, "u.data")
    with pytest.raises(DataError) as exc:
        import_movielens(tmp_path)
    raised(exc, empty, None, None, "empty")
    write(tmp_path, "u.data", "", "")
    with pytest.raises(DataError) as exc:
        import_movielens(tmp_path)
    raised(exc, empty, None, None, "nothing to import (no ratings)")


# --- Last.fm ---------------------------------------------------------------------------------------------

LASTFM_LINES = ("userID\tartistID\tweight", "2\t51\t13883", "2\t52\t11690", "3\t51\t7")


def test_lastfm_artists_become_videos_and_their_creators(tmp_path: Path) -> None:
    write(tmp_path, "user_artists.dat", *LASTFM_LINES)
    ds = import_lastfm(tmp_path)
    events = ds.events
    pd.testing.assert_series_equal(events["ts"], utc(*["2011-01-01T00:00:00Z"] * 3))
    assert events["user_id"].tolist() == ["u2", "u2", "u3"]
    assert events["video_id"].tolist() == ["a51", "a52", "a51"]
    assert events["event"].tolist() == ["view"] * 3
    assert events["weight"].tolist() == [13883, 11690, 7]
    check_ids(events)
    assert ds.videos["video_id"].tolist() == ["a51", "a52"]
    assert ds.videos["creator_id"].tolist() == ["a51", "a52"]
    assert not set(ds.videos["creator_id"]) & set(events["user_id"])  # artist ids never collide with users
    assert (ds.products, ds.follows) == (None, None)
    round_trips(ds, tmp_path / "out")


def test_lastfm_header_must_name_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "user_artists.dat", "user\tartistID\tweight", "2\t51\t13883")
    with pytest.raises(DataError) as exc:
        import_lastfm(path)
    raised(exc, path, None, "userID", "missing column 'userID'", "found: user, artistID, weight")


def test_lastfm_bad_weight_row_counts_data_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "user_artists.dat", LASTFM_LINES[0], LASTFM_LINES[1], "2\t52\tlots")
    with pytest.raises(DataError) as exc:
        import_lastfm(path)
    raised(exc, path, 2, "weight", "'lots'", "line 3")


# --- Taobao ----------------------------------------------------------------------------------------------

TAOBAO_LINES = ("1,10,100,pv,1511544070", "1,10,100,cart,1511544080", "1,11,100,fav,1511544090",
                "2,10,100,buy,1511544100", "2,12,200,pv,1511544110")


def test_taobao_maps_behaviours_and_lists_items_as_products(tmp_path: Path) -> None:
    write(tmp_path, "UserBehavior.csv", *TAOBAO_LINES)
    ds = import_taobao(tmp_path)
    events = ds.events
    pd.testing.assert_series_equal(events["ts"], utc(1511544070, 1511544080, 1511544090, 1511544100, 1511544110))
    assert events["event"].tolist() == ["view", "cart", "like", "purchase", "view"]
    assert events["user_id"].tolist() == ["1", "1", "1", "2", "2"]
    assert events["video_id"].tolist() == ["10", "10", "11", "10", "12"]
    pd.testing.assert_series_equal(events["order_id"], text(None, None, None, "o4", None, name="order_id"))
    pd.testing.assert_series_equal(events["product_id"], text("10", "10", "11", "10", "12", name="product_id"))
    np.testing.assert_array_equal(events["amount"], [np.nan, np.nan, np.nan, 1.0, np.nan])
    check_ids(events)
    assert ds.videos is None  # no seller in Taobao: no invented creators
    products = ds.products
    assert products["product_id"].tolist() == ["10", "11", "12"]
    assert products["category"].tolist() == ["100", "100", "200"]
    assert products["price"].isna().all()
    round_trips(ds, tmp_path / "parquet")
    round_trips(ds, tmp_path / "csv", fmt="csv")


def test_taobao_unknown_behaviour_names_file_row_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "UserBehavior.csv", *TAOBAO_LINES[:2], "1,11,100,clk,1511544090")
    with pytest.raises(DataError) as exc:
        import_taobao(path)
    raised(exc, path, 3, "behavior", "unknown behavior 'clk'", "pv, cart, fav, buy")


def test_taobao_bad_time_and_folder_without_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "UserBehavior_x.csv", TAOBAO_LINES[0], "1,10,100,pv,yesterday")
    with pytest.raises(DataError) as exc:
        import_taobao(tmp_path)
    raised(exc, path, 2, "ts", "'yesterday'")
    with pytest.raises(DataError) as exc:
        import_taobao(tmp_path / "sub")
    raised(exc, tmp_path / "sub", None, None, "not found")


# --- adjacency lists (Beibei / GHCF) ---------------------------------------------------------------------


def beibei_like(folder: Path) -> dict[str, Path]:
    """A cart file (with a user-only line, an empty line and a repeated pair) and a purchase file."""
    return {"cart": write(folder, "cart.txt", "0 5 6 7", "1", "2 5", "", "3 6 6"),
            "purchase": write(folder, "train.txt", "0 5", "3 6 6")}


def test_adjacency_pairs_become_events_in_funnel_order(tmp_path: Path) -> None:
    ds = import_adjacency(beibei_like(tmp_path), ts="2024-05-01T08:00:00+08:00")
    events = ds.events
    assert events["user_id"].tolist() == ["0", "0", "0", "2", "3", "3", "0", "3", "3"]
    assert events["video_id"].tolist() == ["5", "6", "7", "5", "6", "6", "5", "6", "6"]
    assert events["event"].tolist() == ["cart"] * 6 + ["purchase"] * 3
    pd.testing.assert_series_equal(events["ts"], utc(*["2024-05-01T00:00:04Z"] * 6, *["2024-05-01T00:00:05Z"] * 3))
    pd.testing.assert_series_equal(
        events["order_id"], text(*[None] * 6, "o0-5-1", "o3-6-1", "o3-6-2", name="order_id"))
    assert events["product_id"].iloc[6:].tolist() == ["5", "6", "6"]
    assert events["amount"].iloc[6:].tolist() == [1.0] * 3 and events["amount"].iloc[:6].isna().all()
    check_ids(events)  # the repeated cart pair gets a '-1' id, not a duplicate
    assert (ds.videos, ds.products) == (None, None)
    round_trips(ds, tmp_path / "parquet")
    round_trips(ds, tmp_path / "csv", fmt="csv")


def test_adjacency_default_time_normalized_ids_refunds_and_shares(tmp_path: Path) -> None:
    files = {"view": write(tmp_path, "v.txt", "007 01"), "share": write(tmp_path, "s.txt", "7 1"),
             "refund": write(tmp_path, "r.txt", "7 1")}
    events = import_adjacency(files).events
    assert events["user_id"].tolist() == ["7"] * 3 and events["video_id"].tolist() == ["1"] * 3
    assert events["ts"].tolist() == [pd.Timestamp(f"2020-01-01T00:00:0{s}Z") for s in (1, 3, 6)]
    assert events["share_id"].tolist()[1] == "s7-1-1" and events["order_id"].tolist()[2] == "o7-1-1"
    round_trips(Dataset(events=events), tmp_path / "out")


def test_adjacency_non_integer_token_names_file_line_and_token(tmp_path: Path) -> None:
    path = write(tmp_path, "cart.txt", "0 5 6", "1 5 x7 8", "2 y")
    with pytest.raises(DataError) as exc:
        import_adjacency({"cart": path})
    raised(exc, path, 2, "item", "'x7'", "line 2", "(and 1 more bad token)")
    write(tmp_path, "cart.txt", "0 5", "", "u1 5")
    with pytest.raises(DataError) as exc:
        import_adjacency({"cart": path})
    raised(exc, path, 3, "user", "'u1'")


def test_adjacency_configuration_and_missing_files(tmp_path: Path) -> None:
    path = write(tmp_path, "cart.txt", "0 5")
    with pytest.raises(ConfigError, match="unknown event type 'buy'"):
        import_adjacency({"buy": path})
    with pytest.raises(ConfigError, match="no files"):
        import_adjacency({})
    with pytest.raises(ConfigError, match="not a time"):
        import_adjacency({"cart": path}, ts="soon")
    with pytest.raises(DataError) as exc:
        import_adjacency({"cart": tmp_path / "gone.txt"})
    raised(exc, tmp_path / "gone.txt", None, None, "not found")
    only_users = write(tmp_path, "users.txt", "0", "1")
    with pytest.raises(DataError, match="no \\(user, item\\) pairs"):
        import_adjacency({"cart": only_users})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 50), st.lists(st.integers(0, 20), max_size=6)), min_size=1, max_size=12))
def test_adjacency_one_event_per_listed_item(tmp_path: Path, lines: list[tuple[int, list[int]]]) -> None:
    """Property: any well-formed file gives exactly its (user, item) pairs, in order, with unique order ids."""
    pairs = [(str(u), str(i)) for u, items in lines for i in items]
    path = write(tmp_path, "buy.txt", *(" ".join(map(str, [u, *items])) for u, items in lines))
    if not pairs:
        with pytest.raises(DataError):
            import_adjacency({"purchase": path})
        return
    events = import_adjacency({"purchase": path}).events
    assert list(zip(events["user_id"], events["video_id"], strict=True)) == pairs
    assert events["order_id"].is_unique and events["event_id"].is_unique


# --- registry and summary --------------------------------------------------------------------------------


def test_registry_and_describe(tmp_path: Path) -> None:
    assert IMPORTERS == {"movielens": import_movielens, "lastfm": import_lastfm, "taobao": import_taobao,
                         "adjacency": import_adjacency}
    write(tmp_path, "UserBehavior.csv", *TAOBAO_LINES)
    assert describe(import_taobao(tmp_path)) == {
        "events": 5, "products": 3, "users": 2, "events.view": 2, "events.like": 1, "events.cart": 1,
        "events.purchase": 1}


# --- the real public datasets ----------------------------------------------------------------------------


def real(*parts: str) -> Path:
    """A file or folder under ../shared/datasets, or skip the test when it is absent."""
    path = DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real dataset not found: {path}; see ../shared/datasets/README.md")
    return path


def test_real_movielens_100k(tmp_path: Path) -> None:
    folder = real("ml-100k")
    ds = import_movielens(folder)
    events = ds.events
    assert (len(events), events["user_id"].nunique(), events["video_id"].nunique()) == (100_000, 943, 1682)
    check_ids(ds.events)
    round_trips(ds, tmp_path)
    ratings = pd.read_csv(folder / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    assert len(import_movielens(folder, min_rating=4).events) == int((ratings["r"] >= 4).sum()) < 100_000


def test_real_lastfm() -> None:
    ds = import_lastfm(real("lastfm-hetrec2k"))
    assert len(ds.events) == 92_834
    assert ds.events["user_id"].nunique() == 1892
    assert len(ds.videos) == ds.videos["creator_id"].nunique() == ds.events["video_id"].nunique() == 17_632


def test_real_taobao_sample(tmp_path: Path) -> None:
    folder = real("taobao-userbehavior-sample")
    ds = import_taobao(folder)
    raw = pd.read_csv(next(folder.glob("*.csv")), header=None, names=["u", "i", "c", "b", "t"])
    assert (len(ds.events), ds.events["user_id"].nunique(), len(ds.products)) == (10_000, 114, 7623)
    expected = raw["b"].map({"pv": "view", "cart": "cart", "fav": "like", "buy": "purchase"}).value_counts()
    assert ds.events["event"].value_counts().to_dict() == expected.to_dict()
    assert ds.events["order_id"].notna().sum() == (raw["b"] == "buy").sum()
    round_trips(ds, tmp_path)


def test_real_beibei() -> None:
    folder = real("beibei")
    ds = import_adjacency({"cart": folder / "cart.txt", "purchase": folder / "train.txt"})
    assert describe(ds) == {"events": 642_622 + 282_860, "users": 21_716, "events.cart": 642_622,
                            "events.purchase": 282_860}
    check_ids(ds.events)
    carts, buys = ds.events["event"] == "cart", ds.events["event"] == "purchase"
    assert ds.events.loc[carts, "ts"].max() < ds.events.loc[buys, "ts"].min()
    held_out = import_adjacency({"purchase": folder / "test.txt"}).events
    assert (len(held_out), held_out["user_id"].nunique()) == (21_716, 21_716)
