"""`feed tune`: a small Bayesian search (Optuna TPE) over ALS hyperparameters and event weights.

Trials are scored on a validation split carved from the training side only (the split's own `valid` side, or
the last 20 % of the training period), so the test side stays untouched for the final comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from feed.dataset import Catalog
from feed.splits import Split, split_time
from training.config import TrainConfig, deep_merge
from training.evaluate import run_evaluation


@dataclass
class TuneResult:
    """The best trial and every trial's parameters and score."""

    best_config: TrainConfig
    best_value: float
    trials: list[dict[str, Any]]


def validation_split(split: Split) -> Split:
    """Train on the training side, score on its valid side, or on its own last 20 % of time."""
    if split.valid is not None and len(split.valid):
        return Split(train=split.train, test=split.valid, description=f"validation side of {split.description}")
    return split_time(split.train, fraction=0.2)


def suggest(trial: Any, tune_weights: bool) -> dict[str, Any]:
    """One trial's overrides of the config."""
    als = {"factors": trial.suggest_categorical("als.factors", [16, 32, 64, 128]),
           "regularization": trial.suggest_float("als.regularization", 1e-3, 1.0, log=True),
           "alpha": trial.suggest_float("als.alpha", 0.5, 50.0, log=True)}
    if not tune_weights:
        return {"als": als}
    weights = {name: trial.suggest_float(f"weights.{name}", low, high, log=True)
               for name, (low, high) in {"view": (0.1, 4.0), "cart": (0.5, 16.0), "purchase": (1.0, 64.0)}.items()}
    weights["refund"] = -weights["purchase"]
    return {"als": als, "weights": weights}


def tune(split: Split, catalog: Catalog, base: TrainConfig, trials: int, metric: str, tune_weights: bool = True,
         on_trial: Callable[[int, dict[str, Any], dict[str, float]], None] | None = None,
         mask_events: Sequence[str] = ()) -> TuneResult:
    """Run the search; `on_trial` sees every trial's overrides and metrics (for logging and progress).

    `mask_events` masks only training items with those event types, as in `run_evaluation`.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inner = validation_split(split)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=base.seed))
    records: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        overrides = suggest(trial, tune_weights)
        config = TrainConfig.model_validate(deep_merge(base.model_dump(), overrides))
        metrics = run_evaluation(inner, catalog, config, ["als"], mask_events=mask_events).models["als"]
        records.append({"number": trial.number, "overrides": overrides, "metrics": metrics})
        if on_trial:
            on_trial(trial.number, overrides, metrics)
        return metrics[metric]

    study.optimize(objective, n_trials=trials)
    best = records[study.best_trial.number]
    config = TrainConfig.model_validate(deep_merge(base.model_dump(), best["overrides"]))
    return TuneResult(config, study.best_value, records)


def write_config(config: TrainConfig, path: Path, header: str) -> None:
    """The resolved config as YAML, with a comment saying where it came from."""
    body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    Path(path).write_text(f"# {header}\n{body}")
