"""The serving package's `feed serve` command."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from feed.paths import resolve_tracking_uri
from serving.settings import DEFAULT_MODEL_URI

if TYPE_CHECKING:
    from serving.settings import ServingSettings


def load_settings(**given: Any) -> ServingSettings:
    """Settings from defaults, FEED_SERVE_* and `given`; a one-line ClickException (exit 1) when invalid."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from serving.settings import ServingSettings

    try:
        return ServingSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:  # inputs are hidden (hide_input_in_errors): no secret reaches the terminal
        problems = [": ".join(filter(None, (".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, "))))
                    for e in exc.errors(include_url=False, include_input=False)]
        raise click.ClickException("invalid serving settings: " + "; ".join(problems)) from None
    except SettingsError as exc:
        raise click.ClickException(f"invalid serving settings: {exc}") from None


@click.command()
@click.option("--model", "model_uri", help=f"Registered model to serve [default: {DEFAULT_MODEL_URI}].")
@click.option("--bundle", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Serve a bundle folder instead of a registered model.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./.mlflow/mlflow.db).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--sample/--no-sample", default=True, show_default=True,
              help="Once up, print sample feeds for two users and the useful URLs.")
@click.option("--reload-interval", type=click.FloatRange(0), default=None,
              help="Seconds between checks for a new champion (0 = never) [default: 30, or $FEED_SERVE_RELOAD_INTERVAL_S].")
@click.option("--store", "store_url", help="Event store URL [default: sqlite:///.feed/store.db, or "
              "$FEED_SERVE_STORE_URL]; '' disables ingestion and real-time.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--log-format", type=click.Choice(["auto", "text", "json"]), default=None,
              help="Log lines as JSON objects or text; auto = JSON in production [default: auto, or "
              "$FEED_SERVE_LOG_FORMAT].")
def serve(model_uri: str | None, bundle: Path | None, tracking_uri: str | None, host: str, port: int,
          sample: bool, reload_interval: float | None, store_url: str | None, log_level: str,
          log_format: str | None) -> None:
    """Serve personalized feeds over HTTP (FastAPI + uvicorn) until interrupted."""
    import uvicorn

    from serving.app import create_app, open_store
    from serving.auth import warn_if_open
    from serving.model_source import load_model
    from serving.observability import configure_logging

    if model_uri and bundle:
        raise click.UsageError("give --model or --bundle, not both")
    settings = load_settings(bundle=bundle, model_uri=model_uri, tracking_uri=tracking_uri,
                             reload_interval_s=reload_interval, store_url=store_url, log_format=log_format)
    log_config = configure_logging(log_level, settings.resolved_log_format)
    warn_if_open(settings)
    store = open_store(settings)  # migrate, then load: fail before binding the port, naming the file or URL
    model = load_model(settings, store)
    app = create_app(settings, model, store)
    # access_log=False: serving.access (ObserveRequests) writes the one access line per request; uvicorn's own
    # would be a second one (its log_level re-enables uvicorn.access after our logging config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=log_config,
                                           access_log=False))
    if sample:
        threading.Thread(target=_print_when_up, args=(server, app, settings), daemon=True).start()
    # uvicorn finishes the requests in flight on SIGINT/SIGTERM, then re-raises the signal with the handler it
    # found: for SIGTERM (what orchestrators send) that handler makes the stop a normal exit 0, not a -15 kill
    signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after its graceful shutdown: a normal stop
        pass
    if not server.started:
        sys.exit(3)


def _stopped(signum: int, frame: object) -> None:
    """SIGTERM after uvicorn's graceful shutdown: exit normally."""
    raise SystemExit(0)


def _print_when_up(server: object, app: object, settings: object) -> None:
    """Wait for the server to start, then fetch and print sample feeds through the real HTTP API."""
    deadline = time.monotonic() + 600
    while not getattr(server, "started", False):
        if time.monotonic() > deadline or getattr(server, "should_exit", False):
            return
        time.sleep(0.1)
    base = _base_url(server)
    model = app.state.holder.current
    users = list(model.service.bundle.manifest.get("sample_user_ids", []))[:2]
    if not _print_samples(base, users):
        return  # the server went away (stopped right after it started): nothing more to show
    click.echo(f"\nAPI docs:     {base}/docs")
    click.echo(f"Feed:         {base}/v1/users/{users[0] if users else 'USER_ID'}/feed?limit=20")
    click.echo(f"Serving:      {model.source} (version {model.version})")
    if settings.bundle is None:
        uri = resolve_tracking_uri(settings.tracking_uri)
        click.echo(f"MLflow store: {uri}\n              browse it: mlflow ui --backend-store-uri {uri}")
    click.echo("Press Ctrl+C to stop.")
    if (dashboard := _dashboard_url(base, app, settings)) is not None:  # last: it waits for the ledger
        click.echo(f"Dashboard:    {dashboard}")


def _dashboard_url(base: str, app: Any, settings: ServingSettings, wait_s: float = 30.0) -> str | None:
    """The dashboard of the creator who earned most, with a development token; None when nobody earned yet."""
    from serving.auth import sign_creator_token

    store, deadline = app.state.store, time.monotonic() + wait_s
    while store is not None and store.ledger_backlog() and time.monotonic() < deadline:
        time.sleep(0.5)  # the ledger worker is still catching up with a freshly loaded store
    earned = store.ledger_entries() if store is not None else None
    if earned is None or not (earned["role"] == "creator").any():
        return None
    top = str(earned[earned["role"] == "creator"].groupby("beneficiary_id")["amount"].sum().idxmax())
    if settings.environment != "development":
        return f"{base}/creators/{top}#token=<the output of: feed tokens create --creator {top}>"
    token = sign_creator_token(settings.token_secret.get_secret_value(), top, 86_400)
    return f"{base}/creators/{top}#token={token}"


def _base_url(server: object) -> str:
    """http://host:port of the running server (the real port when 0 was asked)."""
    config = server.config
    port = config.port
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            port = sock.getsockname()[1]
    return f"http://{config.host}:{port}"


def _print_samples(base: str, users: list[str]) -> bool:
    """Print the users' feeds; False (and one line on stderr) when the server stopped answering meanwhile."""
    import httpx

    try:
        for user in users:
            _print_feed(base, user)
    except httpx.HTTPError as exc:
        click.echo(f"sample feeds not shown: {base} stopped answering ({type(exc).__name__})", err=True)
        return False
    return True


def _print_feed(base: str, user: str) -> None:
    """GET one user's feed and print it as a table."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    body = httpx.get(f"{base}/v1/users/{user}/feed", params={"limit": 8}, timeout=30).json()
    table = Table(title=f"GET /v1/users/{user}/feed?limit=8  (model {body['model_version']})")
    for column in ("#", "video", "creator", "product", "price", "commission", "reason"):
        table.add_column(column)
    for rank, item in enumerate(body["items"], 1):
        product = item["product"] or {}
        table.add_row(str(rank), item["video_id"], item["creator_id"] or "—", product.get("product_id", "—"),
                      _money(product.get("price")), _pct(product.get("commission_rate")), item["reason"])
    Console().print(table)


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


@click.group()
def db() -> None:
    """Event store administration."""


@db.command()
@click.option("--store", "store_url", help="Event store URL [default: $FEED_SERVE_STORE_URL or sqlite:///.feed/store.db].")
def upgrade(store_url: str | None) -> None:
    """Apply the store's migrations up to the current schema (the service also does this at start)."""
    from feed.store.store import EventStore

    settings = load_settings(store_url=store_url or None)
    if settings.store is None:
        raise click.UsageError("no store URL given")
    store = EventStore(settings.store)
    click.echo(f"{store!r} is at revision {store.upgrade()}")
    store.close()


@db.command()
@click.option("--store", "store_url", help="Event store URL [default: $FEED_SERVE_STORE_URL or sqlite:///.feed/store.db].")
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="Dataset folder whose catalog (videos, products, follows) is upserted into the store.")
@click.option("--with-events", is_flag=True, help="Also insert its events (idempotent on event_id).")
def load(store_url: str | None, data: Path, with_events: bool) -> None:
    """Seed the store with a dataset's catalog (and events), e.g. before the app starts posting events."""
    from feed.io import load_dataset
    from feed.store.store import EventStore

    settings = load_settings(store_url=store_url or None)
    if settings.store is None:
        raise click.UsageError("no store URL given")
    dataset, store = load_dataset(data), EventStore(settings.store)
    store.upgrade()
    for name, write in (("products", store.upsert_products), ("videos", store.upsert_videos),
                        ("follows", store.upsert_follows)):
        table = getattr(dataset, name)
        click.echo(f"{name}: {0 if table is None else write(table):,} rows")
    if with_events:
        inserted = sum(store.insert_events(dataset.events.iloc[i:i + 50_000]).inserted
                       for i in range(0, len(dataset.events), 50_000))
        click.echo(f"events: {inserted:,} inserted")
    store.close()


@click.group()
def tokens() -> None:
    """Creator tokens: signed links that let one creator read their own stats and dashboard."""


@tokens.command("create")
@click.option("--creator", "creator_id", required=True, help="The creator (a user id) the token is for.")
@click.option("--ttl-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Days the token stays valid [default: FEED_SERVE_CREATOR_TOKEN_TTL_S, 30 days].")
@click.option("--secret-env", default="FEED_SERVE_TOKEN_SECRET", show_default=True,
              help="Environment variable holding the signing secret (the service's token_secret).")
@click.option("--dev", is_flag=True, help="Allow the development placeholder secret (tokens for local use only).")
def create_token(creator_id: str, ttl_days: float | None, secret_env: str, dev: bool) -> None:
    """Print a signed token for one creator on stdout (give it to them, e.g. as /creators/ID#token=...)."""
    from serving.auth import sign_creator_token
    from serving.settings import PLACEHOLDER_SECRET

    given = {"token_secret": os.environ[secret_env]} if secret_env in os.environ else {}
    if secret_env != "FEED_SERVE_TOKEN_SECRET" and not given:
        raise click.ClickException(f"--secret-env {secret_env}: that environment variable is not set")
    settings = load_settings(**given)
    secret = settings.token_secret.get_secret_value()
    if secret == PLACEHOLDER_SECRET:
        if not (dev or settings.environment == "development"):
            raise click.ClickException("the token secret is the development placeholder: set "
                                       f"{secret_env}, or pass --dev for a local token")
        click.echo(f"warning: signed with the development placeholder secret ({secret_env} is not set); "
                   "a service with a real secret will refuse this token", err=True)
    if not creator_id.strip():
        raise click.UsageError("--creator must be a non-empty id")
    ttl_s = ttl_days * 86400 if ttl_days is not None else settings.creator_token_ttl_s
    click.echo(sign_creator_token(secret, creator_id, ttl_s))
