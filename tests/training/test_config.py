"""Layered, validated training config and its commented example."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from feed.errors import ConfigError
from training.config import TrainConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "train.yaml"


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("als: {factors: 8, iterations: 3}\nindex: {factory: HNSW32}\n")
    env = {"FEED_TRAIN__ALS__FACTORS": "16", "FEED_TRAIN__SPLIT__TEST_FRACTION": "0.1", "OTHER": "x"}
    config = load_config(path, {"als": {"factors": 32}}, env)
    assert config.als.factors == 32  # flag beats env beats file
    assert config.als.iterations == 3 and config.index.factory == "HNSW32"
    assert config.split.test_fraction == 0.1
    assert config.als.regularization == TrainConfig().als.regularization


def test_unknown_key_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("als: {factorz: 8}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: als.factorz"):
        load_config(path, environ={})


@pytest.mark.parametrize(("override", "message"), [
    ({"weights": {"purchse": 1.0}}, "unknown event types"),
    ({"weights": {"refund": 3.0}}, "refund cancels"),
    ({"split": {"test_fraction": 1.0}}, "split.test_fraction"),
    ({"relations": ["creator"]}, "must include 'video'"),
    ({"eval": {"ks": [0]}}, "positive integers"),
])
def test_invalid_values_are_explained(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=override, environ={})


def test_bad_yaml_and_missing_file_name_the_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("als: [unclosed\n")
    with pytest.raises(ConfigError, match="x.yaml: not valid YAML"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml", environ={})


def keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        nested = isinstance(value, dict) and key != "weights"
        out |= keys(value, f"{prefix}{key}.") if nested else {prefix + key}
    return out


def test_example_config_lists_every_key_with_its_default():
    example = yaml.safe_load(EXAMPLE.read_text())
    defaults = TrainConfig().model_dump(mode="json")
    assert keys(example) == keys(defaults)
    assert load_config(EXAMPLE, environ={}) == TrainConfig()


def test_digest_changes_with_the_config():
    assert TrainConfig().digest() == TrainConfig().digest()
    assert TrainConfig().digest() != load_config(overrides={"als": {"factors": 8}}, environ={}).digest()


def test_a_relation_index_overrides_the_default_and_unknown_relations_are_refused():
    config = load_config(overrides={"index": {"factory": "HNSW32", "relations": {
        "creator": {"factory": "IVF128,Flat", "search_params": "nprobe=32"}}}}, environ={})
    assert config.index.of("creator") == ("IVF128,Flat", "nprobe=32") and config.index.of("video") == ("HNSW32", "")
    with pytest.raises(ConfigError, match="relations"):
        load_config(overrides={"index": {"relations": {"merchant": {"factory": "Flat"}}}}, environ={})
