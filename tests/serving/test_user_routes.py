"""PUT, DELETE and GET /v1/users/{user_id}/blocks through create_app, on real SQLite and PostgreSQL stores."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings

ADMIN = {"Authorization": "Bearer admin-secret"}
MERCHANT = {"Authorization": "Bearer merchant-secret"}


@pytest.fixture
def api(small_bundle_dir, store_url):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=store_url, reload_interval_s=0,
                               admin_token="admin-secret", merchant_tokens={"m1": "merchant-secret"})
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.store


def blocked(client: TestClient, user: str) -> list[str]:
    response = client.get(f"/v1/users/{user}/blocks", headers=ADMIN)
    assert response.status_code == 200 and response.json()["user_id"] == user
    return response.json()["creator_ids"]


def test_block_unblock_and_block_again(api):
    client, store = api
    response = client.put("/v1/users/u1/blocks/c2", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["id"] == "u1->c2" and isinstance(response.json()["catalog_seq"], int)
    assert client.put("/v1/users/u1/blocks/c1", headers=ADMIN).status_code == 200
    assert client.put("/v1/users/u1/blocks/c1", headers=ADMIN).status_code == 200  # blocking twice is fine
    assert blocked(client, "u1") == ["c1", "c2"] == store.blocks_of("u1")
    assert blocked(client, "u-nobody") == []

    response = client.delete("/v1/users/u1/blocks/c1", headers=ADMIN)
    assert response.status_code == 200 and response.json()["id"] == "u1->c1"
    assert blocked(client, "u1") == ["c2"]
    response = client.delete("/v1/users/u1/blocks/c1", headers=ADMIN)
    assert response.status_code == 404 and "u1 has not blocked c1" in response.text
    assert client.delete("/v1/users/u2/blocks/c2", headers=ADMIN).status_code == 404  # someone else's block

    assert client.put("/v1/users/u1/blocks/c1", headers=ADMIN).status_code == 200
    assert blocked(client, "u1") == ["c1", "c2"]


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/v1/users/u1/blocks/c1"), ("DELETE", "/v1/users/u1/blocks/c1"), ("GET", "/v1/users/u1/blocks"),
])
def test_blocks_need_the_admin_token(api, method, path):
    client, store = api
    client.put("/v1/users/u1/blocks/c1", headers=ADMIN)
    assert client.request(method, path).status_code == 401
    assert client.request(method, path, headers={"Authorization": "Bearer nope"}).status_code == 401
    response = client.request(method, path, headers=MERCHANT)
    assert response.status_code == 403 and "admin token" in response.text
    assert store.blocks_of("u1") == ["c1"]


@pytest.mark.parametrize("path", [f"/v1/users/u1/blocks/{'c' * 129}", f"/v1/users/{'u' * 129}/blocks",
                                  "/v1/users/u1/blocks/c%00x"])
def test_ids_are_one_to_128_characters_without_nul(api, path):
    client, store = api
    method = "GET" if path.endswith("/blocks") else "PUT"
    assert client.request(method, path, headers=ADMIN).status_code == 422
    assert store.count("blocks") == 0


def test_an_unreachable_store_is_503_with_retry_after(small_bundle_dir, tmp_path):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=f"sqlite:///{tmp_path / 's.db'}",
                               reload_interval_s=0, admin_token="admin-secret")
    with TestClient(create_app(settings)) as client:
        (tmp_path / "s.db").unlink()
        (tmp_path / "s.db").mkdir()  # the file is gone and cannot be created again
        client.app.state.store.close()
        for method, path in [("PUT", "/v1/users/u1/blocks/c1"), ("GET", "/v1/users/u1/blocks")]:
            response = client.request(method, path, headers=ADMIN)
            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
