"""The synthetic world: deterministic, schema-conformant, referentially sound, heavy-tailed, with a meaningful truth."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.errors import ArtifactError, ConfigError
from feed.schema import COLUMNS, EVENT_TYPES
from feed.io import load_dataset
from feed.world import Truth, World, WorldParams, generate_world, save_world

SMALL = WorldParams(users=300, creators=30, products=80, videos=200, days=10)
CANONICAL = {"str": "str", "ts": "datetime64[ms, UTC]", "int": "float64", "float": "float64", "bool": "bool"}


@pytest.fixture(scope="module")
def world() -> World:
    """One small world shared by the read-only tests."""
    return generate_world(SMALL)


@pytest.fixture(scope="module")
def medium() -> World:
    """A world big enough for stable rates and tails (~0.1M events)."""
    return generate_world(WorldParams(users=2000, creators=100, products=400, videos=1000, days=12))


def _rows(ids: np.ndarray, values: pd.Series) -> np.ndarray:
    """Row index of each id in a truth id array; (len(values),)."""
    rows = pd.Index(ids).get_indexer(values)
    assert (rows >= 0).all()
    return rows


def _tables(w: World) -> dict[str, pd.DataFrame]:
    """Every frame of a world by name."""
    ds = w.dataset
    return {"events": ds.events, "videos": ds.videos, "products": ds.products, "follows": ds.follows,
            "friends": w.friends}


def test_same_seed_gives_identical_world(world: World) -> None:
    again = generate_world(SMALL)
    for name, df in _tables(world).items():
        pd.testing.assert_frame_equal(df, _tables(again)[name], obj=name)
    np.testing.assert_array_equal(world.truth.taste, again.truth.taste)
    assert (world.truth.trust != again.truth.trust).nnz == 0


def test_different_seed_gives_different_world(world: World) -> None:
    other = generate_world(dataclasses.replace(SMALL, seed=1))
    assert not np.array_equal(world.truth.taste, other.truth.taste)
    assert not world.dataset.events[["user_id", "video_id"]].equals(other.dataset.events[["user_id", "video_id"]])


def test_columns_have_canonical_dtypes(world: World) -> None:
    for table, columns in COLUMNS.items():
        df = getattr(world.dataset, table)
        assert [c.name for c in columns] == list(df.columns), table
        for col in columns:
            assert df[col.name].dtype == CANONICAL[col.kind], (table, col.name, df[col.name].dtype)
            if col.required:
                assert df[col.name].notna().all(), (table, col.name)
    assert list(world.friends.columns) == ["user_id", "friend_id"]


def test_events_are_sorted_unique_and_known(world: World) -> None:
    ev = world.dataset.events
    assert ev["event_id"].is_unique
    assert ev["ts"].is_monotonic_increasing
    assert set(ev["event"]) == set(EVENT_TYPES)
    start = pd.Timestamp(SMALL.start, tz="UTC")
    assert ev["ts"].min() >= start and ev["ts"].max() < start + pd.Timedelta(days=SMALL.days)


def test_purchases_refunds_and_shares_are_complete(world: World) -> None:
    ev = world.dataset.events
    buys = ev[ev["event"] == "purchase"]
    assert len(buys) > 0 and buys["order_id"].is_unique
    assert buys[["order_id", "amount", "product_id"]].notna().all().all() and (buys["amount"] > 0).all()
    refunds = ev[ev["event"] == "refund"].merge(buys, on="order_id", suffixes=("", "_buy"))
    assert len(refunds) == (ev["event"] == "refund").sum()
    assert (refunds["ts"] > refunds["ts_buy"]).all() and (refunds["amount"] <= refunds["amount_buy"]).all()
    assert (refunds["product_id"] == refunds["product_id_buy"]).all()
    shares = ev[ev["event"] == "share"]
    assert shares["share_id"].notna().all() and shares["share_id"].is_unique
    assert ev.loc[ev["event"] != "share", "share_id"].isna().all()


def test_via_share_views_follow_their_share(world: World) -> None:
    ev = world.dataset.events
    via = ev[ev["via_share_id"].notna()]
    assert (via["event"] == "view").any()
    joined = via.merge(ev[ev["event"] == "share"], left_on="via_share_id", right_on="share_id",
                       suffixes=("", "_share"))
    assert len(joined) == len(via)
    assert (joined["ts"] > joined["ts_share"]).all() and (joined["video_id"] == joined["video_id_share"]).all()
    assert via["request_id"].isna().all()


def test_session_events_follow_their_impression(world: World) -> None:
    ev = world.dataset.events
    imp = ev[ev["event"] == "impression"][["request_id", "video_id", "ts"]]
    for kind in ("view", "share", "cart", "purchase"):
        later = ev[(ev["event"] == kind) & ev["request_id"].notna()]
        joined = later.merge(imp, on=["request_id", "video_id"], suffixes=("", "_imp"))
        assert joined.groupby("event_id")["ts_imp"].min().lt(later.set_index("event_id")["ts"]).all(), kind


def test_references_resolve(world: World) -> None:
    ds, users = world.dataset, set(world.truth.user_ids)
    assert set(ds.events["video_id"]) <= set(ds.videos["video_id"])
    assert set(ds.events["user_id"]) <= users
    assert set(ds.videos["product_id"].dropna()) <= set(ds.products["product_id"])
    assert set(ds.events["product_id"].dropna()) <= set(ds.products["product_id"])
    assert set(ds.videos["creator_id"]) <= set(world.truth.creator_user_ids) <= users
    assert set(ds.follows["creator_id"]) <= set(world.truth.creator_user_ids)
    assert (ds.follows["user_id"] != ds.follows["creator_id"]).all()
    pairs = set(zip(world.friends["user_id"], world.friends["friend_id"], strict=True))
    assert pairs == {(b, a) for a, b in pairs} and all(a != b for a, b in pairs)
    assert 0.5 < ds.videos["product_id"].isna().mean() * 20 < 2.0   # ~5% of videos have no product


def test_views_and_users_are_heavy_tailed(medium: World) -> None:
    ev = medium.dataset.events
    views = ev.loc[ev["event"] == "view", "video_id"].value_counts().reindex(medium.truth.video_ids, fill_value=0)
    top = np.sort(views.to_numpy())[::-1]
    assert top[: len(top) // 10].sum() > 0.4 * top.sum()
    per_user = ev.loc[ev["event"] == "impression", "user_id"].value_counts().to_numpy()
    assert np.sort(per_user)[::-1][: len(per_user) // 10].sum() > 0.25 * per_user.sum()


def test_realism_ratios(medium: World) -> None:
    n = medium.dataset.events["event"].value_counts()
    assert 0.2 < n["view"] / n["impression"] < 0.5
    assert 0.005 < n["purchase"] / n["view"] < 0.03
    assert 0.02 < n["refund"] / n["purchase"] < 0.08
    assert 0.01 < n["share"] / n["view"] < 0.05


def test_views_concentrate_in_favourite_category(medium: World) -> None:
    ev, t = medium.dataset.events, medium.truth
    views = ev[ev["event"] == "view"]
    users, videos = _rows(t.user_ids, views["user_id"]), _rows(t.video_ids, views["video_id"])
    in_favourite = t.video_category[videos] == t.taste.argmax(axis=1)[users]
    assert in_favourite.mean() > 4.0 / t.params.categories


def test_affinity_drives_views_and_propensity_drives_purchases(medium: World) -> None:
    ev, t = medium.dataset.events, medium.truth
    imp = ev[ev["event"] == "impression"]
    seen = imp.merge(ev[ev["event"] == "view"][["request_id", "video_id"]].drop_duplicates(), how="left",
                     on=["request_id", "video_id"], indicator=True)["_merge"].eq("both").to_numpy()
    aff = t.pair_affinity(_rows(t.user_ids, imp["user_id"]), _rows(t.video_ids, imp["video_id"]))
    assert aff[seen].mean() > 1.5 * aff[~seen].mean()
    views, buys = ev[ev["event"] == "view"], ev[ev["event"] == "purchase"]
    prop = lambda df: t.pair_propensity(_rows(t.user_ids, df["user_id"]), _rows(t.video_ids, df["video_id"]))
    assert prop(buys).min() > 0 and prop(buys).mean() > 2.0 * prop(views).mean()


def test_matrix_truth_matches_pairwise_truth(world: World) -> None:
    t, rows = world.truth, np.array([0, 7, 42, 299])
    aff, prop = t.affinity(rows), t.purchase_propensity(rows)
    assert aff.shape == prop.shape == (4, SMALL.videos)
    users, videos = np.repeat(rows, SMALL.videos), np.tile(np.arange(SMALL.videos), 4)
    np.testing.assert_allclose(aff.ravel(), t.pair_affinity(users, videos))
    np.testing.assert_allclose(prop.ravel(), t.pair_propensity(users, videos))
    assert (prop[:, ~t.video_buyable] == 0).all()


def test_truth_round_trip(world: World, tmp_path: Path) -> None:
    world.truth.save(tmp_path)
    back = Truth.load(tmp_path)
    assert back.params == world.truth.params and back.price_ref == world.truth.price_ref
    np.testing.assert_array_equal(back.user_ids, world.truth.user_ids)
    np.testing.assert_array_equal(back.affinity(np.arange(20)), world.truth.affinity(np.arange(20)))
    assert (back.trust != world.truth.trust).nnz == 0


def test_truth_load_names_the_missing_file(world: World, tmp_path: Path) -> None:
    world.truth.save(tmp_path)
    (tmp_path / "truth" / "trust.npz").unlink()
    with pytest.raises(ArtifactError, match="trust.npz"):
        Truth.load(tmp_path)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_save_world_writes_every_table(world: World, tmp_path: Path, fmt: str) -> None:
    save_world(world, tmp_path, fmt=fmt)
    assert not list(tmp_path.rglob("*.tmp"))
    summary = json.loads((tmp_path / "world.json").read_text())
    assert summary["counts"]["events"] == world.dataset.events["event"].value_counts().to_dict()
    assert summary["params"]["users"] == SMALL.users
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    for name, df in _tables(world).items():
        back = read(tmp_path / f"{name}.{fmt}")
        assert list(back.columns) == list(df.columns) and len(back) == len(df), name
    if fmt == "parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "events.parquet"), world.dataset.events)
    else:
        first_ts = pd.read_csv(tmp_path / "events.csv", dtype=str)["ts"].iloc[0]
        assert first_ts.endswith("Z") and "T" in first_ts
        pd.testing.assert_frame_equal(load_dataset(tmp_path).events, world.dataset.events)
    assert Truth.load(tmp_path).params == SMALL


def test_save_world_rejects_unknown_format(world: World, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fmt"):
        save_world(world, tmp_path, fmt="xlsx")


@pytest.mark.parametrize("field, value", [
    ("users", 0), ("creators", -1), ("products", 0), ("videos", 0), ("days", 0), ("categories", 0),
    ("merchants", 0), ("seed", -1), ("users", 2.5), ("days", True), ("impressions_per_user_day", 0.0),
    ("impressions_per_user_day", float("nan")), ("start", "not a date"), ("creators", 301),
])
def test_params_validation_names_the_field(field: str, value: object) -> None:
    base = {"users": 300, "creators": 30}
    with pytest.raises(ConfigError, match=field):
        WorldParams(**{**base, field: value})


@settings(max_examples=8, deadline=None)
@given(users=st.integers(1, 40), creators=st.integers(1, 40), products=st.integers(1, 20),
       videos=st.integers(1, 30), days=st.integers(1, 3), categories=st.integers(1, 20), seed=st.integers(0, 2**32))
def test_tiny_worlds_keep_their_invariants(users: int, creators: int, products: int, videos: int, days: int,
                                           categories: int, seed: int) -> None:
    params = WorldParams(users=users, creators=min(creators, users), products=products, videos=videos, days=days,
                         categories=categories, merchants=3, seed=seed, impressions_per_user_day=20.0)
    w = generate_world(params)
    ev = w.dataset.events
    assert ev["event_id"].is_unique and ev["ts"].is_monotonic_increasing
    assert set(ev["video_id"]) <= set(w.dataset.videos["video_id"])
    assert set(ev["via_share_id"].dropna()) <= set(ev["share_id"].dropna())
    assert w.truth.affinity(np.arange(users)).shape == (users, videos)


def test_progress_reports_each_day(capsys: pytest.CaptureFixture[str]) -> None:
    generate_world(WorldParams(users=20, creators=2, products=5, videos=10, days=3), progress=True)
    assert capsys.readouterr().err.count("world: day") == 3


def test_numpy_sizes_are_accepted_as_plain_ints() -> None:
    params = WorldParams(users=np.int64(50), creators=np.int32(5), impressions_per_user_day=np.float32(2.0))
    assert type(params.users) is int and type(params.impressions_per_user_day) is float
    json.dumps(dataclasses.asdict(params))


def test_truth_load_names_a_corrupt_file(world: World, tmp_path: Path) -> None:
    world.truth.save(tmp_path)
    (tmp_path / "truth" / "arrays.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="arrays.npz"):
        Truth.load(tmp_path)
