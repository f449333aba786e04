"""Assemble a page from scored candidates: caps per creator, product and merchant, MMR diversity, exploration slots.

`assemble` is greedy: at each position it takes the candidate with the best maximal-marginal-relevance score
λ·relevance − (1 − λ)·(max cosine to the videos already on the page) among those that keep every cap. It stops
only when the page is full or no candidate keeps the caps. Exploration slots are filled first (so they count
towards the caps) and then placed at their configured positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feed.kernels import page as kernel
from feed.kernels import sources


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

    def numbers(self) -> kernel.Config:
        """The settings as the page kernel reads them."""
        return kernel.Config(caps_of(self), float(self.mmr_lambda), int(self.pool), bool(self.fresh_slot),
                             int(self.fresh_position), bool(self.new_creator_slot), int(self.new_creator_position))


@dataclass
class PageInput:
    """Candidates of one request, aligned arrays of length n."""

    relevance: np.ndarray  # (n,) higher is better
    creator: np.ndarray  # (n,) int64 creator row, -1 unknown
    product: np.ndarray  # (n,) int64 product row, -1 none
    merchant: np.ndarray  # (n,) int64 merchant row, -1 unknown
    unit: np.ndarray  # (n, dim) unit video vectors (zero rows for videos without one)


def assemble(page: PageInput, limit: int, config: PageConfig, slots: dict[int, int]) -> list[int]:
    """Candidate indices of the page in order; `slots` maps a position to a candidate index reserved for it."""
    n, positions = len(page.relevance), sorted(slots)
    keys = np.vstack([page.creator, page.product, page.merchant]).astype(np.int64).reshape(3, n)
    unit = np.ascontiguousarray(page.unit, dtype=np.float32)
    unit = unit.reshape(n, -1) if unit.ndim != 2 else unit
    chosen = kernel.assemble(
        np.ascontiguousarray(page.relevance, dtype=np.float64), keys, caps_of(config), unit,
        np.ones(n, dtype=np.float32), int(limit), float(config.mmr_lambda), np.array(positions, dtype=np.int64),
        np.array([slots[p] for p in positions], dtype=np.int64))
    return chosen.tolist()


def caps_of(config: PageConfig) -> np.ndarray:
    """(3,) the most videos of one creator, one product and one merchant on a page."""
    return np.array([config.max_per_creator, config.max_per_product, config.max_per_merchant], dtype=np.int64)


def thompson_pick(purchases: np.ndarray, views: np.ndarray, prior: tuple[float, float], seed: int) -> int:
    """Index of the arm with the largest draw from Beta(purchases + a, views − purchases + b), the draws seeded by
    `seed` (the same seed, the same pick); -1 when there is no arm."""
    return int(sources.thompson_pick(np.asarray(purchases, dtype=np.float64), np.asarray(views, dtype=np.float64),
                                     float(prior[0]), float(prior[1]), int(seed) & 0xFFFFFFFF))
