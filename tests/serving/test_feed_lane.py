"""The feed lane (`serving.feed_lane`): it answers exactly what FastAPI's feed route answers, and hands FastAPI
every call it does not answer itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from feed.bundle import load_bundle
from serving import routes
from serving.app import create_app
from serving.feed_lane import FeedLane
from serving.routes import feed_route
from serving.settings import ServingSettings

KEY = {"Authorization": "Bearer app-key-1"}


def settings(bundle_dir, lane: bool) -> ServingSettings:
    return ServingSettings(bundle=bundle_dir, store_url="", app_keys=["app-key-1"], feed_lane=lane)


@pytest.fixture(scope="module")
def clients(small_bundle_dir):
    with TestClient(create_app(settings(small_bundle_dir, True))) as lane, \
            TestClient(create_app(settings(small_bundle_dir, False))) as plain:
        yield lane, plain


@pytest.fixture(scope="module")
def user(small_bundle_dir):
    return load_bundle(small_bundle_dir).manifest["sample_user_ids"][0]


def calls(user: str, cursor: str) -> list[tuple[str, str, dict, dict]]:
    """(method, path, params, headers): good calls, then every kind of call the lane hands to FastAPI."""
    feed = f"/v1/users/{user}/feed"
    return [
        ("GET", feed, {"seed": 3}, KEY), ("GET", feed, {"seed": 3, "limit": 7, "exclude": ["x", "y"]}, KEY),
        ("GET", "/v1/users/never-seen/feed", {"seed": 1}, KEY), ("GET", feed, {"cursor": cursor}, KEY),
        ("GET", "/v1/users/a%20b%2Fc/feed", {"seed": 2}, KEY), ("GET", feed, {"seed": 3, "other": "1"}, KEY),
        ("GET", feed, {"seed": 3, "limit": [5, 9]}, KEY),
        ("GET", feed, {"limit": 0, "seed": -1}, KEY), ("GET", feed, {"cursor": "not-a-cursor"}, KEY),
        ("GET", feed, {"cursor": ""}, KEY), ("GET", feed, {}, {}),
        ("GET", feed, {}, {"Authorization": "Bearer no"}), ("GET", "/v1/users/" + "u" * 129 + "/feed", {}, KEY),
        ("GET", "/v1/users/" + "u" * 128 + "/feed", {"seed": 1}, KEY),
        ("POST", feed, {}, KEY), ("HEAD", feed, {}, KEY), ("GET", feed + "/", {}, KEY),
        ("GET", "/v1/users//feed", {}, KEY),
    ]


def comparable(response) -> tuple[int, object, dict]:
    """Status, body (without the per-request id) and headers (without the request id's)."""
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}
    try:
        body = response.json()
    except ValueError:
        return response.status_code, response.text, headers
    if isinstance(body, dict):
        body.pop("request_id", None)
    return response.status_code, body, headers


def test_every_call_is_answered_as_fastapis_route_answers_it(clients, user, monkeypatch):
    # one clock for both: a feed's freshness features read the time, and two calls a millisecond apart can
    # differ in a probability's last bits
    monkeypatch.setattr(routes, "time", SimpleNamespace(time=lambda: 1_780_000_000.0))
    lane, plain = clients
    cursor = plain.get(f"/v1/users/{user}/feed", params={"seed": 4, "limit": 5}, headers=KEY).json()["next_cursor"]
    statuses = set()
    for method, path, params, headers in calls(user, cursor):
        ours, theirs = (c.request(method, path, params=params, headers=headers, follow_redirects=False)
                        for c in (lane, plain))
        assert comparable(ours) == comparable(theirs), (method, path, params)
        assert ours.headers.get("x-request-id"), (method, path)
        statuses.add(ours.status_code)
    assert statuses >= {200, 307, 400, 401, 404, 405, 422}  # the lane's answers and FastAPI's errors were both compared


def test_lane_calls_are_counted_under_the_route_template(clients, user):
    lane, _ = clients
    before = lane.get("/metrics").text
    assert lane.get(f"/v1/users/{user}/feed", headers=KEY).status_code == 200
    after = lane.get("/metrics").text
    label = 'feed_http_requests_total{route="/v1/users/{user_id}/feed",method="GET",status="200"}'
    count = (lambda text: float(next((line.split()[-1] for line in text.splitlines() if line.startswith(label)), 0)))
    assert count(after) == count(before) + 1


def test_the_lane_answers_good_calls_itself_and_hands_the_rest_on(small_bundle_dir, user):
    app = create_app(settings(small_bundle_dir, False))
    handed = []

    async def rest(scope, receive, send):  # stands for FastAPI's stack behind the lane
        handed.append(scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    lane = FeedLane(rest, feed_route)

    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            await app(scope, receive, send)
            return
        scope["app"] = app
        await lane(scope, receive, send)

    with TestClient(asgi) as client:
        good = client.get(f"/v1/users/{user}/feed", params={"limit": 4}, headers=KEY)
        assert good.status_code == 200 and len(good.json()["items"]) == 4 and handed == []
        assert good.headers["content-type"] == "application/json"
        assert int(good.headers["content-length"]) == len(good.content)
        for path, params, headers in [("/v1/users/u/feed", {"limit": 0}, KEY), ("/v1/users/u/feed", {}, {}),
                                      ("/healthz", {}, {}), ("/v1/users/u/feed", {"cursor": "bad"}, KEY)]:
            assert client.get(path, params=params, headers=headers).status_code == 418
        assert client.post("/v1/users/u/feed", headers=KEY).status_code == 418
        assert handed == ["/v1/users/u/feed", "/v1/users/u/feed", "/healthz", "/v1/users/u/feed", "/v1/users/u/feed"]
