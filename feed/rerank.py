"""Assemble a page from scored candidates: caps per creator, product and merchant, MMR diversity, exploration slots.

`assemble` is greedy: at each position it takes the candidate with the best maximal-marginal-relevance score
λ·relevance − (1 − λ)·(max cosine to the videos already on the page) among those that keep every cap. It stops
only when the page is full or no candidate keeps the caps. Exploration slots are filled first (so they count
towards the caps) and then placed at their configured positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PageConfig:
    """Diversity caps, MMR trade-off and exploration slots of one page."""

    max_per_creator: int = 2
    max_per_product: int = 1
    max_per_merchant: int = 3
    mmr_lambda: float = 0.75  # 1 = relevance only
    pool: int = 200  # MMR looks at this many most relevant candidates (all of them if the caps need more)
    fresh_slot: bool = True
    fresh_position: int = 3  # 0-based
    new_creator_slot: bool = True
    new_creator_position: int = 6
    new_creator_max_views: float = 200.0  # creators with fewer training views than this are "new"
    explore_prior: tuple[float, float] = (1.0, 50.0)  # Beta pseudo-counts (purchases, views without purchase)


@dataclass
class PageInput:
    """Candidates of one request, aligned arrays of length n."""

    relevance: np.ndarray  # (n,) higher is better
    creator: np.ndarray  # (n,) int64 creator row, -1 unknown
    product: np.ndarray  # (n,) int64 product row, -1 none
    merchant: np.ndarray  # (n,) int64 merchant row, -1 unknown
    unit: np.ndarray  # (n, dim) unit video vectors (zero rows for videos without one)


class Caps:
    """Running counts per creator, product and merchant on the page being built."""

    def __init__(self, page: PageInput, config: PageConfig) -> None:
        self.allowed = np.ones(len(page.relevance), dtype=bool)  # (n,) may still be placed
        self.gate: np.ndarray | None = None  # (n,) MMR's λ·relevance, −inf where closed; replaces `allowed` once set
        # keys as Python lists too: one list lookup per placed video instead of a numpy scalar read
        self.groups = tuple((keys, keys.tolist(), cap, {}) for keys, cap in (
            (page.creator, config.max_per_creator), (page.product, config.max_per_product),
            (page.merchant, config.max_per_merchant)))  # (keys, key list, cap, key -> videos placed)

    def take(self, i: int) -> None:
        """Place candidate i; close every group it fills up (one array pass only when a group fills). Once MMR
        has set `gate`, only the gate is kept up to date (`allowed` is not read after that)."""
        target, closed = (self.allowed, False) if self.gate is None else (self.gate, -np.inf)
        target[i] = closed
        for keys, values, cap, counts in self.groups:
            key = values[i]
            if key < 0:
                continue
            placed = counts[key] = counts.get(key, 0) + 1
            if placed >= cap:
                target[keys == key] = closed


def assemble(page: PageInput, limit: int, config: PageConfig, slots: dict[int, int]) -> list[int]:
    """Candidate indices of the page in order; `slots` maps a position to a candidate index reserved for it."""
    caps = Caps(page, config)
    reserved: dict[int, int] = {}
    for position, i in sorted(slots.items()):
        if caps.allowed[i]:  # a candidate reserved twice, or breaking a cap, keeps only its first slot
            reserved[position] = i
            caps.take(i)
    chosen = _mmr(page, caps, limit - len(reserved), config.mmr_lambda, list(reserved.values()))
    for position, i in reserved.items():
        chosen.insert(min(position, len(chosen)), i)
    return chosen[:limit]


def _mmr(page: PageInput, caps: Caps, n: int, lam: float, placed: list[int]) -> list[int]:
    """Greedy MMR picks under the caps: score = λ·relevance − (1 − λ)·max_sim, −inf where a cap forbids."""
    chosen: list[int] = []
    if n <= 0 or len(page.relevance) == 0:
        return chosen
    max_sim = np.zeros(len(page.relevance))
    for i in placed:
        np.maximum(max_sim, page.unit @ page.unit[i], out=max_sim)
    # λ·relevance where allowed, −inf elsewhere; Caps.take keeps it in step, so a pick costs a few array ops
    caps.gate = np.where(caps.allowed, lam * _normalized(page.relevance), -np.inf)
    score = np.empty(len(max_sim))
    while len(chosen) < n:
        np.subtract(caps.gate, np.multiply(max_sim, 1.0 - lam, out=score), out=score)
        i = int(score.argmax())
        if not math.isfinite(score[i]):
            break
        chosen.append(i)
        caps.take(i)
        np.maximum(max_sim, page.unit @ page.unit[i], out=max_sim)
    return chosen


def _normalized(values: np.ndarray) -> np.ndarray:
    """Values scaled to [0, 1] (all 1 when they are equal)."""
    if len(values) == 0:
        return values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high - low <= 0:
        return np.ones(len(values))
    return (values - low) / (high - low)


def thompson_pick(purchases: np.ndarray, views: np.ndarray, prior: tuple[float, float],
                  rng: np.random.Generator) -> int:
    """Index of the arm with the largest draw from Beta(purchases + a, views − purchases + b); -1 when empty."""
    if len(views) == 0:
        return -1
    failures = np.maximum(views - purchases, 0.0)
    return int(np.argmax(rng.beta(purchases + prior[0], failures + prior[1])))
