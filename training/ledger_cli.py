"""`feed ledger`: rebuild the commission ledger from the event store, and export it as CSV."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click
import pandas as pd

from feed.attribution import LedgerRules

STORE_HELP = "Event store URL (e.g. sqlite:///.feed/store.db) [env: FEED_SERVE_STORE_URL]."
EXPORT_COLUMNS = ("entry_id", "order_id", "beneficiary_id", "role", "kind", "amount", "currency", "ts")
DEFAULTS = LedgerRules()


def _env(name: str) -> list[str]:
    """The server's variable first (FEED_SERVE_LEDGER_*, what its worker uses), so a rebuild in the server's
    environment applies the same rule instead of appending "corrections" to it; FEED_LEDGER_* still works."""
    return [f"FEED_SERVE_LEDGER_{name}", f"FEED_LEDGER_{name}"]


@click.group()
def ledger() -> None:
    """The commission ledger: creators and direct sharers paid for the purchases they brought."""


@ledger.command()
@click.option("--store", "store_url", envvar="FEED_SERVE_STORE_URL", required=True, help=STORE_HELP)
@click.option("--window-days", type=click.FloatRange(0), default=DEFAULTS.window_days, show_default=True,
              envvar=_env("WINDOW_DAYS"), help="A share link earns for purchases this long after it was made.")
@click.option("--sharer-rate", type=click.FloatRange(0, 1), default=DEFAULTS.sharer_rate, show_default=True,
              envvar=_env("SHARER_RATE"), help="The direct sharer's commission, a fraction of the amount.")
@click.option("--settlement-days", type=click.FloatRange(0), default=DEFAULTS.settlement_days, show_default=True,
              envvar=_env("SETTLEMENT_DAYS"), help="Accruals settle this long after the purchase.")
@click.option("--currency", default=DEFAULTS.currency, show_default=True, envvar=_env("CURRENCY"))
@click.option("--as-of", help="Settle as of this ISO date/time (UTC) instead of now.")
def rebuild(store_url: str, window_days: float, sharer_rate: float, settlement_days: float, currency: str,
            as_of: str | None) -> None:
    """Recompute every order from the stored events; append only the corrections (none when up to date)."""
    from feed.store.store import EventStore

    rules = _rules(window_days, sharer_rate, settlement_days, currency)
    now_ms = None if as_of is None else int(_time(as_of, "--as-of").value // 1_000_000)
    store = EventStore(store_url)
    try:
        store.check()
        run = store.rebuild_ledger(rules, now_ms)
        totals = _totals(store.ledger_entries())
    finally:
        store.close()
    click.echo(f"looked at {run.orders:,} orders; appended {run.entries:,} entries")
    for (role, kind), amount in totals.items():
        click.echo(f"  {role:<8} {kind:<11} {amount:>14} {currency}")


@ledger.command()
@click.option("--store", "store_url", envvar="FEED_SERVE_STORE_URL", required=True, help=STORE_HELP)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True), required=True,
              help="CSV file to write ('-' for stdout).")
@click.option("--beneficiary", help="Only this creator's or sharer's entries.")
@click.option("--since", help="Only entries at or after this ISO date/time (UTC).")
@click.option("--until", help="Only entries before this ISO date/time (UTC).")
def export(store_url: str, out: Path, beneficiary: str | None, since: str | None, until: str | None) -> None:
    """Write ledger entries as CSV: entry_id, order_id, beneficiary_id, role, kind, amount, currency, ts."""
    from feed.store.store import EventStore

    bounds = [None if v is None else _time(v, flag) for v, flag in ((since, "--since"), (until, "--until"))]
    store = EventStore(store_url)
    try:
        store.check()
        entries = store.ledger_entries(beneficiary, None, *bounds)
    finally:
        store.close()
    rows = export_rows(entries)
    if str(out) == "-":
        _write_csv(sys.stdout, rows)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as handle:
            _write_csv(handle, rows)
        click.echo(f"wrote {len(rows):,} entries to {out}", err=True)


def export_rows(entries: pd.DataFrame) -> list[tuple[str, ...]]:
    """Ledger entries as CSV rows: amounts exact to the cent ('12.30'), times ISO-8601 UTC with milliseconds."""
    from feed.store.ledger import money

    cents = (entries["amount"] * 100).round().astype("int64")
    stamps = entries["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    return [(*row[:5], money(c), row[6], ts) for row, c, ts in
            zip(entries[list(EXPORT_COLUMNS)].itertuples(index=False), cents, stamps, strict=True)]


def _write_csv(handle: object, rows: list[tuple[str, ...]]) -> None:
    """The header, then the rows."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(rows)


def _totals(entries: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(role, kind) → exact total."""
    from feed.store.ledger import money

    cents = (entries["amount"] * 100).round().astype("int64")
    sums = cents.groupby([entries["role"], entries["kind"]]).sum()
    return {key: money(int(v)) for key, v in sums.items()}


def _rules(window_days: float, sharer_rate: float, settlement_days: float, currency: str) -> LedgerRules:
    """The rules from the flags; a bad value is a usage error."""
    try:
        return LedgerRules(window_days, sharer_rate, settlement_days, currency)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _time(text: str, flag: str) -> pd.Timestamp:
    """An ISO date/time as a UTC timestamp; a usage error naming the flag otherwise."""
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an ISO date/time such as 2026-05-01T12:00:00Z",
                                 param_hint=flag) from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
