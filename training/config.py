"""Typed, layered training configuration: defaults < YAML file < FEED_TRAIN__* environment < CLI flags."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from feed.dataset import RELATIONS
from feed.errors import ConfigError
from feed.schema import EVENT_TYPES

ENV_PREFIX = "FEED_TRAIN__"


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ALSConfig(Strict):
    """implicit ALS hyperparameters, shared by the video, creator and product relations."""

    factors: int = Field(32, ge=2, le=1024)
    regularization: float = Field(0.05, ge=0.0)
    alpha: float = Field(2.0, gt=0.0)
    iterations: int = Field(15, ge=1, le=500)


class TwoTowerConfig(Strict):
    """The torch two-tower model (feed.models.two_tower) and its training loop (training.two_tower)."""

    dim: int = Field(64, ge=2, le=1024, description="Embedding size of users, videos, creators and products.")
    user_id: bool = Field(False, description="A per-user id embedding next to the pooled history.")
    normalize: bool = Field(True, description="Unit vectors: scores are cosines divided by the temperature.")
    price_buckets: int = Field(8, ge=1, le=256, description="Quantile buckets of product prices.")
    repeat: float = Field(0.0, ge=0.0, description="Score bonus of items already in the user's history (not masked); "
                                                   "with unit vectors, 2 puts every such item first.")
    epochs: int = Field(40, ge=1, le=1000, description="Most epochs; early stopping usually ends sooner.")
    patience: int = Field(3, ge=1, description="Stop after this many epochs without a better validation recall.")
    batch_size: int = Field(1024, ge=8, description="(user, item) pairs per step: the in-batch negatives.")
    learning_rate: float = Field(0.01, gt=0.0, description="SparseAdam on embeddings, Adam on the dense layer.")
    temperature: float = Field(0.2, gt=0.0, description="Logits are scores / temperature.")
    logq: float = Field(1.0, ge=0.0, le=1.0, description="Strength of the log-Q popularity correction.")
    uniform_negatives: int = Field(0, ge=0, description="Extra uniformly sampled negatives shared by a batch.")
    history_max: int = Field(50, ge=1, description="Expected history items pooled per training example.")
    history_dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Share of history items dropped per example.")
    exclude_target: float = Field(1.0, ge=0.0, le=1.0,
                                  description="Probability that an example's target is left out of its history.")
    user_id_dropout: float = Field(0.2, ge=0.0, le=1.0,
                                   description="Share of examples trained without the user id (the cold path).")
    weight_power: float = Field(0.5, ge=0.0, le=2.0,
                                description="An example counts (summed event weight) ** this in the loss.")
    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0,
                                  description="Share of each user's items held out for early stopping.")
    valid_users: int = Field(3000, ge=10, description="Most users scored per validation (a seeded sample).")
    refit: bool = Field(True, description="After early stopping, retrain on every item for the best epoch count.")
    blend_weights: tuple[float, ...] = Field((0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0),
                                             description="Two-tower weights tried by the ALS+two-tower blend.")


class RelationIndex(Strict):
    """One relation's FAISS index, when it differs from the default."""

    factory: str
    search_params: str = ""


class IndexConfig(Strict):
    """FAISS index per relation, as a factory string plus search-time parameters."""

    factory: str = "Flat"
    search_params: str = ""
    # relation -> its own index: catalogs of creators, products and videos differ in size by 10x or more, and an
    # index that recalls 0.98 of one may recall 0.7 of another (benchmarks/bench_relation_index.py)
    relations: dict[Literal["video", "creator", "product"], RelationIndex] = Field(default_factory=dict)
    # each video's nearest videos, stored in the bundle: the session source reads them instead of searching
    neighbours: int = Field(40, ge=0, le=1000)

    def of(self, relation: str) -> tuple[str, str]:
        """(factory, search_params) of a relation's index."""
        own = self.relations.get(relation)
        return (own.factory, own.search_params) if own else (self.factory, self.search_params)

    def key_of(self, relation: str) -> str:
        """Where a relation's index is configured (for errors): `index.relations.<relation>` or `index`."""
        return f"index.relations.{relation}" if relation in self.relations else "index"


class SplitConfig(Strict):
    """One time cut-off for every event type."""

    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)


DEFAULT_WEIGHTS = {"impression": 0.0, "view": 1.0, "like": 2.0, "share": 4.0, "cart": 3.0,
                   "purchase": 8.0, "refund": -8.0}


def _known_event_weights(weights: dict[str, float]) -> dict[str, float]:
    """Every event type with a weight (0 when not given); unknown types are errors."""
    unknown = sorted(set(weights) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown event types {unknown}; expected some of {list(EVENT_TYPES)}")
    return {**{e: 0.0 for e in EVENT_TYPES}, **weights}


class EvalConfig(Strict):
    """Full-ranking evaluation on the held-out period.

    Held-out positives are defined by these weights, not the training weights, so that changing how a model
    weighs events never changes the test set it is judged on.
    """

    ks: tuple[int, ...] = (10, 20, 50)
    min_weight: float = Field(1.0, gt=0.0)
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @field_validator("weights")
    @classmethod
    def _known_events(cls, weights: dict[str, float]) -> dict[str, float]:
        return _known_event_weights(weights)

    @field_validator("ks")
    @classmethod
    def _positive_sorted(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must be a non-empty list of positive integers")
        return tuple(sorted(set(ks)))


class FeaturesConfig(Strict):
    """Counts, trends and user context stored with the model for candidates and ranking features."""

    half_life_days: float = Field(3.0, gt=0.0, description="Trend decay: activity counts half after this long.")
    segments: int = Field(8, ge=0, le=256, description="User segments for conversion 'among users like you'.")
    recent: int = Field(5, ge=1, le=100, description="Latest videos kept per user for the session source.")
    prior_strength: float = Field(20.0, ge=0.0, description="Pseudo-events shrinking rates to the global rate.")


class ValueConfig(Strict):
    """The versioned value formula: Σ w·p(action) + λ·p(purchase)·price + capped commission term."""

    version: int = Field(1, ge=1)
    weights: dict[Literal["watch", "share", "purchase"], float] = Field(
        default_factory=lambda: {"watch": 1.0, "share": 4.0, "purchase": 40.0})
    price_weight: float = Field(0.2, ge=0.0)
    commission_weight: float = Field(1.0, ge=0.0)
    commission_cap: float = Field(0.1, ge=0.0, lt=1.0, description="Largest share of the value commission can add.")


class RankerConfig(Strict):
    """The ranker: trained on logged impressions of the last part of the training window."""

    enabled: bool = True
    label_fraction: float = Field(0.3, gt=0.0, lt=1.0,
                                  description="Latest share of the window whose impressions are examples; "
                                              "features come from a model fitted on the part before it.")
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Latest examples: calibration, test.")
    hidden: int = Field(32, ge=1, le=1024)
    epochs: int = Field(40, ge=1, le=1000)
    patience: int = Field(3, ge=1)
    batch_size: int = Field(4096, ge=16)
    learning_rate: float = Field(3e-3, gt=0.0)
    max_examples: int = Field(2_000_000, ge=1000, description="Older examples are dropped beyond this many.")
    pseudo_negatives: int = Field(4, ge=1, description="Without logged impressions: random unshown videos per "
                                                       "engaged one, as negatives.")
    value: ValueConfig = ValueConfig()


class MlflowConfig(Strict):
    """Where runs are tracked and under which name the model is registered."""

    tracking_uri: str | None = None
    experiment: str = "selfretail-feed"
    registered_model: str = "selfretail-feed"
    alias: str = "champion"
    register_model: bool = True
    promote: Literal["gate", "always", "never"] = "gate"


class TrainConfig(Strict):
    """Everything a training run needs besides the data."""

    seed: int = 0
    threads: int = Field(0, ge=0)
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    full_watch_ratio: float = Field(0.9, gt=0.0, le=1.0)
    relations: tuple[str, ...] = RELATIONS
    refit_full: bool = True
    retriever: Literal["als", "two-tower", "auto"] = Field(
        "auto", description="What each relation's FAISS index serves: ALS, the two-tower model, or (auto) ALS, "
                            "two-tower or their blend, whichever wins on the two-tower's validation hold-out.")
    als: ALSConfig = ALSConfig()
    two_tower: TwoTowerConfig = TwoTowerConfig()
    index: IndexConfig = IndexConfig()
    split: SplitConfig = SplitConfig()
    eval: EvalConfig = EvalConfig()
    features: FeaturesConfig = FeaturesConfig()
    ranker: RankerConfig = RankerConfig()
    mlflow: MlflowConfig = MlflowConfig()

    @field_validator("weights")
    @classmethod
    def _known_events(cls, weights: dict[str, float]) -> dict[str, float]:
        return _known_event_weights(weights)

    @field_validator("relations")
    @classmethod
    def _known_relations(cls, relations: tuple[str, ...]) -> tuple[str, ...]:
        if "video" not in relations or set(relations) - set(RELATIONS):
            raise ValueError(f"relations must include 'video' and be among {list(RELATIONS)}")
        return relations

    @model_validator(mode="after")
    def _refund_cancels(self) -> TrainConfig:
        if self.weights["purchase"] <= 0 or self.weights["refund"] > 0:
            raise ValueError("weights.purchase must be > 0 and weights.refund ≤ 0 (a refund cancels a purchase)")
        return self

    def digest(self) -> str:
        """Stable short hash of the resolved config."""
        return _short_hash(self.model_dump(mode="json"))

    def eval_key(self, data_fingerprint: str) -> str:
        """Identifies the evaluation protocol: same data, same split, same positives and cut-offs."""
        return _short_hash({"data": data_fingerprint, "split": self.split.model_dump(mode="json"),
                            "eval": self.eval.model_dump(mode="json")})


def _short_hash(value: object) -> str:
    """12 hex digits of the sha256 of a JSON value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TrainConfig:
    """Resolve defaults < YAML < environment < overrides into a validated TrainConfig."""
    layers = [_read_yaml(path) if path else {}, env_layer(os.environ if environ is None else environ),
              dict(overrides or {})]
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from exc


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a file, errors naming it."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested overrides from variables such as FEED_TRAIN__ALS__FACTORS=32 (values parsed as YAML)."""
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX):
            keys = name[len(ENV_PREFIX):].lower().split("__")
            layer = deep_merge(layer, nest(keys, yaml.safe_load(raw)))
    return layer


def dotted(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """Nested overrides from dotted keys, e.g. {'als.factors': 32}."""
    layer: dict[str, Any] = {}
    for key, value in pairs.items():
        layer = deep_merge(layer, nest(key.split("."), value))
    return layer


def nest(keys: list[str], value: Any) -> dict[str, Any]:
    """{'a': {'b': value}} from ['a', 'b']."""
    for key in reversed(keys):
        value = {key: value}
    return value


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of base with top's keys laid over it, recursively for mappings."""
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(merged.get(key), dict) and isinstance(value, Mapping)
        merged[key] = deep_merge(merged[key], value) if both else value
    return merged


def _explain(exc: ValidationError, path: Path | None) -> str:
    """One line per invalid key, naming where the config came from."""
    where = f"{path}: " if path else ""
    lines = [f"{where}{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
    return "invalid training config:\n  " + "\n  ".join(lines)
