"""The ranker: p(watch-through), p(share) and p(purchase) per candidate, and the value formula that combines them.

The model is a small multi-task network (standardized features → one ReLU layer → one logit per action), each
head calibrated with Platt scaling on a later validation period. It is trained by `training.ranker` with torch
and shipped in the bundle as plain arrays (`ranker.npz`), so serving runs it with numpy: no torch on the
request path.

Value of a candidate (formula version 1, weights from config):

    base  = w_watch·p(watch) + w_share·p(share) + w_purchase·p(purchase) + λ·p(purchase)·price
    comm  = γ·p(purchase)·price·commission_rate, capped at cap/(1 − cap)·base
    value = base + comm

so the commission term is at most `cap` of a candidate's value: a high commission can tip a close call but can
never buy placement for a video the user is unlikely to want.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feed.kernels import scoring
from feed.errors import ArtifactError
from feed.features import FEATURES

HEADS: tuple[str, ...] = ("watch", "share", "purchase")
CLIP = 8.0  # standardized inputs are clipped to ±CLIP
VALUE_FORMULA_VERSION = 1


@dataclass(frozen=True)
class ValueFormula:
    """How predicted actions become one value per candidate (see the module docstring)."""

    version: int = VALUE_FORMULA_VERSION
    weights: dict[str, float] = field(default_factory=lambda: {"watch": 1.0, "share": 4.0, "purchase": 40.0})
    price_weight: float = 0.2  # λ: expected GMV per unit of price
    commission_weight: float = 1.0  # γ
    commission_cap: float = 0.1  # the commission term's largest share of the value

    def value(self, probs: np.ndarray, price: np.ndarray, commission: np.ndarray) -> np.ndarray:
        """(n,) value of candidates from (n, 3) probabilities in HEADS order, prices and commission rates."""
        return scoring.value(self.numbers(), np.ascontiguousarray(probs, dtype=np.float32),
                             np.ascontiguousarray(price, dtype=np.float32),
                             np.ascontiguousarray(commission, dtype=np.float32))

    def numbers(self, ranker: Ranker | None = None, mode: int = scoring.RANKER, ranker_weight: float = 0.5,
                rank_k: float = 10.0) -> scoring.Model:
        """The formula (and a ranker's arrays, zeros without one) as the ranking kernel reads them."""
        network = ranker.arrays() if ranker is not None else _NO_NETWORK
        return scoring.Model(network, CLIP, np.array([self.weights.get(h, 0.0) for h in HEADS], dtype=np.float32),
                             HEADS.index("purchase"), float(self.price_weight), float(self.commission_weight),
                             float(self.commission_cap), int(mode), float(ranker_weight), float(rank_k))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the manifest."""
        return {"version": self.version, "weights": dict(self.weights), "price_weight": self.price_weight,
                "commission_weight": self.commission_weight, "commission_cap": self.commission_cap}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValueFormula:
        """The formula recorded in a manifest."""
        return cls(int(data["version"]), dict(data["weights"]), float(data["price_weight"]),
                   float(data["commission_weight"]), float(data["commission_cap"]))


@dataclass
class Ranker:
    """Standardize → ReLU layer → logits per head → Platt calibration → probabilities."""

    features: tuple[str, ...]
    mean: np.ndarray  # (n_features,)
    scale: np.ndarray  # (n_features,)
    w1: np.ndarray  # (n_features, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden, n_heads)
    b2: np.ndarray  # (n_heads,)
    calib_a: np.ndarray = field(default_factory=lambda: np.ones(len(HEADS), np.float32))  # (n_heads,)
    calib_b: np.ndarray = field(default_factory=lambda: np.zeros(len(HEADS), np.float32))  # (n_heads,)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(n, n_heads) uncalibrated logits of (n, n_features) features."""
        if len(x) == 0:
            return np.zeros((0, len(HEADS)), dtype=np.float32)
        return scoring.logits(np.ascontiguousarray(x, dtype=np.float32), self.arrays(), CLIP)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, n_heads) calibrated probabilities in HEADS order (standardized inputs are clipped: a value far
        outside what training saw must not saturate the network)."""
        if len(x) == 0:
            return np.zeros((0, len(HEADS)), dtype=np.float32)
        return scoring.predict(np.ascontiguousarray(x, dtype=np.float32), self.arrays(), CLIP)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """mean, scale, w1, b1, w2, b2, calib_a, calib_b as C-contiguous float32 (what the kernel reads)."""
        return tuple(np.ascontiguousarray(getattr(self, k), dtype=np.float32) for k in _ARRAYS)

    def save(self, path: Path) -> None:
        """Write the arrays (and feature names) to one npz."""
        np.savez(path, features=np.array(self.features), **{k: getattr(self, k) for k in _ARRAYS})

    @classmethod
    def load(cls, path: Path) -> Ranker:
        """Read a ranker written by `save`; its features must be the ones this version computes."""
        try:
            with np.load(path, allow_pickle=False) as data:
                names = tuple(str(f) for f in data["features"])
                arrays = {k: data[k].astype(np.float32) for k in _ARRAYS}
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"cannot read the ranker ({exc})", path=str(path)) from exc
        if names != FEATURES:
            raise ArtifactError(f"ranker was trained on features {list(names)}, this version computes "
                                f"{list(FEATURES)}; retrain", path=str(path))
        ranker = cls(names, **arrays)
        if ranker.w1.shape != (len(names), ranker.b1.shape[0]) or ranker.w2.shape != (ranker.b1.shape[0], len(HEADS)):
            raise ArtifactError(f"inconsistent layer shapes {ranker.w1.shape} and {ranker.w2.shape}", path=str(path))
        return ranker


_ARRAYS = ("mean", "scale", "w1", "b1", "w2", "b2", "calib_a", "calib_b")
_NO_NETWORK = tuple(np.zeros(shape, dtype=np.float32) for shape in (
    (len(FEATURES),), (len(FEATURES),), (len(FEATURES), 1), (1,), (1, len(HEADS)), (len(HEADS),), (len(HEADS),),
    (len(HEADS),)))
