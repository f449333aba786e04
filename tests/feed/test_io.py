"""feed.io on real CSV and Parquet files: canonical dtypes, round trips, derived ids and every validation error."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feed.errors import DataError
from feed.io import derive_event_ids, find_table, load_dataset, read_table, write_dataset, write_table
from feed.schema import COLUMNS, EVENT_TYPES, TABLES, Dataset
from feed.validation import EVENT_ID_SOURCE, TS_DTYPE

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
HEADER = "event_id,ts,user_id,video_id,event,watch_ms,share_id,order_id,amount,product_id"
GOOD = ["e1,2024-05-01T10:00:00Z,u1,v1,impression,,,,,",
        "e2,2024-05-01T10:00:01Z,u1,v1,view,1500,,,,"]
INSTANT = pd.Timestamp("2024-05-01T10:00:00Z")  # == 1714557600000 ms since the epoch


def write(folder: Path, name: str, text: str) -> Path:
    """Write a dedented text file and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def events_csv(folder: Path, *rows: str, header: str = HEADER) -> Path:
    """events.csv with the given header and data lines."""
    return write(folder, "events.csv", "\n".join([header, *rows]) + "\n")


def catalog(folder: Path, videos: str | None = None, products: str | None = None) -> None:
    """Write videos.csv / products.csv (header included in the text)."""
    if videos is not None:
        write(folder, "videos.csv", videos)
    if products is not None:
        write(folder, "products.csv", products)


def raised(exc: pytest.ExceptionInfo[DataError], path: Path, row: int | None, column: str | None,
           *words: str) -> None:
    """The DataError names this file, row and column, and its message contains every word."""
    err = exc.value
    assert (err.path, err.row, err.column) == (str(path), row, column), str(err)
    for word in words:
        assert word in str(err), f"{word!r} not in {str(err)!r}"


# --- happy paths -------------------------------------------------------------------------------------------


def test_sample_dataset_loads_with_every_table_and_event_type():
    dataset = load_dataset(SAMPLE)
    events = dataset.events
    assert set(events["event"]) == set(EVENT_TYPES)
    assert dataset.videos is not None and dataset.products is not None and dataset.follows is not None
    assert dataset.videos["creator_id"].nunique() == 4 and len(dataset.videos) == 10
    assert (~dataset.products["in_stock"]).sum() == 1
    friend_buys = events[(events["event"] == "purchase") & events["via_share_id"].notna()]
    assert set(friend_buys["via_share_id"]) <= set(events.loc[events["event"] == "share", "share_id"])
    assert len(friend_buys) >= 1 and (events["event"] == "refund").sum() == 1


def test_canonical_dtypes_and_absent_optional_columns(tmp_path):
    path = events_csv(tmp_path, "2024-05-01T10:00:00Z,u1,v1,view", header="ts,user_id,video_id,event")
    events = read_table(path, "events")
    assert list(events.columns) == [c.name for c in COLUMNS["events"]]
    kinds = {"str": "str", "ts": TS_DTYPE, "int": "float64", "float": "float64"}
    assert {c.name: str(events[c.name].dtype) for c in COLUMNS["events"]} == {
        c.name: kinds[c.kind] for c in COLUMNS["events"]}
    assert events[["watch_ms", "order_id", "amount"]].isna().all().all()


def test_extra_columns_and_row_order_are_kept(tmp_path):
    path = write(tmp_path, "follows.csv", """\
        creator_id,campaign,user_id
        c2,spring,u9
        c1,,u1
        """)
    follows = read_table(path, "follows")
    assert list(follows.columns) == ["user_id", "creator_id", "ts", "campaign"]
    assert follows["user_id"].tolist() == ["u9", "u1"] and follows["campaign"].isna().tolist() == [False, True]


def test_epoch_ms_and_iso_timestamps_parse_to_the_same_instant(tmp_path):
    texts = ["1714557600000", "2024-05-01T10:00:00Z", "2024-05-01T18:00:00+08:00", "2024-05-01T10:00:00",
             "2024-05-01 10:00:00.000", "2024-05-01T06:00:00-04:00"]
    path = events_csv(tmp_path, *(f"{t},u1,v1,view" for t in texts), header="ts,user_id,video_id,event")
    assert (read_table(path, "events")["ts"] == INSTANT).all()
    base = pd.DataFrame({"user_id": ["u1"], "video_id": ["v1"], "event": ["view"]})
    stored = [pd.Series([1714557600000]), pd.Series([INSTANT.tz_localize(None)]),
              pd.Series([INSTANT.tz_convert("Asia/Shanghai")])]
    for k, ts in enumerate(stored):
        base.assign(ts=ts).to_parquet(tmp_path / f"{k}.parquet")
        loaded = read_table(tmp_path / f"{k}.parquet", "events")["ts"]
        assert str(loaded.dtype) == TS_DTYPE and loaded.iloc[0] == INSTANT


def test_in_stock_flags_accept_words_and_digits_blank_means_true(tmp_path):
    words = ["true", "FALSE", "1", "0", "Yes", "no", ""]
    path = write(tmp_path, "products.csv", "product_id,in_stock\n" + "".join(
        f"p{k},{w}\n" for k, w in enumerate(words)))
    assert read_table(path, "products")["in_stock"].tolist() == [True, False, True, False, True, False, True]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip_write_dataset_then_load_dataset_is_exact(tmp_path, fmt):
    original = _tricky_dataset()
    write_dataset(original, tmp_path / "out", fmt)
    loaded = load_dataset(tmp_path / "out")
    for table in TABLES:
        pd.testing.assert_frame_equal(getattr(loaded, table), getattr(original, table))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_write_dataset_replaces_table_files_of_the_other_format(tmp_path):
    dataset = load_dataset(SAMPLE)
    write_dataset(dataset, tmp_path, "csv")
    write_dataset(Dataset(events=dataset.events, videos=dataset.videos), tmp_path, "parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.parquet", "videos.parquet"]
    reloaded = load_dataset(tmp_path)
    assert reloaded.products is None and reloaded.follows is None
    pd.testing.assert_frame_equal(reloaded.events, dataset.events)


def test_write_rejects_unknown_formats_and_leaves_no_temp_file(tmp_path):
    with pytest.raises(ValueError, match="xlsx"):
        write_dataset(load_dataset(SAMPLE), tmp_path, "xlsx")
    with pytest.raises(ValueError, match=".json"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "events.json")
    with pytest.raises((TypeError, ValueError, pa.ArrowException)):
        write_table(pd.DataFrame({"a": [object()]}), tmp_path / "bad.parquet")  # pyarrow cannot store it
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(titles=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5))
def test_any_text_round_trips_through_csv(tmp_path, titles):
    videos = pd.DataFrame({"video_id": [f"v{k}" for k in range(len(titles))], "creator_id": "c1",
                           "title": titles})
    write_table(videos, tmp_path / "videos.csv")
    assert read_table(tmp_path / "videos.csv", "videos")["title"].tolist() == titles


def _tricky_dataset() -> Dataset:
    """The sample plus awkward values: quotes, commas, newlines, unicode, NA, ms fractions, extras."""
    dataset = load_dataset(SAMPLE)
    videos = dataset.videos.copy()
    videos.loc[0, "title"] = 'She said "wow", then\nbought two 💄'
    videos.loc[1, "published_at"] = pd.NaT
    videos["language"] = pd.Series(["en"] * 9 + [None], dtype="str")
    events = dataset.events.copy()
    events.loc[3, "watch_ms"] = 1234.5
    events.loc[4, "ts"] = pd.Timestamp("1969-12-31T23:59:59.999Z")
    return Dataset(events=events, videos=videos, products=dataset.products, follows=dataset.follows)


# --- derived event ids -------------------------------------------------------------------------------------


def test_derived_event_ids_are_stable_unique_and_only_fill_blanks(tmp_path):
    rows = ["e1,2024-05-01T10:00:00Z,u1,v1,view,1500,,,,", ",2024-05-01T10:00:00Z,u1,v1,view,1500,,,,",
            ",2024-05-01T10:00:00Z,u1,v1,view,1500,,,,", ",1714557600000,u2,v1,like,,,,,"]
    ids = read_table(events_csv(tmp_path, *rows), "events")["event_id"]
    assert ids.iloc[0] == "e1" and ids.is_unique
    assert re.fullmatch(r"h[0-9a-f]{16}", ids.iloc[1]) and ids.iloc[2] == ids.iloc[1] + "-1"
    assert ids.iloc[3] == "h60bc99fa86937896"  # pinned: must not change across runs or machines
    assert read_table(tmp_path / "events.csv", "events")["event_id"].equals(ids)


def test_derived_event_ids_match_between_csv_and_parquet(tmp_path):
    from_csv = read_table(SAMPLE / "events.csv", "events").drop(columns="event_id")
    write_table(from_csv, tmp_path / "events.csv")
    write_table(from_csv, tmp_path / "events.parquet")
    a, b = read_table(tmp_path / "events.csv", "events"), read_table(tmp_path / "events.parquet", "events")
    pd.testing.assert_series_equal(a["event_id"], b["event_id"])
    assert a["event_id"].is_unique and a["event_id"].equals(derive_event_ids(a))
    assert "event_id" not in EVENT_ID_SOURCE


# --- file-level errors -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "events.csv", "events")
    raised(exc, tmp_path / "events.csv", None, None, "does not exist")


def test_empty_file(tmp_path):
    (tmp_path / "events.parquet").write_bytes(b"")
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "events.parquet", "events")
    raised(exc, tmp_path / "events.parquet", None, None, "empty")


def test_not_csv_or_parquet(tmp_path):
    write(tmp_path, "events.json", "[]")
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "events.json", "events")
    raised(exc, tmp_path / "events.json", None, None, "unsupported file type '.json'", ".parquet or .csv")


def test_corrupt_parquet(tmp_path):
    (tmp_path / "events.parquet").write_bytes(b"ts,user_id\nnot parquet at all\n")
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "events.parquet", "events")
    raised(exc, tmp_path / "events.parquet", None, None, "cannot read it as Parquet")


def test_binary_file_named_csv(tmp_path):
    (tmp_path / "events.csv").write_bytes(b"\xff\xfe\x00garbage\x81\n")
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "events.csv", "events")
    raised(exc, tmp_path / "events.csv", None, None, "cannot read it as CSV", "UTF-8")


def test_ragged_csv_row(tmp_path):
    path = events_csv(tmp_path, *GOOD, "e3,2024-05-01T10:00:02Z,u1,v1,view,1500,,,,,oops")
    with pytest.raises(DataError) as exc:
        read_table(path, "events")
    raised(exc, path, 3, None, "11 cells on CSV line 4", "expected 10")


def test_missing_required_column_lists_the_columns_found(tmp_path):
    path = events_csv(tmp_path, "2024-05-01T10:00:00Z,u1,v1,view", header="ts,user,video_id,event")
    with pytest.raises(DataError) as exc:
        read_table(path, "events")
    raised(exc, path, None, "user_id", "missing required column 'user_id'", "found: ts, user, video_id, event")


def test_duplicate_header_column(tmp_path):
    path = events_csv(tmp_path, "2024-05-01T10:00:00Z,u1,v1,view,u2", header="ts,user_id,video_id,event,user_id")
    with pytest.raises(DataError) as exc:
        read_table(path, "events")
    raised(exc, path, None, "user_id", "appears twice")


# --- row-level errors in events (the bad row is data row 3, CSV line 4) ------------------------------------

EVENT_MISTAKES = {
    "blank user_id": ("e3,2024-05-01T10:00:02Z,,v1,view,,,,,", "user_id", ["blank user_id", "required"]),
    "blank ts": ("e3,,u1,v1,view,,,,,", "ts", ["blank ts", "required"]),
    "unparsable ts": ("e3,2024-13-45T99:00,u1,v1,view,,,,,", "ts",
                      ["unparsable timestamp '2024-13-45T99:00'", "ISO-8601", "epoch milliseconds"]),
    "unknown event": ("e3,2024-05-01T10:00:02Z,u1,v1,click,,,,,", "event",
                      ["unknown event type 'click'", ", ".join(EVENT_TYPES)]),
    "purchase without order": ("e3,2024-05-01T10:00:02Z,u1,v1,purchase,,,,9.5,p1", "order_id",
                               ["'purchase' without an order_id"]),
    "refund without order": ("e3,2024-05-01T10:00:02Z,u1,v1,refund,,,,9.5,p1", "order_id",
                             ["'refund' without an order_id"]),
    "purchase without amount": ("e3,2024-05-01T10:00:02Z,u1,v1,purchase,,,o1,,p1", "amount",
                                ["purchase without an amount", "> 0"]),
    "purchase amount zero": ("e3,2024-05-01T10:00:02Z,u1,v1,purchase,,,o1,0,p1", "amount",
                             ["purchase amount '0' is not positive"]),
    "negative refund": ("e3,2024-05-01T10:00:02Z,u1,v1,refund,,,o1,-5,p1", "amount",
                        ["negative refund amount '-5'", ">= 0"]),
    "share without share_id": ("e3,2024-05-01T10:00:02Z,u1,v1,share,,,,,", "share_id",
                               ["share without a share_id"]),
    "negative watch_ms": ("e3,2024-05-01T10:00:02Z,u1,v1,view,-300,,,,", "watch_ms",
                          ["negative watch_ms '-300'", ">= 0"]),
    "non-numeric amount": ("e3,2024-05-01T10:00:02Z,u1,v1,purchase,,,o1,abc,p1", "amount",
                           ["not a number: 'abc'", "finite number"]),
    "duplicate event_id": ("e1,2024-05-01T10:00:02Z,u1,v1,like,,,,,", "event_id",
                           ["duplicate event_id 'e1' (first on row 1)", "appear once"]),
}


@pytest.mark.parametrize("line, column, words", EVENT_MISTAKES.values(), ids=EVENT_MISTAKES.keys())
def test_event_row_mistakes_name_file_row_column_and_value(tmp_path, line, column, words):
    path = events_csv(tmp_path, *GOOD, line)
    with pytest.raises(DataError) as exc:
        read_table(path, "events")
    raised(exc, path, 3, column, "(CSV line 4)", "expected", *words)


def test_refund_without_amount_is_fine(tmp_path):
    path = events_csv(tmp_path, *GOOD, "e3,2024-05-01T10:00:02Z,u1,v1,refund,,,o1,,p1")
    assert np.isnan(read_table(path, "events")["amount"].iloc[2])


def test_several_bad_rows_name_the_first_and_count_the_rest(tmp_path):
    bad = [f"e{k},2024-05-01T10:00:0{k}Z,u1,v1,{kind},,,,," for k, kind in enumerate(["clik", "buy", "clik"], 3)]
    path = events_csv(tmp_path, *GOOD, *bad)
    with pytest.raises(DataError) as exc:
        read_table(path, "events")
    raised(exc, path, 3, "event", "'clik'", "(and 2 more rows)")


def test_parquet_errors_give_the_row_without_a_csv_line(tmp_path):
    events = pd.DataFrame({"ts": [1714557600000] * 3, "user_id": "u1", "video_id": "v1", "event": "view",
                           "watch_ms": [10.0, 20.0, -1.0]})
    events.to_parquet(tmp_path / "events.parquet")
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "events.parquet", "events")
    raised(exc, tmp_path / "events.parquet", 3, "watch_ms", "negative watch_ms -1.0")
    assert "CSV line" not in str(exc.value)


def test_parquet_column_of_the_wrong_type(tmp_path):
    pd.DataFrame({"ts": [True], "user_id": "u1", "video_id": "v1", "event": "view"}).to_parquet(
        tmp_path / "events.parquet")
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "events.parquet", "events")
    raised(exc, tmp_path / "events.parquet", None, "ts", "found a bool column", "ISO-8601")


# --- row-level errors in the catalog -----------------------------------------------------------------------

CATALOG_MISTAKES = {
    "commission above 1": ("products", "product_id,price,commission_rate\np1,10,0.1\np2,10,1.5\n",
                           "commission_rate", ["commission_rate '1.5' is outside [0, 1]"]),
    "negative price": ("products", "product_id,price\np1,10\np2,-3\n", "price", ["negative price '-3'"]),
    "bad in_stock": ("products", "product_id,in_stock\np1,true\np2,maybe\n", "in_stock",
                     ["not a true/false flag: 'maybe'", "true/1/yes/false/0/no"]),
    "duplicate product_id": ("products", "product_id\np1\np1\n", "product_id", ["duplicate product_id 'p1'"]),
    "duplicate video_id": ("videos", "video_id,creator_id\nv1,c1\nv1,c2\n", "video_id",
                           ["duplicate video_id 'v1' (first on row 1)"]),
    "negative duration": ("videos", "video_id,creator_id,duration_ms\nv1,c1,100\nv2,c1,-100\n", "duration_ms",
                          ["negative duration_ms '-100'"]),
    "unparsable published_at": ("videos", "video_id,creator_id,published_at\nv1,c1,\nv2,c1,yesterday\n",
                                "published_at", ["unparsable timestamp 'yesterday'"]),
    "blank follow creator": ("follows", "user_id,creator_id\nu1,c1\nu2,\n", "creator_id", ["blank creator_id"]),
}


@pytest.mark.parametrize("table, text, column, words", CATALOG_MISTAKES.values(), ids=CATALOG_MISTAKES.keys())
def test_catalog_row_mistakes_name_file_row_column_and_value(tmp_path, table, text, column, words):
    path = write(tmp_path, f"{table}.csv", text)
    with pytest.raises(DataError) as exc:
        read_table(path, table)
    raised(exc, path, 2, column, "(CSV line 3)", *words)


# --- dataset-level errors ----------------------------------------------------------------------------------

VIDEOS = "video_id,creator_id,product_id\nv1,c1,p1\nv2,c1,\n"


def test_load_dataset_needs_an_events_table(tmp_path):
    catalog(tmp_path, videos=VIDEOS)
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path)
    raised(exc, tmp_path, None, None, "no events table", str(tmp_path / "events.parquet"),
           str(tmp_path / "events.csv"))


def test_load_dataset_of_a_missing_folder(tmp_path):
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path / "nowhere")
    raised(exc, tmp_path / "nowhere", None, None, "folder not found")


def test_table_in_both_formats_is_ambiguous(tmp_path):
    events_csv(tmp_path, *GOOD)
    read_table(tmp_path / "events.csv", "events").to_parquet(tmp_path / "events.parquet")
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path)
    raised(exc, tmp_path, None, None, "both events.parquet and events.csv exist")
    assert find_table(tmp_path / "missing", "videos") is None


def test_header_only_events_table_is_an_empty_dataset_error(tmp_path):
    events_csv(tmp_path)
    assert read_table(tmp_path / "events.csv", "events").empty
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path)
    raised(exc, tmp_path / "events.csv", None, None, "no rows")


def test_event_video_unknown_to_the_videos_table(tmp_path):
    events_csv(tmp_path, *GOOD, "e3,2024-05-01T10:00:02Z,u1,v9,view,,,,,")
    catalog(tmp_path, videos=VIDEOS)
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path)
    raised(exc, tmp_path / "events.csv", 3, "video_id", "video_id 'v9' is not in the videos table",
           str(tmp_path / "videos.csv"))


def test_video_product_unknown_to_the_products_table(tmp_path):
    events_csv(tmp_path, *GOOD)
    catalog(tmp_path, videos=VIDEOS, products="product_id\np2\n")
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path)
    raised(exc, tmp_path / "videos.csv", 1, "product_id", "product_id 'p1' is not in the products table")


def test_purchase_without_product_needs_a_videos_table(tmp_path):
    events_csv(tmp_path, *GOOD, "e3,2024-05-01T10:00:02Z,u1,v1,purchase,,,o1,9.5,")
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path)
    raised(exc, tmp_path / "events.csv", 3, "product_id", "purchase without a product_id", "no videos table")


def test_purchase_without_product_of_a_video_without_product(tmp_path):
    events_csv(tmp_path, *GOOD, "e3,2024-05-01T10:00:02Z,u1,v1,purchase,,,o1,9.5,",
               "e4,2024-05-01T10:00:03Z,u1,v2,purchase,,,o2,9.5,")
    catalog(tmp_path, videos=VIDEOS)
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path)
    raised(exc, tmp_path / "events.csv", 4, "product_id", "its video 'v2' has no product_id")


def test_purchase_product_may_come_from_the_catalog_or_differ_from_it(tmp_path):
    events_csv(tmp_path, *GOOD, "e3,2024-05-01T10:00:02Z,u1,v1,purchase,,,o1,9.5,",
               "e4,2024-05-01T10:00:03Z,u1,v1,purchase,,,o2,9.5,p7")
    catalog(tmp_path, videos=VIDEOS, products="product_id\np1\n")
    dataset = load_dataset(tmp_path)
    assert dataset.events["product_id"].iloc[2:].isna().tolist() == [True, False]
    assert dataset.has_catalog
