"""`feed ledger rebuild` and `feed ledger export` on a real SQLite store holding the small world."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from decimal import Decimal

import pandas as pd
import pytest
from click.testing import CliRunner

from feed.attribution import LedgerRules
from feed.store import EventStore
from training.ledger_cli import EXPORT_COLUMNS, ledger


@pytest.fixture
def world_store(tmp_path, small_world) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = EventStore(url)
    store.upgrade()
    store.upsert_videos(small_world.dataset.videos)
    store.upsert_products(small_world.dataset.products)
    store.insert_events(small_world.dataset.events)
    store.close()
    return url


def feed(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEED_")}
    return subprocess.run([sys.executable, "-m", "feed.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_rebuild_then_export_through_the_real_entry_point(world_store, tmp_path, small_world):
    done = feed("ledger", "rebuild", "--store", world_store, "--as-of", "2030-01-01")
    assert done.returncode == 0, done.stderr
    assert "appended" in done.stdout and "creator  accrual" in done.stdout
    again = feed("ledger", "rebuild", "--store", world_store, "--as-of", "2030-01-01")
    assert "appended 0 entries" in again.stdout  # idempotent

    out = tmp_path / "ledger.csv"
    done = feed("ledger", "export", "--store", world_store, "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    store = EventStore(world_store)
    entries = store.ledger_entries()
    store.close()
    assert len(rows) == len(entries) > 0
    assert {r["kind"] for r in rows} == {"accrual", "clawback", "settlement"}
    assert all(len(r["amount"].split(".")[1]) == 2 for r in rows)  # exact cents, never 0.30000000000000004
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal(int((entries["amount"] * 100).round().sum())) / 100
    assert rows[0]["ts"].endswith("Z") and pd.Timestamp(rows[0]["ts"]) == entries["ts"].iloc[0]


def test_export_filters_and_writes_to_stdout(world_store):
    store = EventStore(world_store)
    store.catch_up_ledger(LedgerRules())
    creator = store.ledger_entries()["beneficiary_id"].iloc[0]
    store.close()
    result = CliRunner().invoke(ledger, ["export", "--store", world_store, "--out", "-", "--beneficiary", creator,
                                         "--since", "2020-01-01"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and {r["beneficiary_id"] for r in rows} == {creator}


def test_usage_errors_and_store_errors(world_store, tmp_path):
    bad = feed("ledger", "rebuild", "--store", world_store, "--as-of", "yesterday-ish")
    assert bad.returncode == 2 and "--as-of" in bad.stderr
    bad = feed("ledger", "rebuild", "--store", world_store, "--sharer-rate", "2")
    assert bad.returncode == 2
    bad = feed("ledger", "rebuild", "--store", world_store, "--currency", "dollars")
    assert bad.returncode == 2 and "currency" in bad.stderr
    missing = feed("ledger", "export", "--store", f"sqlite:///{tmp_path / 'none.db'}", "--out", "-")
    assert missing.returncode == 1 and "feed db upgrade" in missing.stderr
    assert feed("ledger", "export", "--out", "-").returncode == 2  # no store given


def test_rebuild_reads_the_rules_the_server_is_configured_with(world_store):
    """The server reads FEED_SERVE_LEDGER_*; a rebuild in the same environment must not undo its ledger."""
    served = LedgerRules(window_days=3.0, sharer_rate=0.05, settlement_days=2.0)
    store = EventStore(world_store)
    store.catch_up_ledger(served, now_ms=1_900_000_000_000)
    store.close()
    env = {"FEED_SERVE_LEDGER_WINDOW_DAYS": "3", "FEED_SERVE_LEDGER_SHARER_RATE": "0.05",
           "FEED_SERVE_LEDGER_SETTLEMENT_DAYS": "2", "FEED_SERVE_LEDGER_CURRENCY": "USD"}
    result = CliRunner().invoke(ledger, ["rebuild", "--store", world_store, "--as-of", "2030-03-17T17:46:40Z"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert "appended 0 entries" in result.output
