"""From validated tables to model inputs: id maps, catalog arrays, weighted interaction matrices, splits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feed.errors import DataError
from feed.schema import EVENT_TYPES, Dataset

RELATIONS: tuple[str, ...] = ("video", "creator", "product")
SMALL_LOOKUP = 64  # id lists up to this long are looked up one by one in a dict


class IdMap:
    """A fixed, ordered set of string ids and their row numbers."""

    def __init__(self, ids: np.ndarray | list[str]) -> None:
        self.ids = np.asarray(ids, dtype=object)  # (n,)
        self._index = pd.Index(self.ids)
        self._rows: dict[str, int] | None = None  # built on the first single-id lookup
        if not self._index.is_unique:
            raise DataError("ids must be unique")

    @classmethod
    def from_values(cls, values: pd.Series | np.ndarray) -> IdMap:
        """Sorted distinct non-missing values."""
        series = pd.Series(values).dropna()
        return cls(np.sort(series.astype(str).unique().astype(object)))

    def rows(self, ids: pd.Series | np.ndarray | list[str]) -> np.ndarray:
        """Row number of each id, -1 where unknown."""
        values = np.asarray(ids, dtype=object)
        if len(values) <= SMALL_LOOKUP:  # a user's few events: dict lookups beat building a pandas Index
            return np.fromiter((self.row(v) for v in values), dtype=np.int64, count=len(values))
        return self._index.get_indexer(pd.Index(values)).astype(np.int64)

    def row(self, id_: str) -> int:
        """Row number of one id, -1 where unknown (a dict lookup: this is on the request path)."""
        if self._rows is None:
            self._rows = {id_: i for i, id_ in enumerate(self.ids.tolist())}
        return self._rows.get(id_, -1)

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]


@dataclass
class Catalog:
    """Videos, creators and products as id maps plus per-row arrays aligned with them."""

    videos: IdMap
    creators: IdMap
    products: IdMap
    video_creator: np.ndarray  # (n_videos,) int64 row in creators, -1 when unknown
    video_product: np.ndarray  # (n_videos,) int64 row in products, -1 when none
    video_duration_ms: np.ndarray  # (n_videos,) float64, NaN when unknown
    video_published_ms: np.ndarray  # (n_videos,) float64 epoch ms, NaN when unknown
    product_price: np.ndarray  # (n_products,) float64, NaN when unknown
    product_commission: np.ndarray  # (n_products,) float64, NaN when unknown
    product_in_stock: np.ndarray  # (n_products,) bool
    categories: IdMap = field(default_factory=lambda: IdMap([]))
    product_category: np.ndarray | None = None  # (n_products,) int64 row in categories, -1 when unknown
    merchants: IdMap = field(default_factory=lambda: IdMap([]))
    product_merchant: np.ndarray | None = None  # (n_products,) int64 row in merchants, -1 when unknown

    def __post_init__(self) -> None:
        """Products without a known category or merchant get -1 rows."""
        n = len(self.products)
        if self.product_category is None:
            self.product_category = np.full(n, -1, dtype=np.int64)
        if self.product_merchant is None:
            self.product_merchant = np.full(n, -1, dtype=np.int64)

    def video_category(self, videos: np.ndarray) -> np.ndarray:
        """Category row of each video row (through its product), -1 when unknown."""
        return self._through_product(self.product_category, videos)

    def video_merchant(self, videos: np.ndarray) -> np.ndarray:
        """Merchant row of each video row (through its product), -1 when unknown."""
        return self._through_product(self.product_merchant, videos)

    def _through_product(self, per_product: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """A product row array read through each video's product, -1 where the video has none."""
        product = self.video_product[videos]
        if len(per_product) == 0:
            return np.full(len(product), -1, dtype=np.int64)
        return np.where(product >= 0, per_product[np.maximum(product, 0)], -1)

    def items(self, relation: str) -> IdMap:
        """The id map of a relation's items."""
        return {"video": self.videos, "creator": self.creators, "product": self.products}[relation]


def build_catalog(dataset: Dataset) -> Catalog:
    """Catalog arrays from the videos/products tables, or from the events alone when there is no catalog."""
    videos_df = dataset.videos if dataset.videos is not None else _videos_from_events(dataset.events)
    videos = IdMap(videos_df["video_id"].astype(str).to_numpy(dtype=object))
    creators = IdMap.from_values(videos_df["creator_id"])
    products_df = _products_frame(dataset, videos_df)
    products = IdMap(products_df["product_id"].astype(str).to_numpy(dtype=object))
    categories = IdMap.from_values(products_df.get("category", pd.Series(dtype=object)))
    merchants = IdMap.from_values(products_df.get("merchant_id", pd.Series(dtype=object)))
    return Catalog(
        videos=videos,
        creators=creators,
        products=products,
        video_creator=_rows_or_missing(creators, videos_df["creator_id"]),
        video_product=_rows_or_missing(products, videos_df["product_id"]),
        video_duration_ms=videos_df["duration_ms"].to_numpy(dtype=np.float64, na_value=np.nan),
        video_published_ms=_epoch_ms(videos_df.get("published_at")),
        product_price=products_df["price"].to_numpy(dtype=np.float64, na_value=np.nan),
        product_commission=products_df["commission_rate"].to_numpy(dtype=np.float64, na_value=np.nan),
        product_in_stock=products_df["in_stock"].to_numpy(dtype=bool),
        categories=categories,
        product_category=_rows_or_missing(categories, products_df.get("category", _missing(len(products)))),
        merchants=merchants,
        product_merchant=_rows_or_missing(merchants, products_df.get("merchant_id", _missing(len(products)))),
    )


def _missing(n: int) -> pd.Series:
    """A column of n missing values."""
    return pd.Series([pd.NA] * n, dtype=object)


def _epoch_ms(times: pd.Series | None) -> np.ndarray:
    """Epoch milliseconds as float64 (NaN where missing) from a UTC datetime column."""
    if times is None:
        return np.zeros(0)
    ms = pd.to_datetime(times, utc=True).astype("datetime64[ms, UTC]").astype("int64").astype(np.float64)
    return np.where(times.isna().to_numpy(), np.nan, ms)


def _videos_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """A minimal videos table (no creators, no products) from the event log."""
    ids = np.sort(events["video_id"].astype(str).unique())
    return pd.DataFrame({"video_id": ids, "creator_id": pd.NA, "product_id": pd.NA, "duration_ms": np.nan,
                         "published_at": pd.Series(pd.NaT, index=range(len(ids)), dtype="datetime64[ms, UTC]")})


def _products_frame(dataset: Dataset, videos_df: pd.DataFrame) -> pd.DataFrame:
    """The products table, or products named only by videos (no prices) when it is absent."""
    if dataset.products is not None:
        frame = dataset.products.copy()
        frame["in_stock"] = frame["in_stock"].fillna(True).astype(bool)
        return frame
    ids = np.sort(videos_df["product_id"].dropna().astype(str).unique())
    return pd.DataFrame({"product_id": ids, "price": np.nan, "commission_rate": np.nan, "in_stock": True})


def _rows_or_missing(id_map: IdMap, values: pd.Series) -> np.ndarray:
    """Rows of values in id_map, -1 for missing values."""
    filled = values.astype(object).where(values.notna(), "\x00missing")
    return id_map.rows(filled.to_numpy(dtype=object))


def event_weights(events: pd.DataFrame, catalog: Catalog, weights: Mapping[str, float]) -> np.ndarray:
    """Weight of each event; views are scaled by the watched fraction of the video when it is known."""
    unknown = set(weights) - set(EVENT_TYPES)
    if unknown:
        raise DataError(f"weights name unknown event types {sorted(unknown)}; expected {list(EVENT_TYPES)}")
    base = events["event"].map(dict(weights)).fillna(0.0).to_numpy(dtype=np.float64)  # (n_events,)
    ratio = watch_ratio(events, catalog)
    return base * np.where(np.isnan(ratio), 1.0, ratio)


def watch_ratio(events: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """Watched fraction in [0, 1] for views with watch_ms and a known duration, NaN otherwise."""
    rows = catalog.videos.rows(events["video_id"].to_numpy(dtype=object))
    duration = np.where(rows >= 0, catalog.video_duration_ms[np.maximum(rows, 0)], np.nan)
    watch = events["watch_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
    ratio = np.clip(watch / duration, 0.0, 1.0)
    is_view = events["event"].to_numpy(dtype=object) == "view"
    return np.where(is_view & np.isfinite(ratio), ratio, np.nan)


def relation_items(events: pd.DataFrame, catalog: Catalog, relation: str) -> np.ndarray:
    """Row of each event's item for a relation (-1 where the event has no such item)."""
    video_rows = catalog.videos.rows(events["video_id"].to_numpy(dtype=object))
    if relation == "video":
        return video_rows
    if relation == "creator":
        return np.where(video_rows >= 0, catalog.video_creator[np.maximum(video_rows, 0)], -1)
    from_video = np.where(video_rows >= 0, catalog.video_product[np.maximum(video_rows, 0)], -1)
    named = _rows_or_missing(catalog.products, events["product_id"])
    return np.where(named >= 0, named, from_video)


def interaction_matrix(
    user_rows: np.ndarray, item_rows: np.ndarray, weights: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """Summed weights per (user, item) as CSR float32; negative sums (refunds) clip to zero and drop."""
    keep = (user_rows >= 0) & (item_rows >= 0) & (weights != 0)
    coo = sp.coo_matrix((weights[keep], (user_rows[keep], item_rows[keep])), shape=shape, dtype=np.float64)
    matrix = coo.tocsr()  # sums duplicates
    matrix.data = np.maximum(matrix.data, 0.0)
    matrix.eliminate_zeros()
    return matrix.astype(np.float32)


@dataclass
class Interactions:
    """Weighted user×item matrices for every relation the data supports, over one user id map."""

    users: IdMap
    catalog: Catalog
    matrices: dict[str, sp.csr_matrix]  # relation -> (n_users, n_items)
    seen: sp.csr_matrix  # (n_users, n_videos) 1 where watched to the end or purchased
    bought: sp.csr_matrix  # (n_users, n_products) 1 where purchased: later videos of these are hidden too


def build_interactions(
    events: pd.DataFrame,
    catalog: Catalog,
    weights: Mapping[str, float],
    full_watch_ratio: float = 0.9,
    users: IdMap | None = None,
) -> Interactions:
    """Weighted matrices for the video relation and, with a catalog, for creators and products."""
    users = users or IdMap.from_values(events["user_id"])
    user_rows = users.rows(events["user_id"].to_numpy(dtype=object))
    w = event_weights(events, catalog, weights)
    matrices = {}
    for relation in available_relations(catalog):
        items = relation_items(events, catalog, relation)
        shape = (len(users), len(catalog.items(relation)))
        matrices[relation] = interaction_matrix(user_rows, items, w, shape)
    seen = seen_matrix(events, catalog, user_rows, len(users), full_watch_ratio)
    return Interactions(users=users, catalog=catalog, matrices=matrices, seen=seen,
                        bought=bought_matrix(events, catalog, user_rows, len(users)))


def available_relations(catalog: Catalog) -> list[str]:
    """Relations with at least one item: always video; creator and product with a catalog."""
    return [r for r in RELATIONS if len(catalog.items(r)) > 0]


def seen_matrix(
    events: pd.DataFrame, catalog: Catalog, user_rows: np.ndarray, n_users: int, full_watch_ratio: float
) -> sp.csr_matrix:
    """Videos never shown to a user again: watched to the end, bought, or selling a product they bought."""
    kind = events["event"].to_numpy(dtype=object)
    watched = (kind == "view") & (np.nan_to_num(watch_ratio(events, catalog)) >= full_watch_ratio)
    done = watched | (kind == "purchase")
    video_rows = catalog.videos.rows(events["video_id"].to_numpy(dtype=object))
    shape = (n_users, len(catalog.videos))
    matrix = interaction_matrix(user_rows, video_rows, done.astype(np.float64), shape)
    bought = kind == "purchase"
    products = relation_items(events[bought], catalog, "product") if len(catalog.products) else np.zeros(0, int)
    if len(products):
        owned = interaction_matrix(user_rows[bought], products, np.ones(len(products)),
                                   (n_users, len(catalog.products)))  # (n_users, n_products)
        matrix = matrix + owned @ product_videos(catalog)
    matrix = sp.csr_matrix(matrix > 0, dtype=np.float32)
    return matrix


def bought_matrix(events: pd.DataFrame, catalog: Catalog, user_rows: np.ndarray, n_users: int) -> sp.csr_matrix:
    """(n_users, n_products) 1 where the user bought the product."""
    shape = (n_users, len(catalog.products))
    if len(catalog.products) == 0:  # events only: nothing to record
        return sp.csr_matrix(shape, dtype=np.float32)
    bought = (events["event"] == "purchase").to_numpy()
    products = relation_items(events[bought], catalog, "product")
    matrix = interaction_matrix(user_rows[bought], products, np.ones(len(products)), shape)
    matrix.data[:] = 1.0
    return matrix


def product_videos(catalog: Catalog) -> sp.csr_matrix:
    """(n_products, n_videos) 1 where the video sells the product."""
    has = np.flatnonzero(catalog.video_product >= 0)
    return sp.csr_matrix((np.ones(len(has), dtype=np.float32), (catalog.video_product[has], has)),
                         shape=(len(catalog.products), len(catalog.videos)))


@dataclass(frozen=True)
class TimeSplit:
    """Events before and from one cut-off shared by every event type."""

    train: pd.DataFrame
    test: pd.DataFrame
    cutoff: pd.Timestamp


def time_split(events: pd.DataFrame, test_fraction: float) -> TimeSplit:
    """Split at the time that leaves `test_fraction` of the log's time span for testing."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    start, end = events["ts"].min(), events["ts"].max()
    cutoff = start + (end - start) * (1.0 - test_fraction)
    before = (events["ts"] < cutoff).to_numpy()
    if before.all() or not before.any():
        raise DataError(f"time split at {cutoff} leaves an empty side; the log spans {start} to {end}")
    return TimeSplit(train=events[before], test=events[~before], cutoff=cutoff)


def holdout_positives(
    test_events: pd.DataFrame,
    train: Interactions,
    relation: str,
    weights: Mapping[str, float],
    min_weight: float,
    exclude: sp.csr_matrix | None = None,
) -> sp.csr_matrix:
    """Held-out items per known user with summed weight ≥ min_weight, minus excluded items (by default the
    user's training items: what the evaluation masks can never be retrieved, so it is not a target)."""
    user_rows = train.users.rows(test_events["user_id"].to_numpy(dtype=object))
    items = relation_items(test_events, train.catalog, relation)
    w = event_weights(test_events, train.catalog, weights)
    shape = train.matrices[relation].shape
    matrix = interaction_matrix(user_rows, items, w, shape)
    matrix.data = (matrix.data >= min_weight).astype(np.float32)
    exclude = train.matrices[relation] if exclude is None else exclude
    matrix = matrix - matrix.multiply(exclude > 0)
    matrix = sp.csr_matrix(matrix)
    matrix.eliminate_zeros()
    return matrix


def data_fingerprint(events: pd.DataFrame) -> str:
    """Short content hash of an event log (its event ids), to tell whether two runs saw the same data."""
    hashes = pd.util.hash_pandas_object(events["event_id"].astype(str), index=False).to_numpy()
    total = int(hashes.sum(dtype=np.uint64))  # order-independent; wraps modulo 2**64 by design
    return f"{len(events):x}-{total:016x}"


def window(events: pd.DataFrame) -> dict[str, str]:
    """First and last event time as ISO strings (recorded in manifests)."""
    return {"start": events["ts"].min().isoformat(), "end": events["ts"].max().isoformat()}
