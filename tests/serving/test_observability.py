"""GET /metrics: per-route counts and latency histograms, feed stages and candidate sources, model load time;
request ids in responses and log records; the JSON log format."""

from __future__ import annotations

import json
import logging
import re

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.observability import REQUEST_ID, Histogram, JsonFormatter, RequestIdFilter
from serving.settings import ServingSettings


@pytest.fixture(scope="module")
def client(small_bundle_dir):
    settings = ServingSettings(bundle=small_bundle_dir, store_url="", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        yield client


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = r"^" + re.escape(f"{name}{{{inner}}}" if labels else name) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no {name} {labels} in /metrics"
    return float(found.group(1))


def test_requests_are_counted_per_route_template_and_status(client):
    before = client.get("/metrics").text
    route = "/v1/users/{user_id}/feed"
    start = metric(before, "feed_http_requests_total", route=route, method="GET", status="200") \
        if route in before else 0
    for user in ("a", "b", "c"):
        assert client.get(f"/v1/users/{user}/feed", params={"limit": 5}).status_code == 200
    assert client.get("/v1/users/a/feed", params={"limit": 0}).status_code == 422
    assert client.get("/no/such/path").status_code == 404
    text = client.get("/metrics").text
    assert metric(text, "feed_http_requests_total", route=route, method="GET", status="200") == start + 3
    assert metric(text, "feed_http_requests_total", route=route, method="GET", status="422") >= 1
    assert metric(text, "feed_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    assert "/v1/users/a/feed" not in text  # raw paths never become labels
    count = metric(text, "feed_http_request_duration_seconds_count", route=route, method="GET")
    assert metric(text, "feed_http_request_duration_seconds_bucket", route=route, method="GET", le="+Inf") == count


def test_feed_stages_candidate_sources_and_model_load_time(client):
    client.get("/v1/users/u000001/feed", params={"limit": 10})
    text = client.get("/metrics").text
    for stage in ("candidates", "ranking", "page"):
        assert metric(text, "feed_stage_duration_seconds_count", stage=stage) >= 1
    assert metric(text, "feed_candidates_total", source="popular") > 0
    assert metric(text, "feed_model_load_seconds") > 0
    assert "# TYPE feed_stage_duration_seconds histogram" in text


def test_every_response_has_a_request_id_and_the_feed_uses_it(client):
    response = client.get("/v1/users/someone/feed", params={"limit": 3}, headers={"X-Request-ID": "client-1"})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])  # ours, not the client's
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert client.get("/healthz").headers["x-request-id"] != response.headers["x-request-id"]


def test_histogram_buckets_are_cumulative():
    hist = Histogram(buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        hist.observe(("r",), value)
    lines = hist.render("h", ("route",))
    assert 'h_bucket{route="r",le="0.1"} 2' in lines and 'h_bucket{route="r",le="1"} 3' in lines
    assert 'h_bucket{route="r",le="+Inf"} 4' in lines and 'h_count{route="r"} 4' in lines
    assert 'h_sum{route="r"} 3.650000' in lines


def test_json_log_lines_carry_the_request_id_and_extra_fields():
    record = logging.makeLogRecord({"name": "serving.x", "levelname": "INFO", "levelno": 20, "msg": "hi %s",
                                    "args": ("there",), "route": "/r"})
    token = REQUEST_ID.set("abc123")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hi there" and entry["request_id"] == "abc123" and entry["route"] == "/r"
    assert entry["level"] == "info" and entry["ts"].endswith("Z")


def test_request_ids_are_drawn_again_in_a_forked_child():
    """A forked worker does not repeat its parent's request ids (the id generator is seeded again in the child)."""
    import os

    from serving import observability

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, observability._IDS.getrandbits(128).to_bytes(16, "little"))
        os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 16), "little")
    os.waitpid(pid, 0)
    os.close(read)
    assert child != observability._IDS.getrandbits(128)
