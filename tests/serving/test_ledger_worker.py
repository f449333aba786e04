"""The ledger worker inside the app: events posted over HTTP become ledger entries without anyone asking,
and a product's new commission rate (PUT over HTTP) applies to later purchases only."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings

ADMIN = {"Authorization": "Bearer admin-secret-admin-secret"}


@pytest.fixture
def api(small_bundle_dir, store_url):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=store_url, reload_interval_s=0,
                               admin_token="admin-secret-admin-secret", ledger_interval_s=0.05,
                               ledger_sharer_rate=0.05)
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.store


def wait_for_entries(store, n: int, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entries = store.ledger_entries()
        if len(entries) >= n:
            return entries
        time.sleep(0.05)
    raise AssertionError(f"the ledger has {len(store.ledger_entries())} entries after {timeout_s} s, expected {n}")


def test_posted_purchases_reach_the_ledger_on_their_own(api):
    client, store = api
    assert client.put("/v1/products/p9", json={"merchant_id": "m1", "commission_rate": 0.1},
                      headers=ADMIN).status_code == 200
    assert client.put("/v1/videos/v9", json={"creator_id": "c9", "product_id": "p9"},
                      headers=ADMIN).status_code == 200
    events = [
        {"event_id": "s1", "ts": "2026-05-01T10:00:00Z", "user_id": "friend", "video_id": "v9", "event": "share",
         "share_id": "link1"},
        {"event_id": "b1", "ts": "2026-05-02T10:00:00Z", "user_id": "buyer", "video_id": "v9",
         "event": "purchase", "order_id": "o1", "amount": 80.0, "via_share_id": "link1", "product_id": "p9"},
    ]
    assert client.post("/v1/events", json=events).status_code == 200
    entries = wait_for_entries(store, 4)  # creator and sharer accruals; both settled (the dates are past)
    got = {(r.beneficiary_id, r.role, r.kind): r.amount for r in entries.itertuples()}
    assert got == {("c9", "creator", "accrual"): 8.0, ("friend", "sharer", "accrual"): 4.0,
                   ("c9", "creator", "settlement"): 8.0, ("friend", "sharer", "settlement"): 4.0}
    assert "feed_ledger_entries_total 4" in client.get("/metrics").text

    assert client.put("/v1/products/p9", json={"merchant_id": "m1", "commission_rate": 0.3},
                      headers=ADMIN).status_code == 200
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    later = {"event_id": "b2", "ts": now, "user_id": "buyer", "video_id": "v9", "event": "purchase",
             "order_id": "o2", "amount": 10.0}
    assert client.post("/v1/events", json=[later]).status_code == 200
    entries = wait_for_entries(store, 5)
    assert entries.set_index("order_id").loc["o2", "amount"] == 3.0  # the new rate; o1 kept the old one
    time.sleep(0.3)
    assert len(store.ledger_entries()) == 5  # idle passes append nothing
