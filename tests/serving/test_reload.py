"""Hot reload against a real uvicorn server under concurrent requests: no failed request during a swap,
a broken version is refused while the old one keeps serving, and polling notices an alias move."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import mlflow
import pytest

from feed.bundle import load_bundle
from tests.conftest import free_port
from training import tracking
from training.config import load_config
from training.pipeline import TrainResult, track_run
from training.promote import move_alias

pytestmark = pytest.mark.slow
TOKEN = "s3cret-admin-token"
MODEL = "selfretail-feed"


def register(bundle_dir: Path, uri: str) -> str:
    """Log a bundle as a new run and version, and point @champion at it."""
    config = load_config(overrides={"mlflow": {"tracking_uri": uri, "promote": "always"}}, environ={})
    result = TrainResult(bundle_dir, {"video.als.recall@20": 0.1})
    track_run(result, load_bundle(bundle_dir), config)
    return f"{MODEL}/{result.model_version}"


def register_broken(bundle_dir: Path, uri: str, tmp: Path) -> str:
    """A version whose artifacts fail the bundle's hash check."""
    broken = tmp / "broken"
    shutil.copytree(bundle_dir, broken)
    (broken / "factors_video.npz").write_bytes(b"corrupted")
    run_id, source = tracking.log_training_run(uri, "selfretail-feed", {}, {}, broken, {})
    version = tracking.register_version(uri, MODEL, source, run_id, {})
    move_alias(mlflow.MlflowClient(uri), MODEL, "champion", version)
    return f"{MODEL}/{version}"


class Load:
    """Threads requesting feeds until stopped, counting statuses and served versions."""

    def __init__(self, base: str, users: list[str], threads: int = 4) -> None:
        self.base, self.users, self.stop = base, users, threading.Event()
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, seed: int) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            i = seed
            while not self.stop.is_set():
                try:
                    r = client.get(f"/v1/users/{self.users[i % len(self.users)]}/feed", params={"limit": 10})
                    self.statuses[r.status_code] += 1
                    self.versions[r.headers.get("X-Model-Version", "?")] += 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                i += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture
def server(small_bundle_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = register(small_bundle_dir, uri)
    port = free_port()
    env = {**os.environ, "FEED_SERVE_ADMIN_TOKEN": TOKEN, "FEED_SERVE_CACHE_DIR": str(tmp_path / "cache"),
           "FEED_SERVE_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "feed.cli", "serve", "--tracking-uri", uri, "--port", str(port),
                             "--no-sample", "--reload-interval", "0.5", "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, proc, tmp_path / "serve.log")
        yield base, uri, first
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        log.close()


def wait_for(check, proc: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out; server log: {log.read_text()[-3000:]}")


def admin_reload(base: str, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{base}/v1/admin/reload", headers=headers, timeout=60)


def test_swap_under_load_refuse_broken_and_poll(server, small_bundle_dir, tmp_path):
    base, uri, first = server
    users = list(load_bundle(small_bundle_dir).users.ids[:50]) + ["cold-user"]
    assert httpx.get(f"{base}/readyz").json()["model_version"] == first
    with Load(base, users) as load:
        time.sleep(1.0)
        second = register(small_bundle_dir, uri)
        body = admin_reload(base).json()  # the 0.5 s poller may have swapped first: then it is "unchanged"
        assert body["status"] in ("reloaded", "unchanged") and body["version"] == second
        time.sleep(1.0)
        broken = register_broken(small_bundle_dir, uri, tmp_path)
        body = admin_reload(base).json()
        assert body["status"] == "refused" and body["target"] == broken and body["version"] == second
        assert "factors_video.npz" in body["error"]
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["model_version"] == second and "factors_video.npz" in ready["last_reload_error"]
        time.sleep(1.0)
    assert load.errors == [] and set(load.statuses) == {200}
    assert load.versions[first] > 0 and load.versions[second] > 0 and broken not in load.versions
    mlflow.MlflowClient(uri).set_registered_model_alias(MODEL, "champion", first.split("/")[1])
    deadline = time.monotonic() + 15
    while httpx.get(f"{base}/readyz").json()["model_version"] != first:
        assert time.monotonic() < deadline, "the poller did not notice the alias move"
        time.sleep(0.2)


def test_admin_reload_needs_the_token(server):
    base, _, first = server
    assert admin_reload(base, token=None).status_code == 401
    assert admin_reload(base, token="wrong").status_code == 401
    body = admin_reload(base).json()
    assert body == {"status": "unchanged", "version": first, "target": first, "error": None}
