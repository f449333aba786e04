"""The data contract every part shares: table names, columns, event types and the in-memory dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

EVENT_TYPES: tuple[str, ...] = ("impression", "view", "like", "share", "cart", "purchase", "refund")
TABLES: tuple[str, ...] = ("events", "videos", "products", "follows")
FILE_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")

Kind = Literal["str", "ts", "int", "float", "bool"]


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, kind and whether every row must have it."""

    name: str
    kind: Kind
    required: bool


EVENTS = (
    Column("event_id", "str", False),
    Column("ts", "ts", True),
    Column("user_id", "str", True),
    Column("video_id", "str", True),
    Column("event", "str", True),
    Column("watch_ms", "int", False),
    Column("share_id", "str", False),
    Column("via_share_id", "str", False),
    Column("request_id", "str", False),
    Column("order_id", "str", False),
    Column("amount", "float", False),
    Column("product_id", "str", False),
)
VIDEOS = (
    Column("video_id", "str", True),
    Column("creator_id", "str", True),
    Column("product_id", "str", False),
    Column("published_at", "ts", False),
    Column("duration_ms", "int", False),
    Column("title", "str", False),
)
PRODUCTS = (
    Column("product_id", "str", True),
    Column("merchant_id", "str", False),
    Column("category", "str", False),
    Column("price", "float", False),
    Column("commission_rate", "float", False),
    Column("in_stock", "bool", False),
)
FOLLOWS = (
    Column("user_id", "str", True),
    Column("creator_id", "str", True),
    Column("ts", "ts", False),
)
COLUMNS: dict[str, tuple[Column, ...]] = {
    "events": EVENTS, "videos": VIDEOS, "products": PRODUCTS, "follows": FOLLOWS,
}
PRIMARY_KEYS: dict[str, str] = {"events": "event_id", "videos": "video_id", "products": "product_id"}


@dataclass
class Dataset:
    """Validated tables in canonical dtypes; every table but `events` is optional.

    Canonical dtypes: ids and other text are pandas `str` with missing values as NA; timestamps are
    `datetime64[ms, UTC]`; `watch_ms` and `duration_ms` are float64 milliseconds (NaN when absent);
    `amount`, `price`, `commission_rate` are float64; `in_stock` is bool. Every column of the table's
    schema is present after loading (optional ones filled with NA); extra columns are kept.
    """

    events: pd.DataFrame
    videos: pd.DataFrame | None = None
    products: pd.DataFrame | None = None
    follows: pd.DataFrame | None = None

    @property
    def has_catalog(self) -> bool:
        """True when videos (and so creators) are known."""
        return self.videos is not None
