"""Every route of create_app is public by name or refuses missing, malformed and wrong credentials.

The routes are enumerated from the app, so a new route without a guard fails here until it gets one (or is
added to PUBLIC). Creator and merchant routes are also tried with expired and other-owner tokens. No error
body may echo a secret, a token, or another creator's id.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import fastapi.routing
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.routing import Mount

from serving.app import create_app
from serving.auth import (
    CreatorDep,
    MerchantDep,
    TokenError,
    app_model,
    creator_access,
    merchant_access,
    require_app,
    require_backend,
    sign_creator_token,
    verify_creator_token,
    warn_if_open,
)
from serving.catalog_routes import get_writer
from serving.deps import require_admin
from serving.settings import PLACEHOLDER_SECRET, ServingSettings

APP_KEY = "app-key-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
MERCHANT_TOKENS = {"m1": "merchant-one-0123456789abcdef", "m2": "merchant-two-0123456789abcdef"}
SECRET = "token-secret-0123456789abcdef-0123456789"
OWNER, OTHER = "c-owner", "c-other"
SECRETS = (APP_KEY, ADMIN_TOKEN, SECRET, *MERCHANT_TOKENS.values())
PUBLIC = {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
# Pages that hold no data (the dashboard shell reads its token from the link and calls the guarded API):
# public, but tested to answer the same bytes for every creator.
PUBLIC_PAGES = {"/creators/{creator_id}"}
GUARDS: dict[Callable, str] = {require_app: "app", app_model: "app", require_backend: "backend", require_admin: "admin",
                               get_writer: "writer", creator_access: "creator", merchant_access: "merchant"}

# While the app has no creator (merchant) route yet, these stand in for them to exercise the dependencies.
creator_probe, merchant_probe = APIRouter(), APIRouter()


@creator_probe.get("/test-only/creators/{creator_id}")
def probe_creator(creator: CreatorDep) -> dict[str, str]:
    return {"creator_id": creator}


@merchant_probe.get("/test-only/merchants/{merchant_id}")
def probe_merchant(merchant: MerchantDep) -> dict[str, str]:
    return {"merchant_id": merchant}


def with_probes(app: FastAPI) -> FastAPI:
    """The app, plus a stand-in route for each of creator_access and merchant_access that no route uses yet."""
    present = {guard for route in flat_routes(app) if hasattr(route, "dependant") for guard in guards(route)}
    for guard, router in (("creator", creator_probe), ("merchant", merchant_probe)):
        if guard not in present:
            app.include_router(router)
    return app


def first(app: FastAPI, guard: str) -> str:
    """The concrete path of the first GET route behind `guard`."""
    return next(path for kind, method, path, _ in protected(app) if kind == guard and method == "GET")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def creator_token(creator: str, secret: str = SECRET, ttl_s: float = 3600, now: float | None = None) -> str:
    return sign_creator_token(secret, creator, ttl_s, now=now)


@pytest.fixture(scope="module")
def client(small_bundle_dir, tmp_path_factory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("security") / "store.db"
    settings = ServingSettings(bundle=small_bundle_dir, store_url=f"sqlite:///{store}", reload_interval_s=0,
                               environment="production", app_keys=[APP_KEY], admin_token=ADMIN_TOKEN,
                               merchant_tokens=MERCHANT_TOKENS, token_secret=SECRET)
    with TestClient(with_probes(create_app(settings))) as client:
        yield client


def guards(route: object) -> set[str]:
    """The auth dependencies a route runs (at any depth, including those added by include_router)."""
    found, stack = set(), [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call in GUARDS:
            found.add(GUARDS[dependant.call])
        stack.extend(dependant.dependencies)
    return found


def concrete(path: str) -> str:
    """The path with every parameter filled in (creators and merchants are the token owners)."""
    values = {"creator_id": OWNER, "merchant_id": "m1"}
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: values.get(m.group(1), "x1"), path)


def flat_routes(app: FastAPI) -> list[object]:
    """Every route the app serves (FastAPI >= 0.16x keeps included routers nested in app.routes)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(iterate(app.routes)) if iterate is not None else list(app.routes)


def protected(app: FastAPI) -> list[tuple[str, str, str, str]]:
    """(guard, method, path, route path) for every non-public API route."""
    rows = []
    for route in flat_routes(app):
        original = getattr(route, "original_route", route)
        if isinstance(original, Mount) or route.path in PUBLIC | PUBLIC_PAGES:
            continue
        assert isinstance(original, APIRoute), f"{route.path}: not an API route; add it to PUBLIC or guard it"
        kinds = guards(route)
        assert len(kinds) == 1, f"{route.path} must run exactly one auth dependency of serving.auth, has {kinds}"
        rows += [(kinds.pop(), method, concrete(route.path), route.path) for method in sorted(route.methods)]
    return rows


def refused(response, status: int, *sent: str) -> None:
    """The response is `status`, challenges for a bearer token on 401, and echoes nothing secret."""
    assert response.status_code == status, (response.status_code, response.text)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    headers = str({k: v for k, v in response.headers.items() if k != "x-request-id"})  # random hex, ours
    for value in (*SECRETS, *sent, OTHER):
        assert value not in response.text and value not in headers


def allowed(response) -> None:
    """Past the guard: whatever the route answers next (200, 404, 422 without a body...) is not 401/403."""
    assert response.status_code not in (401, 403), (response.status_code, response.text)


def test_every_route_is_public_or_guarded(client):
    rows = protected(client.app)
    paths = {row[3] for row in rows}
    assert {"/v1/users/{user_id}/feed", "/v1/events", "/v1/admin/reload", "/v1/products/{product_id}",
            "/v1/users/{user_id}/blocks"} <= paths
    for guard, _, _, path in rows:
        if re.match(r"^(/v1)?/creators/", path):
            assert guard == "creator", f"{path} is a creator's page: it needs CreatorDep"
        if re.match(r"^(/v1)?/merchants/", path):
            assert guard == "merchant", f"{path} is a merchant's page: it needs MerchantDep"


def test_an_unguarded_route_is_caught():
    app = with_probes(FastAPI())
    unguarded = APIRouter()
    unguarded.get("/v1/creators/{creator_id}/secrets")(lambda creator_id: {})
    app.include_router(unguarded)
    with pytest.raises(AssertionError, match="/v1/creators/{creator_id}/secrets"):
        protected(app)


def test_development_warns_once_that_the_app_routes_are_open(caplog):
    with caplog.at_level(logging.WARNING, logger="serving.auth"):
        warn_if_open(ServingSettings(store_url=""))
        warn_if_open(ServingSettings(**GOOD))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "no FEED_SERVE_APP_KEYS", "creator tokens are signed with the development placeholder"]
    assert PLACEHOLDER_SECRET not in caplog.text


def test_public_routes_need_nothing(client):
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


MALFORMED = ["Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer two words", "Token abc", "Bearer not.a.token",
             f"Bearer {APP_KEY}x", f"Bearer{APP_KEY}"]


@pytest.fixture(scope="module")
def routes(client) -> list[tuple[str, str, str, str]]:
    return protected(client.app)


def test_missing_credentials_are_401(client, routes):
    for _, method, path, _ in routes:
        refused(client.request(method, path), 401)


def test_malformed_credentials_are_401(client, routes):
    for _, method, path, _ in routes:
        for header in MALFORMED:
            sent = header.partition(" ")[2].strip()
            refused(client.request(method, path, headers={"Authorization": header}), 401, *filter(None, [sent]))


def test_wrong_keys_are_401(client, routes):
    wrong = ["wrong-key-0123456789abcdef", SECRET, PLACEHOLDER_SECRET, APP_KEY.upper(), ADMIN_TOKEN[:-1]]
    for _, method, path, _ in routes:
        for key in wrong:
            refused(client.request(method, path, headers=bearer(key)), 401, key)


def test_each_credential_opens_only_its_routes(client, routes):
    """Who passes each guard: app key, admin, merchant m1, and a valid token of the path's creator."""
    opens = {"app": {"app", "admin"}, "backend": {"app", "admin"}, "admin": {"admin"},
             "writer": {"admin", "merchant"}, "creator": {"admin", "creator"}, "merchant": {"admin", "merchant"}}
    status_when_refused = {("backend", "merchant"): 403}
    credentials = {"app": APP_KEY, "admin": ADMIN_TOKEN, "merchant": MERCHANT_TOKENS["m1"],
                   "creator": creator_token(OWNER)}
    for guard, method, path, _ in routes:
        for who, token in credentials.items():
            response = client.request(method, path, headers=bearer(token))
            if who in opens[guard]:
                allowed(response)
            else:
                refused(response, status_when_refused.get((guard, who), 401), token)


def creator_routes(routes) -> list[tuple[str, str]]:
    return [(method, path) for guard, method, path, _ in routes if guard == "creator"]


def test_creator_routes_refuse_expired_forged_and_other_creators(client, routes):
    assert creator_routes(routes), "no route uses CreatorDep"
    expired = creator_token(OWNER, ttl_s=60, now=time.time() - 120)
    forged = creator_token(OWNER, secret="another-secret-0123456789abcdef-0123")
    other = creator_token(OTHER)
    for method, path in creator_routes(routes):
        for token, status, detail in ((expired, 401, "expired"), (forged, 401, "bad signature"),
                                      (other, 403, "another creator")):
            for response in (client.request(method, path, headers=bearer(token)),
                             client.request(method, path, params={"token": token})):
                refused(response, status, token)
                assert detail in response.json()["detail"]
        allowed(client.request(method, path, headers=bearer(creator_token(OWNER))))
        allowed(client.request(method, path, params={"token": creator_token(OWNER)}))


def test_query_token_does_not_carry_the_admin_or_app_key(client, routes):
    for method, path in creator_routes(routes):
        for key in (ADMIN_TOKEN, APP_KEY):
            refused(client.request(method, path, params={"token": key}), 401, key)


def test_public_pages_hold_no_data(client):
    pages = [route.path for route in flat_routes(client.app) if route.path in PUBLIC_PAGES]
    for page in pages:
        own, other = (client.get(page.replace("{creator_id}", who)) for who in (OWNER, OTHER))
        assert own.status_code == other.status_code == 200 and own.content == other.content
        assert OWNER.encode() not in own.content and OTHER.encode() not in own.content


def test_merchant_routes_refuse_other_merchants(client, routes):
    merchant = [(method, path) for guard, method, path, _ in routes if guard == "merchant"]
    assert merchant, "no route uses MerchantDep"
    for method, path in merchant:
        refused(client.request(method, path, headers=bearer(MERCHANT_TOKENS["m2"])), 403)
        refused(client.request(method, path, headers=bearer(creator_token("m1"))), 401)
        allowed(client.request(method, path, headers=bearer(MERCHANT_TOKENS["m1"])))


def test_a_query_token_does_not_override_a_bad_header(client):
    response = client.get(first(client.app, "creator"), params={"token": creator_token(OWNER)},
                          headers=bearer(creator_token(OTHER)))
    assert response.status_code == 403


# ---------------------------------------------------------------- development defaults


@pytest.fixture(scope="module")
def dev_client(small_bundle_dir, tmp_path_factory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("security-dev") / "store.db"
    app = create_app(ServingSettings(bundle=small_bundle_dir, store_url=f"sqlite:///{store}", reload_interval_s=0))
    with TestClient(with_probes(app)) as client:
        yield client


def test_development_without_keys_leaves_feed_and_events_open(dev_client):
    assert dev_client.get("/v1/users/u1/feed", params={"limit": 3}).status_code == 200
    assert dev_client.post("/v1/events", json=[]).status_code != 401


def test_development_still_guards_blocks_admin_creators_and_merchants(dev_client):
    creator = first(dev_client.app, "creator")
    for path in ("/v1/users/u1/blocks", creator, first(dev_client.app, "merchant")):
        refused(dev_client.get(path), 401)
    refused(dev_client.post("/v1/admin/reload"), 403)  # no admin token configured: admin routes are off
    token = creator_token(OWNER, secret=PLACEHOLDER_SECRET)
    allowed(dev_client.get(creator, params={"token": token}))
    refused(dev_client.get(creator, params={"token": creator_token(OWNER)}), 401)


def test_app_keys_guard_the_feed_in_development_too(small_bundle_dir):
    settings = ServingSettings(bundle=small_bundle_dir, store_url="", reload_interval_s=0, app_keys=["k" * 8])
    with TestClient(create_app(settings)) as client:
        refused(client.get("/v1/users/u1/feed"), 401)
        assert client.get("/v1/users/u1/feed", headers=bearer("k" * 8)).status_code == 200


# ---------------------------------------------------------------- production refuses placeholders


GOOD = {"environment": "production", "token_secret": SECRET, "app_keys": [APP_KEY], "admin_token": ADMIN_TOKEN}


@pytest.mark.parametrize(("change", "named"), [
    ({"token_secret": PLACEHOLDER_SECRET}, "token_secret"),
    ({"token_secret": "short-but-secret-value"}, "token_secret"),
    ({"app_keys": []}, "app_keys"),
    ({"app_keys": ["short-app-key"]}, "app_keys"),
    ({"app_keys": [PLACEHOLDER_SECRET]}, "app_keys"),
    ({"admin_token": None}, "admin_token"),
    ({"admin_token": "short-admin"}, "admin_token"),
    ({"merchant_tokens": {"m1": "short-merch"}}, "merchant_tokens[m1]"),
])
def test_production_refuses_placeholder_or_weak_secrets(change, named):
    with pytest.raises(ValidationError) as info:
        ServingSettings(**{**GOOD, **change})
    message = str(info.value)
    assert named in message and "production" in message
    for value in (*SECRETS, PLACEHOLDER_SECRET, *(v for v in change.values() if isinstance(v, str))):
        assert value not in message


def test_production_accepts_real_secrets_and_development_accepts_defaults():
    assert ServingSettings(**GOOD).environment == "production"
    assert ServingSettings().token_secret.get_secret_value() == PLACEHOLDER_SECRET


def test_production_from_the_environment(monkeypatch):
    monkeypatch.setenv("FEED_SERVE_ENVIRONMENT", "production")
    monkeypatch.setenv("FEED_SERVE_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("FEED_SERVE_APP_KEYS", f'["{APP_KEY}"]')
    monkeypatch.setenv("FEED_SERVE_ADMIN_TOKEN", ADMIN_TOKEN)
    settings = ServingSettings()
    assert [k.get_secret_value() for k in settings.app_keys] == [APP_KEY]
    monkeypatch.setenv("FEED_SERVE_TOKEN_SECRET", PLACEHOLDER_SECRET)
    with pytest.raises(ValidationError, match="token_secret"):
        ServingSettings()


# ---------------------------------------------------------------- the `feed` command


def feed(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FEED_SERVE_")}
    return subprocess.run([sys.executable, "-m", "feed.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**clean, "FEED_SERVE_STORE_URL": "", **env})


def test_serve_in_production_with_defaults_exits_with_one_line(small_bundle_dir):
    out = feed("serve", "--bundle", str(small_bundle_dir), "--port", "1", FEED_SERVE_ENVIRONMENT="production")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "token_secret" in lines[0] and "app_keys" in lines[0] and "admin_token" in lines[0]
    assert PLACEHOLDER_SECRET not in out.stderr


def test_tokens_create_through_the_feed_command():
    out = feed("tokens", "create", "--creator", OWNER, "--ttl-days", "2", FEED_SERVE_TOKEN_SECRET=SECRET)
    assert out.returncode == 0 and out.stderr == ""
    assert verify_creator_token(SECRET, out.stdout.strip()) == OWNER


def test_tokens_create_with_click(monkeypatch):
    from click.testing import CliRunner

    from serving.cli import tokens

    for name in [k for k in os.environ if k.startswith("FEED_SERVE_")]:
        monkeypatch.delenv(name)
    runner = CliRunner()
    monkeypatch.setenv("MY_SECRET", SECRET)
    result = runner.invoke(tokens, ["create", "--creator", OWNER, "--secret-env", "MY_SECRET", "--ttl-days", "1"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert verify_creator_token(SECRET, token) == OWNER
    now = time.time()
    assert verify_creator_token(SECRET, token, now=now + 86000) == OWNER
    with pytest.raises(TokenError, match="expired"):
        verify_creator_token(SECRET, token, now=now + 86500)

    dev = runner.invoke(tokens, ["create", "--creator", OWNER])  # development: the placeholder, with a warning
    assert dev.exit_code == 0 and "placeholder" in dev.stderr
    assert verify_creator_token(PLACEHOLDER_SECRET, dev.stdout.strip()) == OWNER

    missing = runner.invoke(tokens, ["create", "--creator", OWNER, "--secret-env", "NOT_SET_ANYWHERE"])
    assert missing.exit_code == 1 and "NOT_SET_ANYWHERE" in missing.stderr and missing.stdout == ""

    monkeypatch.setenv("FEED_SERVE_ENVIRONMENT", "production")
    refused_ = runner.invoke(tokens, ["create", "--creator", OWNER])
    assert refused_.exit_code == 1 and "token_secret" in refused_.stderr and refused_.stdout == ""
    assert PLACEHOLDER_SECRET not in refused_.stderr


def test_a_merchant_cannot_take_over_a_creators_video(client):
    """A merchant may edit the videos selling its products, but not change who made them (and so who earns)."""
    product = {"merchant_id": "m1", "commission_rate": 0.2}
    assert client.put("/v1/products/p-sec", json=product, headers=bearer(ADMIN_TOKEN)).status_code == 200
    video = {"creator_id": OWNER, "product_id": "p-sec", "title": "made by the owner"}
    assert client.put("/v1/videos/v-sec", json=video, headers=bearer(ADMIN_TOKEN)).status_code == 200
    merchant = bearer(MERCHANT_TOKENS["m1"])
    assert client.put("/v1/videos/v-sec", json={**video, "title": "retitled"}, headers=merchant).status_code == 200
    refused(client.put("/v1/videos/v-sec", json={**video, "creator_id": "m1-friend"}, headers=merchant), 403)
    assert client.app.state.store.video_row("v-sec")["creator_id"] == OWNER
