"""Two `feed serve` processes share one PostgreSQL store: what one replica is told changes what the other serves
(real-time history, purchases, blocks, new users), and both ledger workers together keep one exact ledger."""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest

from feed.bundle import load_bundle
from tests.conftest import free_port
from tests.serving.test_durability import Server

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": "Bearer admin-token-for-the-replica-test"}


@pytest.fixture(scope="module")
def replicas(small_bundle_dir, postgres_schemas, tmp_path_factory):
    url = postgres_schemas()
    logs = tmp_path_factory.mktemp("replicas")
    servers = [Server(small_bundle_dir, url, free_port(), logs / f"replica{i}.log") for i in range(2)]
    for server in servers:
        server.env.update({"FEED_SERVE_ADMIN_TOKEN": ADMIN["Authorization"].split()[1],
                           "FEED_SERVE_CATALOG_REFRESH_S": "0.2", "FEED_SERVE_LEDGER_INTERVAL_S": "0.2"})
        server.start()
    yield servers
    for server in servers:
        server.stop()


def feed(base: str, user: str, **params) -> dict:
    response = httpx.get(f"{base}/v1/users/{user}/feed", params={"limit": 20, "seed": 7, **params}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def post(base: str, events: list[dict]) -> None:
    response = httpx.post(f"{base}/v1/events", json=events, timeout=30)
    assert response.status_code == 200, response.text


def test_a_purchase_posted_to_one_replica_changes_the_feed_served_by_the_other(replicas, small_bundle_dir):
    a, b = (s.base for s in replicas)
    user = load_bundle(small_bundle_dir).manifest["sample_user_ids"][0]
    before = feed(b.removeprefix(""), user)
    bought = before["items"][0]
    assert bought["product"] is not None
    post(a, [{"event_id": "replica-buy-1", "ts": int(time.time() * 1000), "user_id": user,
              "video_id": bought["video_id"], "event": "purchase", "order_id": "replica-o1", "amount": 12.5,
              "product_id": bought["product"]["product_id"]}])
    after = feed(b, user)  # the other replica, at once: the store is read per request
    assert bought["video_id"] not in [i["video_id"] for i in after["items"]]
    assert bought["product"]["product_id"] not in [(i["product"] or {}).get("product_id") for i in after["items"]]


def test_a_block_and_a_new_user_are_seen_by_the_other_replica(replicas, small_bundle_dir):
    a, b = (s.base for s in replicas)
    user = load_bundle(small_bundle_dir).manifest["sample_user_ids"][1]
    creator = feed(b, user)["items"][0]["creator_id"]
    assert httpx.put(f"{a}/v1/users/{user}/blocks/{creator}", headers=ADMIN).status_code == 200
    assert creator not in [i["creator_id"] for i in feed(b, user)["items"]]

    assert feed(b, "replica-newcomer")["cold_start"] is True
    video = feed(b, user)["items"][0]["video_id"]
    post(a, [{"event_id": f"replica-view-{i}", "ts": int(time.time() * 1000) + i, "user_id": "replica-newcomer",
              "video_id": video, "event": "view", "watch_ms": 60_000} for i in range(3)])
    assert feed(b, "replica-newcomer")["cold_start"] is False


def test_both_ledger_workers_keep_one_exact_ledger(replicas):
    a, b = (s.base for s in replicas)
    video = {"creator_id": "replica-creator", "product_id": "replica-p"}
    assert httpx.put(f"{a}/v1/products/replica-p", json={"merchant_id": "m", "commission_rate": 0.1},
                     headers=ADMIN).status_code == 200
    assert httpx.put(f"{a}/v1/videos/replica-v", json=video, headers=ADMIN).status_code == 200
    now = int(time.time() * 1000)
    for i, base in enumerate((a, b) * 10):  # purchases land on both replicas; both workers process
        post(base, [{"event_id": f"replica-ledger-{i}", "ts": now + i, "user_id": f"buyer{i}", "video_id": "replica-v",
                     "event": "purchase", "order_id": f"replica-lo{i}", "amount": 10.0}])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = httpx.get(f"{b}/v1/creators/replica-creator/stats", headers=ADMIN, timeout=30).json()
        if stats["totals"]["commission"]["creator"]["accrued"] >= 20.0:
            break
        time.sleep(0.3)
    time.sleep(1.0)  # more passes of both workers: nothing is appended twice
    stats = httpx.get(f"{a}/v1/creators/replica-creator/stats", headers=ADMIN, timeout=30).json()
    assert stats["totals"]["commission"]["creator"]["accrued"] == pytest.approx(20.0)
    assert stats["totals"]["purchases"] == 20
    assert pd.notna(stats["totals"]["commission"]["creator"]["pending"])
