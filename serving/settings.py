"""Serving settings: defaults < FEED_SERVE_* environment < `feed serve` flags; validated once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feed.attribution import LedgerRules
from feed.candidates import FUSED_SOURCES, CandidateConfig
from feed.rerank import PageConfig
from feed.service import FeedConfig

DEFAULT_MODEL_URI = "models:/selfretail-feed@champion"
DEFAULT_STORE_URL = "sqlite:///.feed/store.db"
PLACEHOLDER_SECRET = "dev-only-change-me"  # the development token secret; refused in production
MIN_SECRET_CHARS = 32  # token_secret in production
MIN_KEY_CHARS = 16  # app keys, admin and merchant tokens in production


class ServingSettings(BaseSettings):
    """Where the model comes from and how feeds are built."""

    model_config = SettingsConfigDict(env_prefix="FEED_SERVE_", extra="forbid", frozen=True,
                                      hide_input_in_errors=True)  # errors must not print secrets

    bundle: Path | None = None
    model_uri: str | None = None
    tracking_uri: str | None = None
    cache_dir: Path = Path(".mlflow/cache")
    ranking: Literal["ranker", "retrieval", "popular"] = Field(
        "ranker", description="ranker: the bundle's ranker and value formula; retrieval: fused source ranks only.")
    ranker_weight: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the ranker's rank against the "
                                 "retrieval rank in the final order (1 = ranker only).")
    rank_depth: int = Field(FeedConfig().rank_depth, ge=0, description="The ranker scores this many candidates, "
                            "the best by fused retrieval score, plus the exploration slots' picks; 0: every candidate.")
    quotas: dict[str, int] = Field(default_factory=dict, description="Candidates per source, e.g. {\"video\": 300}; "
                                   "unnamed sources keep their defaults, 0 turns one off.")
    videos_per_creator: int = Field(3, ge=1)
    max_per_creator: int = Field(2, ge=1, description="At most this many videos of one creator per page.")
    max_per_product: int = Field(1, ge=1)
    max_per_merchant: int = Field(3, ge=1)
    mmr_lambda: float = Field(0.75, ge=0.0, le=1.0, description="MMR trade-off: 1 = relevance only.")
    recent_impression_hours: float = Field(
        6.0, ge=0, description="Hide videos the user was shown this many hours ago or less; 0 = off.")
    hide_out_of_stock: bool = True
    faiss_threads: int = Field(1, ge=1, description="OpenMP threads per FAISS search (requests run in parallel).")
    feed_threads: int = Field(4, ge=1, description="Feed requests reading the store at once per process (real-time "
                              "state, follows, blocks: I/O, in worker threads). The ranking itself is CPU work "
                              "and runs on the event loop, one feed at a time: run more workers or replicas.")
    feed_lane: bool = Field(True, description="Answer feed calls that pass every check in front of FastAPI's "
                            "middleware and router (`serving.feed_lane`: 1.12x the feeds per second at 1M); false "
                            "sends them through FastAPI's stack like every other route (needed when app middleware "
                            "or dependency overrides must see feed calls).")
    reload_interval_s: float = Field(30.0, ge=0, description="How often to check for a new champion; 0 = never.")
    environment: Literal["development", "production"] = Field(
        "development", description="production refuses to start with placeholder or missing secrets.")
    app_keys: list[SecretStr] = Field(default_factory=list, description="Bearer keys of the app for feeds, "
                                      "events and blocks (JSON list); none = those routes are open (development).")
    token_secret: SecretStr = Field(SecretStr(PLACEHOLDER_SECRET), description="HMAC secret that signs creator "
                                    "tokens (`feed tokens create`); at least 32 characters in production.")
    creator_token_ttl_s: float = Field(30 * 86400.0, gt=0, description="Lifetime of a new creator token.")
    admin_token: SecretStr | None = Field(None, description="Bearer token for /v1/admin/* and catalog writes.")
    merchant_tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="merchant_id -> token: a merchant may write its own products and videos.")
    store_url: str | None = Field(DEFAULT_STORE_URL, description="Event store URL; empty = no store (no ingestion).")
    catalog_refresh_s: float = Field(2.0, ge=0, description="How often to pick up catalog changes from the store.")
    live_cache_size: int = Field(100_000, ge=0)
    impression_queue: int = Field(10_000, ge=1, description="Pages waiting to be logged before new ones are dropped.")
    max_body_bytes: int = Field(4_000_000, ge=1024)
    log_format: Literal["auto", "text", "json"] = Field(
        "auto", description="Log lines as JSON objects (with request_id) or text; auto = JSON in production.")
    ledger_interval_s: float = Field(1.0, ge=0, description="How often to append the ledger entries of newly "
                                     "stored purchases, refunds and shares, and due settlements; 0 = never.")
    ledger_window_days: float = Field(7.0, ge=0, description="A share link earns for purchases this long after.")
    ledger_sharer_rate: float = Field(0.02, ge=0, le=1, description="The direct sharer's commission rate.")
    ledger_settlement_days: float = Field(7.0, ge=0, description="Accruals settle this long after the purchase.")
    ledger_currency: str = Field("USD", pattern="^[A-Z]{3}$")

    @model_validator(mode="after")
    def _one_source(self) -> ServingSettings:
        if self.bundle is not None and self.model_uri is not None:
            raise ValueError("give either bundle or model_uri, not both")
        return self

    @model_validator(mode="after")
    def _production_secrets(self) -> ServingSettings:
        if self.environment == "production":
            problems = _secret_problems(self)
            if problems:
                raise ValueError("environment is production but " + "; ".join(dict.fromkeys(problems)))
        return self

    @field_validator("quotas")
    @classmethod
    def _known_sources(cls, quotas: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(quotas) - set(FUSED_SOURCES))
        if unknown or any(v < 0 for v in quotas.values()):
            raise ValueError(f"quotas take sources {list(FUSED_SOURCES)} with counts >= 0, got {quotas}")
        return quotas

    @property
    def source(self) -> str:
        """The bundle folder or model URI to load (the registry's champion by default)."""
        return str(self.bundle) if self.bundle is not None else (self.model_uri or DEFAULT_MODEL_URI)

    @property
    def store(self) -> str | None:
        """The store URL with a relative SQLite path made absolute (None when disabled)."""
        url = self.store_url or None
        if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            path = Path(url.removeprefix("sqlite:///")).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
        return url

    @property
    def resolved_log_format(self) -> str:
        """The log format to use: "json" or "text"."""
        if self.log_format == "auto":
            return "json" if self.environment == "production" else "text"
        return self.log_format

    def ledger_rules(self) -> LedgerRules:
        """The ledger's attribution and settlement rule."""
        return LedgerRules(window_days=self.ledger_window_days, sharer_rate=self.ledger_sharer_rate,
                           settlement_days=self.ledger_settlement_days, currency=self.ledger_currency)

    def feed_config(self) -> FeedConfig:
        """The feed-building part of the settings."""
        defaults = CandidateConfig()
        candidates = CandidateConfig(quotas={**defaults.quotas, **self.quotas},
                                     videos_per_creator=self.videos_per_creator)
        page = PageConfig(max_per_creator=self.max_per_creator, max_per_product=self.max_per_product,
                          max_per_merchant=self.max_per_merchant, mmr_lambda=self.mmr_lambda)
        return FeedConfig(candidates=candidates, page=page, ranking=self.ranking, ranker_weight=self.ranker_weight,
                          hide_out_of_stock=self.hide_out_of_stock, rank_depth=self.rank_depth)


def _secret_problems(settings: ServingSettings) -> list[str]:
    """What keeps these settings from running in production (names settings, never prints a value)."""
    problems = []
    secret = settings.token_secret.get_secret_value()
    if secret == PLACEHOLDER_SECRET or len(secret) < MIN_SECRET_CHARS:
        problems.append(f"token_secret (FEED_SERVE_TOKEN_SECRET) must be set to a random string of at least "
                        f"{MIN_SECRET_CHARS} characters, not the placeholder")
    if not settings.app_keys:
        problems.append("app_keys (FEED_SERVE_APP_KEYS) must list at least one key, as a JSON list")
    if settings.admin_token is None:
        problems.append("admin_token (FEED_SERVE_ADMIN_TOKEN) must be set")
    keys = [("app_keys", key) for key in settings.app_keys] + [("admin_token", settings.admin_token)] + [
        (f"merchant_tokens[{merchant}]", token) for merchant, token in settings.merchant_tokens.items()]
    for name, key in keys:
        value = key.get_secret_value() if key is not None else None
        if value is not None and (value == PLACEHOLDER_SECRET or len(value) < MIN_KEY_CHARS):
            problems.append(f"{name} must be at least {MIN_KEY_CHARS} characters and not the placeholder")
    return problems
