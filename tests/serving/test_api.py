"""The HTTP API built by create_app(settings) around a real bundle (in-process ASGI client)."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from feed.bundle import load_bundle
from feed.errors import ArtifactError
from serving.app import create_app
from serving.settings import ServingSettings


@pytest.fixture(scope="module")
def client(small_bundle_dir):
    with TestClient(create_app(ServingSettings(bundle=small_bundle_dir, store_url=""))) as client:
        yield client


def test_health_and_readiness_report_the_version(client, small_bundle_dir):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model_version"] == load_bundle(small_bundle_dir).bundle_id


def test_feed_shape_and_header(client, small_bundle_dir):
    user = load_bundle(small_bundle_dir).manifest["sample_user_ids"][0]
    response = client.get(f"/v1/users/{user}/feed", params={"limit": 15})
    body = response.json()
    assert response.status_code == 200 and response.headers["X-Model-Version"] == body["model_version"]
    assert len(body["items"]) == 15 and not body["cold_start"] and body["request_id"]
    item = body["items"][0]
    assert set(item) == {"video_id", "creator_id", "product", "score", "reason", "source", "sponsored",
                         "earns_commission", "predicted"}
    assert set(item["predicted"]) == {"watch", "share", "purchase"} and body["ranking"] == "ranker"
    assert len({i["video_id"] for i in body["items"]}) == 15 and body["next_cursor"]
    assert all(i["reason"] for i in body["items"])


def test_unknown_user_gets_a_popularity_feed(client):
    body = client.get("/v1/users/never-seen-user/feed").json()
    assert body["cold_start"] and len(body["items"]) == 20
    assert {i["source"] for i in body["items"]} <= {"popular", "trending", "fresh", "new_creator"}


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
def test_limit_is_validated(client, limit):
    response = client.get("/v1/users/u1/feed", params={"limit": limit})
    assert response.status_code == 422 and "limit" in response.text


@pytest.mark.parametrize(("params", "name", "kind"), [
    ({"limit": "0"}, "limit", "greater_than_equal"), ({"limit": "101"}, "limit", "less_than_equal"),
    ({"limit": "ten"}, "limit", "int_parsing"), ({"seed": "-1"}, "seed", "greater_than_equal"),
    ({"cursor": ""}, "cursor", "string_too_short"), ({"exclude": [f"v{i}" for i in range(201)]}, "exclude", "too_long")])
def test_a_bad_parameter_is_named_in_fastapis_422_shape(client, params, name, kind):
    response = client.get("/v1/users/u1/feed", params=params)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", name] and error["type"] == kind and error["msg"]


def test_every_bad_parameter_is_reported_at_once(client):
    detail = client.get("/v1/users/u1/feed", params={"limit": "0", "seed": "x"}).json()["detail"]
    assert sorted(e["loc"][1] for e in detail) == ["limit", "seed"]


def test_the_last_of_a_repeated_parameter_counts_and_unknown_ones_are_ignored(client, small_bundle_dir):
    user = load_bundle(small_bundle_dir).manifest["sample_user_ids"][0]
    response = client.get(f"/v1/users/{user}/feed?limit=50&limit=3&colour=red")
    assert response.status_code == 200 and len(response.json()["items"]) == 3


def test_the_feed_parameters_are_documented(client):
    operation = client.get("/openapi.json").json()["paths"]["/v1/users/{user_id}/feed"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"user_id", "limit", "cursor", "seed", "exclude"}
    assert params["user_id"]["in"] == "path" and all(params[n]["in"] == "query" for n in ("limit", "cursor", "seed"))
    assert params["limit"]["schema"]["minimum"] == 1 and params["limit"]["schema"]["maximum"] == 100
    assert params["limit"]["schema"]["default"] == 20 and params["seed"]["schema"]["anyOf"][0]["maximum"] == 2**31 - 1
    assert params["exclude"]["schema"] == {"type": "array", "items": {"type": "string"}, "maxItems": 200, "default": []}
    assert all(params[n]["description"] for n in params) and "422" in operation["responses"]


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/v1/users/{user_id}/feed" in client.get("/openapi.json").json()["paths"]


def test_a_corrupted_bundle_refuses_to_start(small_bundle_dir, tmp_path):
    broken = tmp_path / "bundle"
    shutil.copytree(small_bundle_dir, broken)
    (broken / "factors_video.npz").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="factors_video.npz"):
        with TestClient(create_app(ServingSettings(bundle=broken, store_url=""))):
            pass


def test_admin_routes_are_disabled_without_a_token(client):
    response = client.post("/v1/admin/reload")
    assert response.status_code == 403 and "FEED_SERVE_ADMIN_TOKEN" in response.text


def test_readyz_reports_version_in_header(client):
    response = client.get("/readyz")
    assert response.headers["X-Model-Version"] == response.json()["model_version"]
    assert response.json()["last_reload_error"] is None


def test_admin_reload_swaps_a_rewritten_bundle_folder(small_bundle_dir, tmp_path):
    from feed.bundle import write_bundle

    folder = tmp_path / "bundle"
    shutil.copytree(small_bundle_dir, folder)
    settings = ServingSettings(bundle=folder, reload_interval_s=0, admin_token="t", store_url="")
    headers = {"Authorization": "Bearer t"}
    with TestClient(create_app(settings)) as client:
        before = client.get("/readyz").json()["model_version"]
        assert client.post("/v1/admin/reload", headers=headers).json()["status"] == "unchanged"
        bundle = load_bundle(folder)
        bundle.popularity = bundle.popularity + 1  # new content, so a new bundle id
        write_bundle(bundle, folder, bundle.manifest)
        body = client.post("/v1/admin/reload", headers=headers).json()
        assert body["status"] == "reloaded" and body["version"] != before
        assert client.get("/readyz").json()["model_version"] == body["version"]


def test_a_bundle_with_a_malformed_manifest_is_refused_not_fatal(small_bundle_dir, tmp_path):
    import json

    folder = tmp_path / "bundle"
    shutil.copytree(small_bundle_dir, folder)
    settings = ServingSettings(bundle=folder, reload_interval_s=0, admin_token="t", store_url="")
    with TestClient(create_app(settings)) as client:
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["files"]
        manifest["bundle_id"] = "changed"
        (folder / "manifest.json").write_text(json.dumps(manifest))
        body = client.post("/v1/admin/reload", headers={"Authorization": "Bearer t"}).json()
        assert body["status"] == "refused" and "files" in body["error"]
        assert client.get("/v1/users/u1/feed").status_code == 200


def test_the_feed_body_is_exactly_what_the_documented_schema_serializes(small_bundle_dir):
    import orjson

    from feed.service import FeedConfig, FeedService
    from serving.schemas import FeedOut, feed_json

    bundle = load_bundle(small_bundle_dir)
    users, predicted = [*bundle.manifest["sample_user_ids"][:3], "nobody-at-all"], set()
    for config in (FeedConfig(), FeedConfig(ranking="retrieval")):  # with and without the ranker's predictions
        service = FeedService(bundle, config)
        for user in users:
            feed = service.feed(user, 20, seed=5)
            expected = FeedOut.from_feed(feed).model_dump(mode="json")
            body = orjson.loads(feed_json(feed))
            assert body == expected and list(body) == list(expected)
            assert [list(item) for item in body["items"]] == [list(item) for item in expected["items"]]
            assert [list(item["predicted"] or ()) for item in body["items"]] == \
                [list(item["predicted"] or ()) for item in expected["items"]]
            predicted |= {item["predicted"] is None for item in body["items"]}
    assert predicted == {True, False}  # both shapes of an item were compared
