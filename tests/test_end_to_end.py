"""generate → train (MLflow on SQLite) → a real uvicorn server → HTTP feeds that follow true tastes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from feed.world import Truth
from tests.conftest import free_port

pytestmark = pytest.mark.slow
FEED = [str(Path(sys.executable).with_name("feed"))] if Path(sys.executable).with_name("feed").exists() \
    else [sys.executable, "-m", "feed.cli"]


def run(args: list[str], cwd: Path) -> str:
    out = subprocess.run(FEED + args, cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    run(["generate", "--out", "world", "--users", "1500", "--creators", "80", "--products", "300",
         "--videos", "600", "--days", "21", "--seed", "4"], work)
    run(["train", "--data", "world", "--out", "bundle", "--tracking-uri", uri], work)
    run(["db", "load", "--data", "world", "--with-events"], work)  # as `make demo` does
    port = free_port()
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(FEED + ["serve", "--tracking-uri", uri, "--port", str(port), "--log-format", "json"],
                              cwd=work,
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, work / "serve.log")
        yield work, base, server
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=30)
        log.close()
    assert code in (0, 130)  # uvicorn shuts down gracefully, then re-raises Ctrl+C: 130 by convention


def wait_ready(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server not ready: {log.read_text()[-3000:]}")


def test_serves_the_champion_and_prints_samples(served):
    work, base, _ = served
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["model_version"] == "selfretail-feed/1"
    deadline = time.monotonic() + 30
    while "API docs" not in (work / "serve.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = (work / "serve.log").read_text()
    assert f"{base}/docs" in log and "MLflow store: sqlite:///" in log and "GET /v1/users/" in log


def test_each_request_has_one_access_line(served):
    work, base, _ = served
    request_id = httpx.get(f"{base}/v1/users/nobody/feed").headers["x-request-id"]
    deadline, lines = time.monotonic() + 10, []
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in (work / "serve.log").read_text().splitlines() if line.startswith("{")]
        if any(line.get("request_id") == request_id for line in lines):
            break
        time.sleep(0.2)
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert [line["logger"] for line in mine] == ["serving.access"], mine
    assert mine[0]["route"] == "/v1/users/{user_id}/feed" and mine[0]["status"] == 200


def test_prints_a_working_dashboard_link_for_the_top_earner(served):
    work, base, _ = served
    deadline = time.monotonic() + 60
    while "Dashboard:" not in (work / "serve.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    link = next(line.split()[-1] for line in (work / "serve.log").read_text().splitlines()
                if line.startswith("Dashboard:"))
    path, token = link.removeprefix(base).split("#token=")
    creator = path.removeprefix("/creators/")
    assert httpx.get(f"{base}{path}").status_code == 200
    stats = httpx.get(f"{base}/v1/creators/{creator}/stats", headers={"Authorization": f"Bearer {token}"}).json()
    assert stats["totals"]["purchases"] > 0 and stats["totals"]["commission"]["total"]["accrued"] > 0


def test_feed_matches_a_strong_taste(served):
    work, base, _ = served
    truth = Truth.load(work / "world")
    manifest = json.loads((work / "bundle" / "manifest.json").read_text())
    active = set(manifest["sample_user_ids"])
    strong = np.argsort(-truth.taste.max(axis=1))
    video_cat = dict(zip(truth.video_ids, truth.video_category, strict=True))
    shares = []
    for u in strong[:40]:
        body = httpx.get(f"{base}/v1/users/{truth.user_ids[u]}/feed", params={"limit": 20}).json()
        if body["cold_start"]:
            continue
        top = truth.taste[u].argmax()
        shares.append(np.mean([video_cat[i["video_id"]] == top for i in body["items"]]))
        if len(shares) == 10:
            break
    assert len(shares) >= 5, active
    assert np.median(shares) > 0.5


def test_als_recall_is_at_least_twice_popularity(served):
    work, _, _ = served
    metrics = json.loads((work / "bundle" / "manifest.json").read_text())["metrics"]
    assert metrics["video.als.recall@20"] >= 2 * metrics["video.popularity.recall@20"]


def test_unknown_user_and_bad_limit_over_http(served):
    _, base, _ = served
    assert httpx.get(f"{base}/v1/users/nobody-at-all/feed").json()["cold_start"] is True
    assert httpx.get(f"{base}/v1/users/u1/feed", params={"limit": 0}).status_code == 422


def test_json_logs_carry_the_request_id_of_each_request(served):
    work, base, _ = served
    response = httpx.get(f"{base}/v1/users/nobody-at-all/feed", params={"limit": 3})
    request_id = response.headers["x-request-id"]
    assert response.json()["request_id"] == request_id  # the feed's id is the request's id
    deadline = time.monotonic() + 10
    while request_id not in (work / "serve.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    entries = [json.loads(line) for line in (work / "serve.log").read_text().splitlines() if line.startswith("{")]
    assert entries and all({"ts", "level", "logger", "message", "request_id"} <= set(e) for e in entries)
    access = [e for e in entries if e["request_id"] == request_id and e["logger"] == "serving.access"]
    assert access and access[-1]["route"] == "/v1/users/{user_id}/feed" and access[-1]["status"] == 200
    assert any(e["logger"].startswith("uvicorn") for e in entries)  # uvicorn's own lines are JSON too
