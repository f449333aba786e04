"""Shared fixtures: a small synthetic world (known tastes), its trained bundle, free ports, dataset paths."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ["FEED_CHECK_KERNEL_TYPES"] = "1"  # every bound kernel call checks its types (feed.kernels.base.Bound)

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


POSTGRES_URL = os.environ.get("FEED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_schemas():
    """A factory of PostgreSQL URLs, each on a new schema `feed_test_<uuid>`, all dropped at the end.

    PostgreSQL unreachable: the tests that need it are skipped with the reason, except under CI=true,
    where they fail (CI must exercise both databases)."""
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_URL, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL not reachable at {admin.url.render_as_string()}: {' '.join(str(exc.orig).split())}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    created: list[str] = []

    def new_schema() -> str:
        name = f"feed_test_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        created.append(name)
        url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
        return url.render_as_string(hide_password=False)

    yield new_schema
    with admin.begin() as conn:
        for name in created:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """An empty event store URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_schemas")()
