"""Serving settings: defaults < FEED_SERVE_* environment < `feed serve` flags; validated once."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feed.service import FeedConfig

DEFAULT_MODEL_URI = "models:/selfretail-feed@champion"
DEFAULT_STORE_URL = "sqlite:///.feed/store.db"


class ServingSettings(BaseSettings):
    """Where the model comes from and how feeds are built."""

    model_config = SettingsConfigDict(env_prefix="FEED_SERVE_", extra="forbid", frozen=True)

    bundle: Path | None = None
    model_uri: str | None = None
    tracking_uri: str | None = None
    cache_dir: Path = Path(".mlflow/cache")
    candidates_per_source: int = Field(200, ge=1)
    videos_per_creator: int = Field(3, ge=1)
    videos_per_product: int = Field(2, ge=1)
    hide_out_of_stock: bool = True
    reload_interval_s: float = Field(30.0, ge=0, description="How often to check for a new champion; 0 = never.")
    admin_token: SecretStr | None = Field(None, description="Bearer token for /v1/admin/* and catalog writes.")
    merchant_tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="merchant_id -> token: a merchant may write its own products and videos.")
    store_url: str | None = Field(DEFAULT_STORE_URL, description="Event store URL; empty = no store (no ingestion).")
    catalog_refresh_s: float = Field(2.0, ge=0, description="How often to pick up catalog changes from the store.")
    live_cache_size: int = Field(100_000, ge=0)
    impression_queue: int = Field(10_000, ge=1, description="Pages waiting to be logged before new ones are dropped.")
    max_body_bytes: int = Field(4_000_000, ge=1024)

    @model_validator(mode="after")
    def _one_source(self) -> ServingSettings:
        if self.bundle is not None and self.model_uri is not None:
            raise ValueError("give either bundle or model_uri, not both")
        return self

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

    def feed_config(self) -> FeedConfig:
        """The feed-building part of the settings."""
        return FeedConfig(candidates_per_source=self.candidates_per_source,
                          videos_per_creator=self.videos_per_creator,
                          videos_per_product=self.videos_per_product,
                          hide_out_of_stock=self.hide_out_of_stock)
