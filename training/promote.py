"""Promotion through a gate: the challenger takes alias `champion` only if it beats the current champion on the
same evaluation (same data, split and positives: equal `eval_key` tags), or when forced. Every move of the
alias is recorded in the registered model's `champion_history` tag, so a rollback restores the previous one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from feed.errors import FeedError
from training.tracking import mlflow_name

DEFAULT_METRIC = "video.served.recall@20"  # the retriever the bundle serves (ALS, two-tower or blend)
HISTORY_TAG = "champion_history"


class PromotionRefused(FeedError):
    """The challenger did not pass the gate (the message says why)."""


@dataclass(frozen=True)
class Decision:
    """Outcome of a promotion or rollback."""

    promoted: bool
    reason: str
    version: str
    previous: str | None
    metric: str
    value: float | None = None
    champion_value: float | None = None


def promote(uri: str, name: str, version: str | None = None, alias: str = "champion",
            metric: str = DEFAULT_METRIC, force: bool = False) -> Decision:
    """Move `alias` to `version` (default: the newest) if it beats the current holder; records why."""
    client = _client(uri)
    challenger = client.get_model_version(name, version or _newest(client, name))
    champion = _holder(client, name, alias)
    decision = judge(client, challenger, champion, metric, force)
    _tag(client, challenger, decision)
    if not decision.promoted:
        raise PromotionRefused(f"{name} version {challenger.version} not promoted: {decision.reason}")
    move_alias(client, name, alias, str(challenger.version))
    return decision


def judge(client: Any, challenger: Any, champion: Any | None, metric: str, force: bool) -> Decision:
    """Decide whether the challenger may take the alias."""
    value = _metric(client, challenger, metric)
    if champion is None:
        return Decision(True, "no champion yet", str(challenger.version), None, metric, value)
    previous, champion_value = str(champion.version), _metric(client, champion, metric)
    if previous == str(challenger.version):
        return Decision(False, "it is already the champion", previous, previous, metric, value, champion_value)
    reason = _compare(challenger.tags.get("eval_key"), champion.tags.get("eval_key"), value, champion_value, metric)
    if force:
        return Decision(True, f"forced ({reason})", str(challenger.version), previous, metric, value, champion_value)
    return Decision(reason.startswith("better"), reason, str(challenger.version), previous, metric, value,
                    champion_value)


def _compare(key: str | None, champion_key: str | None, value: float | None, champion_value: float | None,
             metric: str) -> str:
    """Why the challenger wins or loses; 'better …' exactly when it wins."""
    if key is None or key != champion_key:
        return (f"not evaluated on the same data and protocol as the champion (eval_key {key} vs "
                f"{champion_key}); retrain on the same data, or use --force")
    if value is None or champion_value is None:
        return f"{metric} is missing for {'the challenger' if value is None else 'the champion'}"
    verdict = "better" if value > champion_value else "not better"
    return f"{verdict}: {metric} {value:.4f} vs champion {champion_value:.4f}"


def rollback(uri: str, name: str, alias: str = "champion") -> Decision:
    """Give the alias back to the version that held it before the current one."""
    client = _client(uri)
    history = _history(client, name)
    if len(history) < 2:
        raise PromotionRefused(f"{name}: no previous {alias} to roll back to (history {history})")
    current, previous = history[-1], history[-2]
    client.set_registered_model_alias(name, alias, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[:-1]))
    client.set_model_version_tag(name, current, "rollback", f"{_now()}: {alias} restored to version {previous}")
    return Decision(True, f"rolled back from version {current}", previous, current, "")


def move_alias(client: Any, name: str, alias: str, version: str) -> None:
    """Point the alias at a version and append it to the history."""
    client.set_registered_model_alias(name, alias, version)
    history = _history(client, name)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, version]))


def _history(client: Any, name: str) -> list[str]:
    """Versions that held the alias, oldest first."""
    return json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))


def _tag(client: Any, version: Any, decision: Decision) -> None:
    """Record the decision on the challenger version."""
    tags = {"promotion.decision": "promoted" if decision.promoted else "refused",
            "promotion.reason": decision.reason, "promotion.at": _now(),
            "promotion.previous_champion": decision.previous or ""}
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)


def _metric(client: Any, version: Any, metric: str) -> float | None:
    """The version's run metric (as logged by training). Runs from before the served retriever was recorded
    served ALS, so their `.als.` metric stands for a missing `.served.` one."""
    if not version.run_id:
        return None
    logged = client.get_run(version.run_id).data.metrics
    value = logged.get(mlflow_name(metric))
    if value is None and ".served." in metric:
        value = logged.get(mlflow_name(metric.replace(".served.", ".als.")))
    return value


def _holder(client: Any, name: str, alias: str) -> Any | None:
    """The version holding the alias, None when nobody does."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _newest(client: Any, name: str) -> str:
    """The highest version number of a registered model."""
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise FeedError(f"no registered model named {name!r}")
    return str(max(int(v.version) for v in versions))


def _client(uri: str) -> Any:
    """An MLflow client on the given store."""
    import mlflow

    return mlflow.MlflowClient(uri)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
