"""The ranker's training task: labels, leakage, calibration, metrics; and the whole-feed replay evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from feed.dataset import build_catalog
from feed.features import FEATURES
from feed.ranker import HEADS
from feed.schema import Dataset
from training.config import load_config
from training.feed_eval import MODES, run_feed_evaluation
from training.ranker import _labels, auc, log_loss, platt, ranker_examples, train_ranker


def events_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["ts", "user_id", "video_id", "event", "watch_ms"])
    frame["ts"] = pd.to_datetime(frame["ts"], unit="h", utc=True).astype("datetime64[ms, UTC]")
    for column in ("event_id", "share_id", "via_share_id", "request_id", "order_id", "product_id"):
        frame[column] = pd.Series([pd.NA] * len(frame), dtype="str")
    frame["amount"] = np.nan
    frame["watch_ms"] = frame["watch_ms"].astype(np.float64)
    return frame


def test_labels_are_what_the_user_did_with_that_video():
    late = events_frame([
        (10, "a", "v1", "impression", np.nan), (10, "a", "v1", "view", 1000.0),
        (11, "a", "v2", "impression", np.nan), (11, "a", "v2", "share", np.nan),
        (12, "b", "v1", "impression", np.nan), (12, "b", "v1", "purchase", np.nan),
        (13, "b", "v2", "impression", np.nan), (13, "a", "v3", "purchase", np.nan)])
    videos = pd.DataFrame({"video_id": ["v1", "v2", "v3"], "creator_id": "c", "product_id": pd.NA,
                           "duration_ms": [1000.0, 1000.0, 1000.0],
                           "published_at": pd.Series([pd.NaT] * 3, dtype="datetime64[ms, UTC]")})
    catalog = build_catalog(Dataset(events=late, videos=videos))
    pairs = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "video": catalog.videos.rows(["v1", "v2", "v1", "v2"]),
                          "ts_ms": [0, 0, 0, 0]})
    labels = _labels(pairs, late, catalog, full_watch_ratio=0.9)
    assert HEADS == ("watch", "share", "purchase")
    np.testing.assert_array_equal(labels, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_auc_matches_counting_pairs():
    rng = np.random.default_rng(0)
    scores, labels = rng.random(300), (rng.random(300) < 0.3).astype(float)
    scores[:20] = 0.5  # ties count one half
    pos, neg = scores[labels == 1], scores[labels == 0]
    expected = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert auc(scores, labels) == pytest.approx(expected)
    assert np.isnan(auc(scores, np.zeros(300)))


def test_platt_recovers_a_known_calibration():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 200_000)
    labels = (rng.random(len(logits)) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))).astype(float)
    a, b = platt(logits, labels)
    assert a == pytest.approx(0.5, abs=0.02) and b == pytest.approx(-1.0, abs=0.03)
    calibrated = 1 / (1 + np.exp(-(a * logits + b)))
    assert log_loss(calibrated, labels) < log_loss(1 / (1 + np.exp(-logits)), labels)


@pytest.fixture(scope="module")
def trained(small_world, fast_config):
    ds = small_world.dataset
    return train_ranker(ds.events, build_catalog(ds), ds.follows, fast_config, progress=False)


def test_the_ranker_learns_from_impressions_and_is_calibrated(trained):
    ranker, metrics = trained
    assert ranker is not None and ranker.features == FEATURES
    assert metrics["ranker.watch.auc"] > 0.7  # what the user watches is predictable from history
    assert metrics["ranker.watch.logloss"] < metrics["ranker.watch.logloss_base_rate"]
    positives = metrics["ranker.watch.positives"] / metrics["ranker.n_test"]
    assert metrics["ranker.watch.mean_predicted"] == pytest.approx(positives, rel=0.35)


def test_features_come_only_from_before_the_labelled_period(small_world, fast_config):
    ds = small_world.dataset
    catalog = build_catalog(ds)
    examples = ranker_examples(ds.events, catalog, ds.follows, fast_config, progress=False)
    ts = ds.events["ts"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    cut = ts.min() + (1 - fast_config.ranker.label_fraction) * (ts.max() - ts.min())
    assert examples.ts.min() >= cut and np.all(np.diff(examples.ts) >= 0)
    # a user who first appears in the labelled period has no vector and no history features
    early_users = set(ds.events["user_id"][ts < cut])
    late_only = ~ds.events["user_id"].isin(early_users) & (ts >= cut)
    assert examples.x.shape[1] == len(FEATURES) and np.isfinite(examples.x).all()
    if late_only.any():
        activity = examples.x[:, FEATURES.index("log_user_activity")]
        assert (activity == 0).any()


def test_data_without_impressions_trains_on_pseudo_impressions(small_world, fast_config):
    ds = small_world.dataset
    events = ds.events[ds.events["event"] != "impression"]
    ranker, metrics = train_ranker(events, build_catalog(ds), ds.follows, fast_config, progress=False)
    assert ranker is not None and metrics["ranker.watch.auc"] > 0.6


def test_too_little_data_gives_no_ranker(fast_config):
    events = events_frame([(1, "a", "v1", "view", 1.0), (2, "a", "v2", "view", 1.0)])
    assert train_ranker(events, build_catalog(Dataset(events=events)), None, fast_config, False) == (None, {})


@pytest.fixture(scope="module")
def feed_report(small_world, fast_config):
    return run_feed_evaluation(small_world.dataset, fast_config, k=20, max_users=300)


def test_whole_feed_replay_compares_every_mode_on_the_same_users(feed_report):
    assert set(feed_report.modes) == set(MODES) and feed_report.n_users == 300
    assert feed_report.ranking_used == {"ranker": "ranker", "retrieval": "retrieval", "popularity": "popular"}
    for metrics in feed_report.modes.values():
        for name in ("purchase_recall@20", "share_recall@20", "engaged_recall@20", "creator_coverage"):
            assert 0.0 <= metrics[name] <= 1.0
    pop, ranker = feed_report.modes["popularity"], feed_report.modes["ranker"]
    assert ranker["creator_coverage"] > 2 * pop["creator_coverage"]  # personalization reaches many creators
    assert ranker["engaged_recall@20"] > pop["engaged_recall@20"]
    assert feed_report.ranker["ranker.watch.auc"] > 0.6


def test_feed_evaluate_cli_writes_json(small_world_dir, tmp_path):
    from feed.cli import cli as main

    out = tmp_path / "feed.json"
    result = CliRunner().invoke(main, ["evaluate", "--feed", "--data", str(small_world_dir), "--max-users", "100",
                                       "--set", "als.iterations=4", "--set", "ranker.epochs=3",
                                       "--json", str(out), "--no-track"])
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    assert set(body["modes"]) == set(MODES) and body["k"] == 20 and "purchase_recall@20" in body["modes"]["ranker"]
    assert "whole-feed replay" in result.output and "purchase_recall@20" in result.output


def test_feed_evaluate_refuses_other_splits(small_world_dir):
    from feed.cli import cli as main

    result = CliRunner().invoke(main, ["evaluate", "--feed", "--data", str(small_world_dir), "--split", "random"])
    assert result.exit_code == 2 and "--feed" in result.output


def test_config_rejects_a_commission_cap_of_one():
    from feed.errors import ConfigError

    with pytest.raises(ConfigError, match="commission_cap"):
        load_config(overrides={"ranker": {"value": {"commission_cap": 1.0}}}, environ={})


def test_actions_the_data_never_shows_get_a_head_that_predicts_almost_nothing(small_world, fast_config):
    ds = small_world.dataset
    views_only = ds.events[ds.events["event"].isin(["impression", "view"])]
    ranker, metrics = train_ranker(views_only, build_catalog(ds), ds.follows, fast_config, progress=False)
    assert ranker is not None and metrics["ranker.share.positives"] == 0 and np.isnan(metrics["ranker.share.auc"])
    assert metrics["ranker.purchase.mean_predicted"] < 1e-3 and metrics["ranker.watch.auc"] > 0.7


def test_labels_only_count_what_happened_after_the_impression():
    late = events_frame([
        (10, "a", "v1", "purchase", np.nan), (11, "a", "v1", "impression", np.nan),  # bought before: not a label
        (12, "b", "v1", "impression", np.nan), (13, "b", "v1", "purchase", np.nan)])
    videos = pd.DataFrame({"video_id": ["v1"], "creator_id": "c", "product_id": pd.NA, "duration_ms": [1000.0],
                           "published_at": pd.Series([pd.NaT], dtype="datetime64[ms, UTC]")})
    catalog = build_catalog(Dataset(events=late, videos=videos))
    hours = late["ts"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    pairs = pd.DataFrame({"user_id": ["a", "b"], "video": [0, 0], "ts_ms": [hours[1], hours[2]]})
    np.testing.assert_array_equal(_labels(pairs, late, catalog, 0.9)[:, 2], [0, 1])


def test_follows_made_after_the_cut_do_not_leak_into_features():
    from training.ranker import follows_before

    follows = pd.DataFrame({"user_id": ["a", "b", "c"], "creator_id": ["x", "x", "x"],
                            "ts": pd.to_datetime([1, 5, None], unit="D", utc=True)})
    kept = follows_before(follows, pd.Timestamp(3 * 86_400_000, unit="ms", tz="UTC"))
    assert list(kept["user_id"]) == ["a", "c"]
