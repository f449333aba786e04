"""The creator dashboard in a real headless Chromium (Playwright) against a real uvicorn server and store: the
page loads cleanly, its charts draw, every number it shows is the API's, titles are text, wrong tokens show an
error instead of data. Chromium is the system's (no browser download); missing, the test skips, or fails under
CI=true."""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Self

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from feed.attribution import LedgerRules
from feed.store.store import EventStore
from serving import dashboard, stats_routes
from serving.app import create_app
from serving.auth import sign_creator_token
from serving.settings import PLACEHOLDER_SECRET, ServingSettings
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow
SCREENSHOT = REPO / "artifacts" / "screenshots" / "creator-dashboard.png"
NOW_MS = 1_767_225_600_000 + 40 * 86_400_000
HOSTILE_TITLE = '<img src=x onerror="window.__pwned = 1">Bags & "boxes" </td></tr><script>window.__pwned = 2</script>'


def needed(reason: str) -> None:
    """Skip for a missing browser piece, except under CI=true, where it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        needed("Chromium not found on PATH or at /usr/bin/chromium (apt-get install chromium)")
    return path


def dashboard_app(settings: ServingSettings) -> FastAPI:
    """The service app, with the stats and dashboard routes and /static when serving.app lacks them."""
    app = create_app(settings)
    paths = {getattr(r, "path", None) for r in app.routes}
    if "/v1/creators/{creator_id}/stats" not in paths:
        app.include_router(stats_routes.router)
    if "/creators/{creator_id}" not in paths:
        app.include_router(dashboard.router)
    if dashboard.STATIC_URL not in paths:
        dashboard.mount_static(app)
    return app


class Server:
    """uvicorn serving an app object in a thread (the app carries routes `feed serve` may not have yet)."""

    def __init__(self, app: FastAPI) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def creator(small_world) -> str:
    return str(small_world.dataset.videos["creator_id"].value_counts().index[0])


@pytest.fixture(scope="module")
def server(small_world, small_bundle_dir, tmp_path_factory, creator):
    data = small_world.dataset
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'store.db'}"
    store = EventStore(url)
    store.upgrade()
    store.upsert_products(data.products, now_ms=0)
    videos = data.videos.copy()
    first = videos.index[videos["creator_id"] == creator][0]
    videos.loc[first, "title"] = HOSTILE_TITLE  # a creator may name a video anything
    store.upsert_videos(videos)
    store.insert_events(data.events)
    store.catch_up_ledger(LedgerRules(), now_ms=NOW_MS)
    store.close()
    settings = ServingSettings(bundle=small_bundle_dir, store_url=url, reload_interval_s=0, catalog_refresh_s=0)
    with Server(dashboard_app(settings)) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needed("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


class Watched:
    """A page that records console errors, page errors, failed requests and HTTP errors."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def open(self, url: str, state: str) -> None:
        self.page.goto(url)
        self.page.wait_for_selector(f"body[data-state={state}]", timeout=15_000)


def token(creator: str) -> str:
    return sign_creator_token(PLACEHOLDER_SECRET, creator, 3600)


def lookup(data: dict, path: str):
    for key in path.split("."):
        data = data[key]
    return data


def same(shown: str, value) -> bool:
    """The page's data-value (JavaScript's String(value)) is the API's value."""
    if value is None:
        return shown == "null"
    return math.isclose(float(shown), float(value), rel_tol=1e-12, abs_tol=0)


def test_the_dashboard_shows_the_apis_numbers_and_draws_its_charts(server, browser, creator):
    api = httpx.get(f"{server.base}/v1/creators/{creator}/stats",
                    headers={"Authorization": f"Bearer {token(creator)}"}).json()
    watched = Watched(browser)
    page = watched.page
    watched.open(f"{server.base}/creators/{creator}?token={token(creator)}", "ready")
    assert watched.problems == []
    assert "token" not in page.url  # dropped from the address bar once read

    fields = page.eval_on_selector_all("[data-field]", "els => els.map(e => [e.dataset.field, e.dataset.value])")
    assert len(fields) > 30
    for field, shown in fields:
        assert same(shown, lookup(api, field)), field
    assert page.text_content("[data-field='totals.views']") == str(api["totals"]["views"])
    assert page.text_content("[data-field='totals.gmv']") == f"{api['totals']['gmv']:.2f}"

    rows = page.eval_on_selector_all("#videos tbody tr", """rows => rows.map(r => ({id: r.dataset.videoId,
        title: r.querySelector('[data-col=title]').textContent,
        cells: Object.fromEntries([...r.querySelectorAll('[data-value]')].map(c => [c.dataset.col, c.dataset.value]))}))""")
    assert [r["id"] for r in rows] == [v["video_id"] for v in api["videos"]]  # ranked by conversion, as the API
    for row, video in zip(rows, api["videos"], strict=True):
        assert row["title"] == (video["title"] or video["video_id"])
        expected = {"impressions": video["impressions"], "views": video["views"], "viewers": video["viewers"],
                    "purchases": video["purchases"], "conversion": video["conversion"]["rate"], "gmv": video["gmv"],
                    "commission": video["commission"]["accrued"], "reach": video["cascade"]["reached_users"]}
        assert all(same(row["cells"][k], v) for k, v in expected.items()), (row, expected)
    cascades = page.eval_on_selector_all("#cascades tbody tr", "rows => rows.map(r => r.dataset.rootShareId)")
    assert cascades == [c["root_share_id"] for c in api["cascades"]]
    if api["best"]:
        assert page.get_attribute("#best", "data-video-id") == api["best"]["video_id"]

    # the hostile title is text: shown verbatim, never parsed as HTML
    assert HOSTILE_TITLE in [r["title"] for r in rows]
    assert page.evaluate("window.__pwned") is None and page.locator("#videos img, #videos script").count() == 0

    charts = page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
        const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
        return {id: c.id, width: c.width, height: c.height, painted};
    })""")
    assert page.evaluate("Object.keys(Chart.instances).length") == 2
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 100 and chart["painted"] > 2_000, chart
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()


def test_the_token_may_come_in_the_fragment_and_a_range_passes_through(server, browser, creator):
    watched = Watched(browser)
    watched.open(f"{server.base}/creators/{creator}?from=2026-01-05&to=2026-01-08#token={token(creator)}", "ready")
    assert watched.problems == []
    assert watched.page.text_content("#range").startswith("From 2026-01-05T00:00:00+00:00 to 2026-01-08")
    days = watched.page.evaluate("Chart.instances[Object.keys(Chart.instances)[1]].data.labels")
    assert days[0] >= "2026-01-05" and days[-1] == "2026-01-07"
    watched.page.close()


@pytest.mark.parametrize(("link", "message"), [
    ("?token={other}", "another creator"),
    ("?token=not-a-token", "no valid token"),
    ("", "has no token"),
    ("?token={own}&from=2026-02-01&to=2026-01-01", "'from' must be earlier than 'to'"),
])
def test_a_wrong_token_shows_an_error_not_data(server, browser, creator, link, message):
    watched = Watched(browser)
    page = watched.page
    watched.open(f"{server.base}/creators/{creator}" + link.format(other=token("someone-else"), own=token(creator)),
                 "error")
    assert message in page.text_content("#error") and page.is_visible("#error")
    assert page.is_hidden("#content") and page.locator("[data-value]").count() == 0
    assert page.locator("#videos tbody tr").count() == 0 and page.evaluate("Object.keys(Chart.instances).length") == 0
    assert all("HTTP 4" in p or "Failed to load resource" in p for p in watched.problems), watched.problems
    page.close()


def test_the_page_and_its_files_are_served_with_a_strict_policy(small_bundle_dir, tmp_path):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=f"sqlite:///{tmp_path / 's.db'}",
                               reload_interval_s=0, catalog_refresh_s=0)
    with TestClient(dashboard_app(settings)) as client:
        page = client.get("/creators/u1?token=abc")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "<script>" not in page.text
        assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
        for path in ("/static/dashboard.js", "/static/vendor/chart.umd.min.js"):
            script = client.get(path)
            assert script.status_code == 200 and "javascript" in script.headers["content-type"], path
        assert "Chart.js v4" in client.get("/static/vendor/chart.umd.min.js").text[:200]
        assert "innerHTML" not in client.get("/static/dashboard.js").text
        assert client.get("/creators/" + "x" * 129).status_code == 422
