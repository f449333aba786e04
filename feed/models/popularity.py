"""The most-popular baseline: every user gets the items most users interacted with."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp

from feed.errors import ArtifactError
from feed.models.base import ScoringRecommender


class PopularityRecommender(ScoringRecommender):
    """Ranks items by the number of distinct users who interacted with them."""

    def __init__(self) -> None:
        self.item_counts = np.zeros(0, dtype=np.float32)  # (n_items,)

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> Self:
        """Count distinct users per item."""
        self.item_counts = np.asarray((user_items > 0).sum(axis=0), dtype=np.float32).ravel()
        return self

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(n, n_items): every user gets the same popularity scores."""
        return np.broadcast_to(self.item_counts, (len(user_rows), len(self.item_counts)))

    def save(self, path: Path) -> None:
        """Write the counts to an .npz file."""
        np.savez(path, item_counts=self.item_counts)

    @classmethod
    def load(cls, path: Path) -> PopularityRecommender:
        """Read a model written by `save`."""
        model = cls()
        try:
            with np.load(path, allow_pickle=False) as data:
                model.item_counts = data["item_counts"]
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"cannot read popularity model: {exc}", path=str(path)) from exc
        return model
