"""Offline pipelines: configuration, training runs, evaluation and MLflow tracking."""
