"""POST /v1/events: all-or-nothing, idempotent, and clear 4xx errors for every malformed input, nothing stored."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings


@pytest.fixture
def api(small_bundle_dir, store_url):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=store_url, reload_interval_s=0,
                               max_body_bytes=200_000)
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.store


def event(i: int, **extra: object) -> dict:
    return {"event_id": f"e{i}", "ts": 1_795_300_000_000 + i, "user_id": "u1", "video_id": "v000001",
            "event": "view", "watch_ms": 1000, **extra}


def test_a_batch_is_stored_once_and_retries_are_duplicates(api):
    client, store = api
    batch = [event(i) for i in range(100)]
    assert client.post("/v1/events", json=batch).json() == {"received": 100, "inserted": 100, "duplicates": 0}
    assert client.post("/v1/events", json=batch).json() == {"received": 100, "inserted": 0, "duplicates": 100}
    assert client.post("/v1/events", json=batch[50:] + [event(100)]).json()["inserted"] == 1
    assert store.count("events") == 101


def test_events_without_ids_are_still_idempotent(api):
    client, store = api
    batch = [{k: v for k, v in event(i).items() if k != "event_id"} for i in range(10)]
    assert client.post("/v1/events", json=batch).json()["inserted"] == 10
    assert client.post("/v1/events", json=batch).json()["duplicates"] == 10
    assert store.count("events") == 10


def test_every_bad_row_is_listed_and_nothing_is_stored(api):
    client, store = api
    batch = [event(0), event(1, event="teleport"), event(2), event(3, ts="yesterday", watch_ms=-5),
             event(4, event="purchase"), event(5, unexpected="x")]
    response = client.post("/v1/events", json=batch)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["message"] == "no event was stored"
    found = {(e["index"], e["field"]) for e in detail["errors"]}
    assert found == {(1, "event"), (3, "ts"), (3, "watch_ms"), (4, "order_id"), (5, "unexpected")}
    assert all(e["reason"] for e in detail["errors"])
    assert store.count("events") == 0


@pytest.mark.parametrize(("body", "headers", "status", "words"), [
    (b"[{]", {"Content-Type": "application/json"}, 400, "malformed JSON"),
    (b"ts,user_id\n1,u", {"Content-Type": "text/csv"}, 415, "application/json"),
    (json.dumps([event(i) for i in range(2000)]).encode(), {"Content-Type": "application/json"}, 413, "limit"),
    (json.dumps({"events": []}).encode(), {"Content-Type": "application/json"}, 422, "JSON array"),
    (b"[]", {"Content-Type": "application/json"}, 422, "empty"),
    (json.dumps([event(0), event(0)]).encode(), {"Content-Type": "application/json"}, 422, "event_id"),
])
def test_malformed_requests_get_clear_errors_and_store_nothing(api, body, headers, status, words):
    client, store = api
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == status and words in response.text
    assert store.count("events") == 0


def test_more_than_a_thousand_events_is_refused(small_bundle_dir, tmp_path):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=f"sqlite:///{tmp_path / 's.db'}",
                               reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/events", json=[event(i) for i in range(1001)])
        assert response.status_code == 422 and "at most 1000" in response.text
        assert client.app.state.store.count("events") == 0


def test_an_unreachable_store_is_503_with_retry_after(small_bundle_dir, tmp_path):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=f"sqlite:///{tmp_path / 's.db'}",
                               reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        (tmp_path / "s.db").unlink()
        (tmp_path / "s.db").mkdir()  # the file is gone and cannot be created again: writes fail
        client.app.state.store.close()
        response = client.post("/v1/events", json=[event(0)])
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"


def test_feeds_survive_a_store_outage(small_bundle_dir, tmp_path):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=f"sqlite:///{tmp_path / 's.db'}",
                               reload_interval_s=0, catalog_refresh_s=0)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/events", json=[event(0, user_id="fan")])
        (tmp_path / "s.db").unlink()
        (tmp_path / "s.db").mkdir()
        client.app.state.store.close()
        response = client.get("/v1/users/fan/feed")
        assert response.status_code == 200 and len(response.json()["items"]) == 20
        assert "feed_feeds_without_realtime 1" in client.get("/metrics").text


@pytest.mark.parametrize(("rows", "field"), [
    ([event(0, user_id="a\x00b")], "user_id"),
    ([event(0, watch_ms=2**63)], "watch_ms"),
    ([event(0, event="purchase", order_id="o", amount=1e300)], "amount"),
])
def test_values_a_database_cannot_hold_are_422(api, rows, field):
    client, store = api
    response = client.post("/v1/events", json=rows)
    assert response.status_code == 422 and response.json()["detail"]["errors"][0]["field"] == field
    assert store.count("events") == 0


def test_absurdly_nested_json_is_400(api):
    client, _ = api
    response = client.post("/v1/events", content=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "malformed JSON" in response.text
