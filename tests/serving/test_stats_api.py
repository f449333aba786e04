"""Creator and merchant stats over HTTP: the generated world stored in a real store (SQLite and PostgreSQL),
its ledger caught up, and every number checked against feed.analytics computed from the world's own frames."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from feed import analytics
from feed.attribution import LedgerRules, RateBook, compute_ledger
from feed.store.store import EventStore
from serving import stats_routes
from serving.app import create_app
from serving.auth import sign_creator_token
from serving.settings import PLACEHOLDER_SECRET, ServingSettings

NOW_MS = 1_767_225_600_000 + 40 * 86_400_000  # 40 days after the world starts: every order has settled
ADMIN = {"Authorization": "Bearer admin-secret"}
EXTRA_SERVED = 50  # served rows with no impression event: each one adds an impression


def stats_app(settings: ServingSettings) -> FastAPI:
    """The service app, with the stats router included when serving.app does not include it yet."""
    app = create_app(settings)
    if not any(getattr(r, "path", None) == "/v1/creators/{creator_id}/stats" for r in app.routes):
        app.include_router(stats_routes.router)
    return app


def bearer(creator: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign_creator_token(PLACEHOLDER_SECRET, creator, 3600)}"}


class World:
    """The small world's frames, the served rows logged for it, and its busiest creator and merchant."""

    def __init__(self, small_world) -> None:
        data = small_world.dataset
        self.events, self.videos, self.products = data.events, data.videos, data.products
        self.creator = str(data.videos["creator_id"].value_counts().index[0])
        self.merchant = str(data.products["merchant_id"].value_counts().index[0])
        self.served = served_rows(self.events, self.videos[self.videos["creator_id"] == self.creator])
        self.ledger = compute_ledger(self.events, self.videos, RateBook.current(self.products), LedgerRules(), NOW_MS)

    def load(self, url: str) -> None:
        """Store the world, log the served rows and catch the ledger up."""
        store = EventStore(url)
        store.upgrade()
        store.upsert_products(self.products, now_ms=0)
        store.upsert_videos(self.videos)
        store.insert_events(self.events)
        store.log_impressions(self.served)
        store.catch_up_ledger(LedgerRules(), now_ms=NOW_MS)
        store.close()


def served_rows(events: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """Served rows for 200 of the videos' impression events (the same impressions) and EXTRA_SERVED new ones."""
    shown = events[(events["event"] == "impression") & events["video_id"].isin(videos["video_id"])].head(200)
    rows = shown[["request_id", "user_id", "video_id", "ts"]].copy()
    extra = rows.head(EXTRA_SERVED).assign(request_id=[f"extra-{i}" for i in range(EXTRA_SERVED)])
    rows = pd.concat([rows, extra], ignore_index=True)
    return rows.assign(position=range(len(rows)), source="video")


@pytest.fixture(scope="module")
def world(small_world) -> World:
    return World(small_world)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request, world, small_bundle_dir, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('stats') / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_schemas")()
    world.load(url)
    other = "m-other" if world.merchant != "m-other" else "m-else"
    settings = ServingSettings(bundle=small_bundle_dir, store_url=url, reload_interval_s=0, catalog_refresh_s=0,
                               admin_token="admin-secret",
                               merchant_tokens={world.merchant: "merchant-secret", other: "other-merchant"})
    with TestClient(stats_app(settings)) as client:
        yield client


def for_api(stats: dict) -> dict:
    """analytics' dict as the API shows it (without products, the API has no per-video commission rate)."""
    return {**stats, "videos": [{k: v for k, v in row.items() if k != "commission_rate"} for row in stats["videos"]]}


def get(client: TestClient, path: str, headers=ADMIN, status: int = 200, **params) -> dict:
    response = client.get(path, headers=headers, params=params)
    assert response.status_code == status, response.text
    return response.json()


def test_creator_stats_equal_analytics_on_the_same_frames(api, world):
    body = get(api, f"/v1/creators/{world.creator}/stats", headers=bearer(world.creator))
    mine = world.videos[world.videos["creator_id"] == world.creator]
    expected = analytics.creator_stats(mine, None, world.events, world.served, world.ledger, creator_id=world.creator)
    assert body == for_api(expected)
    # and a few of them straight from the frames, without feed.analytics
    on_mine = world.events[world.events["video_id"].isin(mine["video_id"])]
    assert body["totals"]["views"] == (on_mine["event"] == "view").sum() > 0
    assert body["totals"]["purchases"] == on_mine.loc[on_mine["event"] == "purchase", "order_id"].nunique() > 0
    shown = on_mine[on_mine["event"] == "impression"]
    assert body["totals"]["impressions"] == len(shown[["request_id", "user_id", "video_id"]].drop_duplicates()) + \
        EXTRA_SERVED
    earned = world.ledger[(world.ledger["beneficiary_id"] == world.creator) & (world.ledger["kind"] == "accrual")]
    assert body["totals"]["commission"]["total"]["accrued"] == pytest.approx(earned["amount"].sum())
    assert sum(day["views"] for day in body["daily"]) == body["totals"]["views"]


def test_a_range_is_from_inclusive_to_exclusive(api, world):
    body = get(api, f"/v1/creators/{world.creator}/stats", **{"from": "2026-01-05", "to": "2026-01-12T00:00:00Z"})
    since, until = pd.Timestamp("2026-01-05", tz="UTC"), pd.Timestamp("2026-01-12", tz="UTC")
    mine = world.videos[world.videos["creator_id"] == world.creator]
    expected = analytics.creator_stats(mine, None, analytics.in_range(world.events, since, until), world.served,
                                       world.ledger, since, until, creator_id=world.creator)
    assert body == for_api(expected)
    assert body["daily"][0]["date"] >= "2026-01-05" and body["daily"][-1]["date"] <= "2026-01-11"
    assert body["range"] == {"from": "2026-01-05T00:00:00+00:00", "to": "2026-01-12T00:00:00+00:00"}
    offset = get(api, f"/v1/creators/{world.creator}/stats", **{"from": "2026-01-05T01:00:00+01:00"})
    assert offset["range"]["from"] == "2026-01-05T00:00:00+00:00"


def test_a_range_counts_refunds_of_orders_bought_before_it(small_bundle_dir, tmp_path):
    """A refund in the range of an order bought earlier takes back what it refunded: the whole order when it has
    no amount, and never more than the order's amount left after earlier refunds."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = EventStore(url)
    store.upgrade()
    store.upsert_products(pd.DataFrame({"product_id": ["p"], "merchant_id": ["m1"], "commission_rate": [0.1]}))
    store.upsert_videos(pd.DataFrame({"video_id": ["v"], "creator_id": ["c1"], "product_id": ["p"],
                                      "duration_ms": [1000]}))
    day = pd.Timestamp("2026-01-01", tz="UTC")
    rows = [("b1", "o1", "purchase", 0, 50.0), ("r1", "o1", "refund", 9, None),  # bought before, blank refund
            ("b2", "o2", "purchase", 0, 50.0), ("r2", "o2", "refund", 1, 40.0), ("r3", "o2", "refund", 9, 40.0)]
    store.insert_events(pd.DataFrame({
        "event_id": [r[0] for r in rows], "ts": pd.Series([day + pd.Timedelta(days=r[3]) for r in rows]),
        "user_id": "u", "video_id": "v", "event": [r[2] for r in rows], "order_id": [r[1] for r in rows],
        "amount": [r[4] for r in rows]}))
    store.catch_up_ledger(LedgerRules(), now_ms=NOW_MS)
    store.close()
    settings = ServingSettings(bundle=small_bundle_dir, store_url=url, reload_interval_s=0, catalog_refresh_s=0,
                               admin_token="admin-secret", merchant_tokens={"m1": "merchant-secret"})
    with TestClient(stats_app(settings)) as client:
        for path in ("/v1/creators/c1/stats", "/v1/merchants/m1/stats"):
            totals = get(client, path, **{"from": "2026-01-05", "to": "2026-01-20"})["totals"]
            assert (totals["purchases"], totals["refunds"]) == (0, 2), path
            assert (totals["refunded"], totals["gmv"]) == (60.0, -60.0), path  # 50 + the 10 left of o2


def test_merchant_stats_equal_analytics_on_the_same_frames(api, world):
    body = get(api, f"/v1/merchants/{world.merchant}/stats", headers={"Authorization": "Bearer merchant-secret"})
    products = world.products[world.products["merchant_id"] == world.merchant]
    expected = analytics.merchant_stats(products, world.videos, world.events, world.served, world.ledger,
                                        merchant_id=world.merchant)
    assert body == expected
    assert body["creators"] and body["totals"]["purchases"] == sum(p["purchases"] for p in body["products"]) > 0


def test_a_creator_without_videos_sees_their_sharer_commission(api, world):
    sharers = set(world.ledger.loc[world.ledger["role"] == "sharer", "beneficiary_id"]) - set(world.videos["creator_id"])
    sharer = min(sharers)
    body = get(api, f"/v1/creators/{sharer}/stats", headers=bearer(sharer))
    assert body["videos"] == [] and body["totals"]["views"] == 0
    assert body["totals"]["commission"]["sharer"]["accrued"] > 0 == body["totals"]["commission"]["creator"]["accrued"]


def test_access_is_the_admin_or_that_creator(api, world):
    path = f"/v1/creators/{world.creator}/stats"
    assert api.get(path).status_code == 401
    assert api.get(path, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    response = api.get(path, headers=bearer("someone-else"))
    assert response.status_code == 403 and world.creator not in response.text
    token = sign_creator_token(PLACEHOLDER_SECRET, world.creator, 3600)
    assert api.get(path, params={"token": token}).status_code == 200
    response = api.get(path, headers=bearer(world.creator))
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    merchant = f"/v1/merchants/{world.merchant}/stats"
    assert api.get(merchant).status_code == 401
    assert api.get(merchant, headers={"Authorization": "Bearer other-merchant"}).status_code == 403
    assert api.get(merchant, headers=bearer(world.creator)).status_code == 401


def test_unknown_creators_and_merchants_are_404_without_details(api):
    for path, headers in [("/v1/creators/nobody/stats", ADMIN), ("/v1/creators/ghost/stats", bearer("ghost")),
                          ("/v1/merchants/m-other/stats", ADMIN)]:
        response = api.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["detail"] in ("unknown creator 'nobody'", "unknown creator 'ghost'",
                                             "unknown merchant 'm-other'")


@pytest.mark.parametrize(("params", "message"), [
    ({"from": "2026-01-10", "to": "2026-01-10"}, "'from' must be earlier than 'to'"),
    ({"from": "2026-01-10", "to": "2026-01-09T23:59:59Z"}, "'from' must be earlier than 'to'"),
    ({"from": "yesterday"}, "'from' must be an ISO-8601 date or date-time"),
    ({"to": "2026-13-01"}, "'to' must be an ISO-8601 date or date-time"),
    ({"to": "9" * 500}, "got 500 characters"),
])
def test_bad_ranges_are_422_with_a_clear_message(api, world, params, message):
    for path in (f"/v1/creators/{world.creator}/stats", f"/v1/merchants/{world.merchant}/stats"):
        response = api.get(path, headers=ADMIN, params=params)
        assert response.status_code == 422 and message in response.json()["detail"]


def test_a_bad_range_without_a_token_is_401_not_422(api, world):
    assert api.get(f"/v1/creators/{world.creator}/stats", params={"from": "x"}).status_code == 401


def test_an_unreachable_store_is_503_with_retry_after(small_bundle_dir, tmp_path):
    settings = ServingSettings(bundle=small_bundle_dir, store_url=f"sqlite:///{tmp_path / 's.db'}",
                               reload_interval_s=0, catalog_refresh_s=0, admin_token="admin-secret",
                               merchant_tokens={"m1": "merchant-secret"})
    with TestClient(stats_app(settings)) as client:
        (tmp_path / "s.db").unlink()
        (tmp_path / "s.db").mkdir()  # the file is gone and cannot be created again
        client.app.state.store.close()
        for path in ("/v1/creators/c1/stats", "/v1/merchants/m1/stats"):
            response = client.get(path, headers=ADMIN)
            assert response.status_code == 503 and response.headers["retry-after"] == "5", response.text
