"""Serving settings: defaults < FEED_SERVE_* environment < `feed serve` flags; validated once."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feed.service import FeedConfig

DEFAULT_MODEL_URI = "models:/selfretail-feed@champion"


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
    admin_token: SecretStr | None = Field(None, description="Bearer token for /v1/admin/*; unset = disabled.")

    @model_validator(mode="after")
    def _one_source(self) -> ServingSettings:
        if self.bundle is not None and self.model_uri is not None:
            raise ValueError("give either bundle or model_uri, not both")
        return self

    @property
    def source(self) -> str:
        """The bundle folder or model URI to load (the registry's champion by default)."""
        return str(self.bundle) if self.bundle is not None else (self.model_uri or DEFAULT_MODEL_URI)

    def feed_config(self) -> FeedConfig:
        """The feed-building part of the settings."""
        return FeedConfig(candidates_per_source=self.candidates_per_source,
                          videos_per_creator=self.videos_per_creator,
                          videos_per_product=self.videos_per_product,
                          hide_out_of_stock=self.hide_out_of_stock)
