"""feed.store on real databases: every behaviour on a SQLite file and on PostgreSQL (a fresh schema per test).

PostgreSQL is FEED_TEST_POSTGRES_URL (default: trust auth on 127.0.0.1:5432, database `test`). When it is not
reachable its tests are skipped, except under CI=true, where they fail: CI must exercise both databases.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from feed.io import load_dataset, read_table
from feed.schema import Dataset
from feed.store import EventStore, InsertResult, StoreError
from feed.store.exporting import unknown_references
from feed.store.frames import from_epoch_ms, from_rows, to_epoch_ms, to_rows
from feed.store.store import VERSION_TABLE
from feed.store.tables import metadata
from feed.validation import derive_event_ids

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
POSTGRES_URL = os.environ.get("FEED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]
KEYS = {"videos": ["video_id"], "products": ["product_id"], "follows": ["user_id", "creator_id"]}


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> Dataset:
    """data/sample loaded by feed.io: the reference for canonical dtypes and values."""
    return load_dataset(SAMPLE)


# postgres_schemas: the shared fixture in tests/conftest.py (skips, or fails under CI=true, when unreachable)


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database with nothing in it: a SQLite file not yet created, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feed.db'}"
    return request.getfixturevalue("postgres_schemas")()


@pytest.fixture
def open_store(empty_url: str) -> Iterator[Callable[[], EventStore]]:
    """Opens stores on empty_url and closes them all at the end of the test."""
    stores: list[EventStore] = []

    def open_one() -> EventStore:
        stores.append(EventStore(empty_url))
        return stores[-1]

    yield open_one
    for store in stores:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], EventStore]) -> EventStore:
    """A store migrated to head."""
    opened = open_store()
    opened.upgrade()
    return opened


def in_store_order(events: pd.DataFrame) -> pd.DataFrame:
    """Events as the store returns them: by ts, then insertion order."""
    return events.sort_values("ts", kind="stable").reset_index(drop=True)


def by_key(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """A catalog table in the store's order (its key)."""
    return frame.sort_values(KEYS[table]).reset_index(drop=True)


# --- schema and migrations --------------------------------------------------------------------------------


def test_upgrade_from_empty_to_head_then_again_is_a_no_op(open_store, sample):
    store = open_store()
    with pytest.raises(StoreError, match="feed db upgrade"):
        store.check()
    assert store.revision() is None
    assert store.upgrade() == store.head() == "0004"
    assert store.revision() == "0004"
    store.check()
    store.insert_events(sample.events)
    assert store.upgrade() == "0004"
    assert store.count("events") == len(sample.events)


def test_two_concurrent_upgrades_both_reach_head(open_store):
    stores = [open_store(), open_store()]
    barrier = threading.Barrier(2)
    results: dict[int, object] = {}

    def upgrade(i: int) -> None:
        barrier.wait()
        try:
            results[i] = stores[i].upgrade()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=upgrade, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {0: "0004", 1: "0004"}
    stores[0].check()


def test_migrations_build_exactly_the_tables_module(store, empty_url):
    engine = sa.create_engine(empty_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_check_names_the_url_of_an_unreachable_sqlite_file(tmp_path):
    store = EventStore(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'feed.db'}")
    with pytest.raises(StoreError) as exc:
        store.check()
    assert str(tmp_path / "missing" / "dir" / "feed.db") in str(exc.value)
    assert "feed db upgrade" in str(exc.value)
    assert not (tmp_path / "missing").exists()
    store.close()


def test_check_masks_the_password_of_an_unreachable_postgres():
    store = EventStore("postgresql+psycopg://feed:s3cret@127.0.0.1:1/feed?connect_timeout=3")
    with pytest.raises(StoreError) as exc:
        store.check()
    message = str(exc.value)
    assert "postgresql+psycopg://feed:***@127.0.0.1:1/feed" in message
    assert "s3cret" not in message and "feed db upgrade" in message
    store.close()


def test_upgrade_creates_the_folder_of_a_new_sqlite_file(tmp_path):
    store = EventStore(f"sqlite:///{tmp_path / 'new' / 'feed.db'}")
    assert store.upgrade() == "0004"
    assert (tmp_path / "new" / "feed.db").is_file()
    store.close()


def test_bad_urls_are_store_errors():
    with pytest.raises(StoreError, match="unsupported event store mysql://u:\\*\\*\\*@h/db"):
        EventStore("mysql://u:pw@h/db")
    with pytest.raises(StoreError, match="cannot parse"):
        EventStore("not a url")


# --- events -----------------------------------------------------------------------------------------------


def test_events_round_trip_keeps_canonical_dtypes_and_values(store, sample):
    assert store.insert_events(sample.events) == InsertResult(inserted=62, duplicates=0)
    expected = in_store_order(read_table(SAMPLE / "events.csv", "events"))
    pd.testing.assert_frame_equal(store.events(), expected)


def test_empty_reads_are_canonical_frames(store, sample):
    empty = sample.events.iloc[:0].reset_index(drop=True)
    pd.testing.assert_frame_equal(store.events(), empty)
    pd.testing.assert_frame_equal(store.user_events("nobody"), empty)
    assert store.insert_events(sample.events.iloc[:0]) == InsertResult(0, 0)


def test_the_same_batch_twice_and_repeats_within_a_batch_are_duplicates(store, sample):
    assert store.insert_events(sample.events) == InsertResult(62, 0)
    assert store.insert_events(sample.events) == InsertResult(0, 62)
    fresh = sample.events.iloc[:3].assign(event_id=["x1", "x2", "x3"])
    assert store.insert_events(pd.concat([fresh, fresh.iloc[:2], sample.events.iloc[:1]])) == InsertResult(3, 3)
    assert store.count("events") == 65


def test_blank_event_ids_are_derived_like_feed_io(store, sample):
    batch = sample.events.iloc[:4].drop(columns="event_id")
    assert store.insert_events(batch) == InsertResult(4, 0)
    assert store.insert_events(batch) == InsertResult(0, 4)
    expected = derive_event_ids(sample.events.iloc[:4])
    assert sorted(store.events()["event_id"]) == sorted(expected)


def test_a_batch_with_one_bad_row_stores_nothing(store, sample):
    batch = sample.events.copy()
    batch.loc[batch.index[-1], "user_id"] = None  # NOT NULL violation on the last row
    with pytest.raises(StoreError, match="nothing was stored") as exc:
        store.insert_events(batch)
    assert store.url in str(exc.value)
    assert store.count("events") == 0


def test_time_windows_user_events_and_user_seq(store, sample):
    store.insert_events(sample.events)
    events = in_store_order(sample.events)
    since, until = pd.Timestamp("2024-05-02", tz="UTC"), pd.Timestamp("2024-05-03")  # naive means UTC
    window = events[(events["ts"] >= since) & (events["ts"] < until.tz_localize("UTC"))].reset_index(drop=True)
    assert 0 < len(window) < len(events)
    pd.testing.assert_frame_equal(store.events(since=since, until=until), window)
    ana = events[events["user_id"] == "u_ana"].reset_index(drop=True)
    pd.testing.assert_frame_equal(store.user_events("u_ana"), ana)
    pd.testing.assert_frame_equal(store.user_events("u_ana", since=since), ana[ana["ts"] >= since].reset_index(
        drop=True))

    assert store.user_seq("nobody") == 0
    before, ben = store.user_seq("u_ana"), store.user_seq("u_ben")
    assert before > 0
    store.insert_events(sample.events.iloc[:1].assign(event_id="late", user_id="u_ben"))
    assert store.user_seq("u_ana") == before
    assert store.user_seq("u_ben") > max(before, ben)


# --- catalog ----------------------------------------------------------------------------------------------


def test_catalog_of_an_empty_store_has_no_tables(store, sample):
    catalog = store.catalog()
    assert (catalog.videos, catalog.products, catalog.follows) == (None, None, None)
    pd.testing.assert_frame_equal(catalog.events, sample.events.iloc[:0].reset_index(drop=True))
    videos, products, follows, mark = store.catalog_since(0)
    assert (len(videos), len(products), len(follows), mark) == (0, 0, 0, 0)


def test_catalog_upserts_round_trip_the_sample(store, sample):
    assert store.upsert_videos(sample.videos) == 10
    assert store.upsert_products(sample.products) == 6
    assert store.upsert_follows(sample.follows) == 8
    catalog = store.catalog()
    for table in KEYS:
        pd.testing.assert_frame_equal(getattr(catalog, table), by_key(read_table(SAMPLE / f"{table}.csv", table),
                                                                      table))


def test_upserts_update_in_place_and_catalog_since_returns_only_changes(store, sample):
    store.upsert_videos(sample.videos)
    store.upsert_products(sample.products)
    *_, mark = store.catalog_since(0)
    assert store.upsert_videos(sample.videos) == 0  # nothing changed: nothing stamped
    videos, products, follows, same = store.catalog_since(mark)
    assert (len(videos), len(products), len(follows)) == (0, 0, 0) and same >= mark

    edited = sample.videos.iloc[[2]].assign(title="New title")
    restocked = sample.products[~sample.products["in_stock"]].assign(in_stock=True, price=1.5)
    assert store.upsert_videos(edited) == 1
    assert store.upsert_products(restocked) == 1
    videos, products, _, newer = store.catalog_since(same)
    assert newer > same
    pd.testing.assert_frame_equal(videos, edited.reset_index(drop=True))
    pd.testing.assert_frame_equal(products, restocked.reset_index(drop=True))
    assert store.count("videos") == 10 and store.count("products") == 6
    assert store.catalog().videos.set_index("video_id").loc[edited["video_id"].iloc[0], "title"] == "New title"
    assert [len(f) for f in store.catalog_since(newer)[:3]] == [0, 0, 0]


def test_upserts_change_only_the_columns_the_frame_has(store, sample):
    store.upsert_products(sample.products)
    sold_out = pd.DataFrame({"product_id": ["p_serum"], "in_stock": [False]})
    assert store.upsert_products(sold_out) == 1
    products = store.catalog().products.set_index("product_id")
    assert not products.loc["p_serum", "in_stock"]
    assert products.loc["p_serum", "price"] == sample.products.set_index("product_id").loc["p_serum", "price"]
    new = pd.DataFrame({"product_id": ["p_new"]})
    assert store.upsert_products(new) == 1
    assert store.catalog().products.set_index("product_id").loc["p_new"].isna().tolist() == [
        True, True, True, True, False]  # merchant, category, price, commission missing; in stock by default
    with pytest.raises(StoreError, match="nothing was stored"):
        store.upsert_videos(pd.DataFrame({"video_id": ["v_new"], "title": ["no creator"]}))
    assert store.count("videos") == 0


def test_follows_delete_is_a_tombstone_that_catalog_since_reports(store, sample):
    store.upsert_follows(sample.follows)
    *_, mark = store.catalog_since(0)
    following = sorted(sample.follows.loc[sample.follows["user_id"] == "u_ana", "creator_id"])
    assert store.follows_of("u_ana") == following
    assert store.delete_follow("u_ana", following[0]) is True
    assert store.delete_follow("u_ana", following[0]) is False
    assert store.delete_follow("u_ana", "c_nobody") is False
    assert store.follows_of("u_ana") == following[1:]
    assert store.count("follows") == len(sample.follows) - 1
    assert len(store.catalog().follows) == len(sample.follows) - 1

    _, _, changes, after_delete = store.catalog_since(mark)
    assert changes[["user_id", "creator_id", "deleted"]].values.tolist() == [["u_ana", following[0], True]]
    assert changes["deleted"].dtype == bool
    again = sample.follows[(sample.follows["user_id"] == "u_ana") & (sample.follows["creator_id"] == following[0])]
    assert store.upsert_follows(again) == 1
    assert store.follows_of("u_ana") == following
    assert store.catalog_since(after_delete)[2]["deleted"].tolist() == [False]


# --- impressions, counts, export --------------------------------------------------------------------------


def test_impressions_are_logged_in_bulk(store):
    ts = pd.Series(pd.to_datetime(["2024-05-01T10:00:00Z"] * 3)).astype("datetime64[ms, UTC]")
    rows = pd.DataFrame({"request_id": ["r1"] * 3, "user_id": ["u1"] * 3, "position": [0, 1, 2],
                         "video_id": ["v1", "v2", "v3"], "source": ["als", "als", None], "ts": ts})
    assert store.log_impressions(rows) == 3
    assert store.log_impressions(rows.iloc[:0]) == 0
    assert store.count("impressions") == 3
    with pytest.raises(ValueError, match="position"):
        store.log_impressions(rows.drop(columns="position"))
    with pytest.raises(ValueError, match="unknown table"):
        store.count("users")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_loads_back_as_the_same_dataset(store, sample, tmp_path, fmt):
    store.insert_events(sample.events)
    store.upsert_videos(sample.videos)
    store.upsert_products(sample.products)
    store.upsert_follows(sample.follows)
    exported = store.export(tmp_path / "export", fmt=fmt)
    loaded = load_dataset(tmp_path / "export")
    pd.testing.assert_frame_equal(exported.events, in_store_order(sample.events))
    pd.testing.assert_frame_equal(loaded.events, exported.events)
    for table in KEYS:
        pd.testing.assert_frame_equal(getattr(exported, table), by_key(getattr(sample, table), table))
        pd.testing.assert_frame_equal(getattr(loaded, table), getattr(exported, table))
    since = pd.Timestamp("2024-05-02", tz="UTC")
    recent = store.export(tmp_path / "recent", since=since, fmt=fmt)
    pd.testing.assert_frame_equal(recent.events, store.events(since=since))


def test_export_refuses_events_of_unknown_videos_and_writes_nothing(store, sample, tmp_path):
    store.insert_events(sample.events)
    store.upsert_videos(sample.videos[sample.videos["video_id"] != "v01"])
    with pytest.raises(StoreError, match=r"video_id\(s\) missing from the videos table: v01") as exc:
        store.export(tmp_path / "export")
    assert store.url in str(exc.value)
    assert not (tmp_path / "export").exists()
    with pytest.raises(StoreError, match="no events since"):
        store.export(tmp_path / "export", since=pd.Timestamp("2030-01-01", tz="UTC"))


# --- pure conversions -------------------------------------------------------------------------------------


def test_epoch_ms_conversions_round_trip():
    ts = pd.Series(pd.to_datetime(["2024-05-01T10:00:00.123Z", None, "1969-12-31T23:59:59.999Z"], utc=True))
    assert to_epoch_ms(ts) == [1714557600123, None, -1]
    assert to_epoch_ms(pd.Series([pd.Timestamp("2024-05-01T10:00:00")])) == [1714557600000]  # naive is UTC
    back = from_epoch_ms([1714557600123, None, -1])
    assert str(back.dtype) == "datetime64[ms, UTC]"
    pd.testing.assert_series_equal(back, ts.astype("datetime64[ms, UTC]"))


@pytest.mark.parametrize("table", ["events", "videos", "products", "follows"])
def test_row_conversions_round_trip_canonical_frames(sample, table):
    frame = getattr(sample, table)
    names, rows = to_rows(frame, table)
    assert names == list(frame.columns) and len(rows) == len(frame)
    assert all(value is None or isinstance(value, (str, int, float, bool)) for row in rows for value in row)
    fetched = [tuple(int(v) if isinstance(v, bool) else v for v in row) for row in rows]  # selects read flags as 0/1
    pd.testing.assert_frame_equal(from_rows(table, [fetched[:3], fetched[3:]]), frame)


def test_non_canonical_columns_are_named():
    with pytest.raises(ValueError, match="videos column 'video_id'"):
        to_rows(pd.DataFrame({"video_id": [1.5], "creator_id": ["c1"]}), "videos")


def test_unknown_references_match_what_load_dataset_rejects(sample):
    assert unknown_references(sample) == []
    orphan_purchase = sample.events[sample.events["event"] == "purchase"].assign(product_id=None)
    broken = Dataset(events=pd.concat([sample.events, orphan_purchase.assign(event_id="p", video_id="v03")]),
                     videos=sample.videos[sample.videos["video_id"] != "v01"],
                     products=sample.products[sample.products["product_id"] != "p_lipstick"])
    problems = unknown_references(broken)
    assert [p.split(" ")[1] for p in problems] == ["events", "videos", "purchase(s)"]
    assert "v01" in problems[0] and "p_lipstick" in problems[1] and "event_id p" in problems[2]


def test_product_owner_and_video_row(store):
    products = pd.DataFrame({"product_id": pd.Series(["p1", "p2"], dtype="str"),
                             "merchant_id": pd.Series(["m1", None], dtype="str"),
                             "category": pd.Series([None, None], dtype="str"), "price": [1.0, 2.0],
                             "commission_rate": [0.1, 0.2], "in_stock": [True, True]})
    store.upsert_products(products)
    assert store.product_owner("p1") == (True, "m1") and store.product_owner("p2") == (True, None)
    assert store.product_owner("p9") == (False, None) and store.video_row("v9") is None
    videos = pd.DataFrame({"video_id": pd.Series(["v1"], dtype="str"), "creator_id": pd.Series(["c1"], dtype="str"),
                           "product_id": pd.Series(["p1"], dtype="str"),
                           "published_at": pd.Series(pd.to_datetime([5], unit="ms", utc=True)).astype(
                               "datetime64[ms, UTC]"),
                           "duration_ms": [1000.0], "title": pd.Series(["t"], dtype="str")})
    store.upsert_videos(videos)
    assert store.video_row("v1") == {"creator_id": "c1", "product_id": "p1", "published_at": 5}
