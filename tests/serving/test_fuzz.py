"""Schemathesis against the OpenAPI schema of every route of a real server: no 5xx, no response that breaks
the schema, whatever the generated input (admin credentials, so that guards do not hide the routes)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import free_port
from tests.serving.test_durability import Server

pytestmark = pytest.mark.slow
ADMIN = "admin-token-for-the-fuzz-test"
EXAMPLES = int(os.environ.get("FEED_FUZZ_EXAMPLES", "30"))  # per route; raise it for a longer hunt


@pytest.fixture(scope="module")
def server(small_bundle_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    server = Server(small_bundle_dir, f"sqlite:///{work / 'store.db'}", free_port(), work / "server.log")
    server.env.update({"FEED_SERVE_ADMIN_TOKEN": ADMIN, "FEED_SERVE_MERCHANT_TOKENS": '{"m1": "merchant-token-m1-0123"}'})
    server.start()
    yield server
    server.stop()


def test_no_route_fails_or_breaks_its_schema(server):
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            fuzz(operation)
        except Exception as exc:  # noqa: BLE001 - collected: one report for every failing route
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def fuzz(operation) -> None:
    """Hypothesis over one operation's generated requests."""

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        # semantic refusals of schema-valid input (a cursor that fails its checksum, an unknown id) are answers,
        # not failures; every other check runs: no 5xx, documented statuses, response schemas and headers
        case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN}"}, excluded_checks=[positive_data_acceptance])

    run()
