"""Shared fixtures: a small synthetic world (known tastes), its trained bundle, free ports, dataset paths."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
SMALL_WORLD = dict(users=1000, creators=60, products=200, videos=500, days=21, seed=4)


@pytest.fixture(scope="session")
def small_world():
    """A small synthetic world whose true tastes are known."""
    from feed.world import WorldParams, generate_world

    return generate_world(WorldParams(**SMALL_WORLD))


@pytest.fixture(scope="session")
def small_world_dir(small_world, tmp_path_factory) -> Path:
    """The small world saved as a dataset folder (Parquet)."""
    from feed.world import save_world

    folder = tmp_path_factory.mktemp("world")
    save_world(small_world, folder, "parquet")
    return folder


@pytest.fixture(scope="session")
def fast_config():
    """A training config small enough for tests; MLflow off unless a test turns it on."""
    from training.config import load_config

    return load_config(overrides={"als": {"factors": 16, "iterations": 8}}, environ={})


@pytest.fixture(scope="session")
def small_bundle_dir(small_world_dir, fast_config, tmp_path_factory) -> Path:
    """A bundle trained on the small world, without MLflow."""
    from training.pipeline import run_training

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    run_training(small_world_dir, fast_config, out, track=False, quiet=True)
    return out


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
