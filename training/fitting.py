"""Model fitting shared by the training pipeline and the ranker's feature models."""

from __future__ import annotations

from feed.dataset import Interactions
from feed.models.als import ALSRecommender
from training.config import TrainConfig


def als(config: TrainConfig) -> ALSRecommender:
    """An unfitted ALS model from the config."""
    return ALSRecommender(**config.als.model_dump(), random_state=config.seed, num_threads=config.threads)


def fitted_relations(data: Interactions, config: TrainConfig) -> list[str]:
    """Configured relations that the data supports (creator/product need a catalog with interactions)."""
    return [r for r in config.relations if r in data.matrices and data.matrices[r].nnz > 0]


def fit_factors(data: Interactions, config: TrainConfig, progress: bool) -> dict[str, ALSRecommender]:
    """ALS fitted on every supported relation."""
    return {r: als(config).fit(data.matrices[r], show_progress=progress) for r in fitted_relations(data, config)}
