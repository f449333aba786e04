"""Default locations shared by training and serving (plain paths and URIs; imports no MLflow)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = Path(".mlflow")


def resolve_tracking_uri(configured: str | None = None) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else a SQLite file under ./.mlflow/."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(DEFAULT_STORE.resolve() / 'mlflow.db')}"
