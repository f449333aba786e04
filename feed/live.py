"""Real time: what the event store learned since the model was trained, applied to the next feed.

- `extend_catalog` lays videos and products added or changed after training over the bundle's catalog: new rows
  are appended (they have no vectors, but creator, product, following and fresh sources can serve them).
- `LiveUsers` turns a user's events since training into a refreshed vector per relation (ALS fold-in, the numpy
  two-tower user tower, or both for a blend — `feed.retrieval` — over the training history plus the new events) and the videos not to show any more (watched to the end, bought, or
  selling a product they bought). Results are cached per user and recomputed when the user's latest event
  sequence number in the store moves, which also works across several service replicas.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feed.bundle import Bundle, RelationModel
from feed.dataset import Catalog, IdMap, event_weights, relation_items, seen_matrix
from feed.models.als import fold_in, gram
from feed.stats import ENGAGED, epoch_ms

RECENT = 5  # latest videos kept per user for the session source


class UserEventSource(Protocol):
    """The part of the event store the feed reads on the request path."""

    def user_seq(self, user_id: str) -> int: ...

    def user_events(self, user_id: str, since: pd.Timestamp | None = None) -> pd.DataFrame: ...


@dataclass(frozen=True)
class LiveUser:
    """A user's state from events stored since training."""

    vectors: Mapping[str, np.ndarray]  # relation -> (dim,) refreshed user vector
    blocked: np.ndarray  # (n,) video rows of the extended catalog never to show again
    n_events: int
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (k,) newest first
    categories: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # (n_categories,)


def extend_catalog(base: Catalog, videos: pd.DataFrame | None, products: pd.DataFrame | None) -> Catalog:
    """The base catalog with these (canonical) videos and products added or updated; base rows keep their rows."""
    catalog = _with_products(base, products) if products is not None and len(products) else base
    return _with_videos(catalog, videos) if videos is not None and len(videos) else catalog


def _appended(ids: IdMap, values: pd.Series) -> IdMap:
    """The id map with unseen values appended in sorted order."""
    new = pd.Index(values.dropna().astype(str).unique()).difference(pd.Index(ids.ids))
    return ids if len(new) == 0 else IdMap(np.concatenate([ids.ids, np.sort(new.to_numpy(dtype=object))]))


def _grown(values: np.ndarray, n: int, fill: float | int | bool) -> np.ndarray:
    """A copy of the array padded with `fill` up to length n."""
    return np.concatenate([values, np.full(n - len(values), fill, dtype=values.dtype)])


def _with_products(base: Catalog, products: pd.DataFrame) -> Catalog:
    """New products appended, known ones updated (price, commission, stock)."""
    ids = _appended(base.products, products["product_id"])
    rows = ids.rows(products["product_id"].astype(str).to_numpy(dtype=object))
    price, rate = _grown(base.product_price, len(ids), np.nan), _grown(base.product_commission, len(ids), np.nan)
    stock = _grown(base.product_in_stock, len(ids), True)
    price[rows] = products["price"].to_numpy(dtype=np.float64, na_value=np.nan)
    rate[rows] = products["commission_rate"].to_numpy(dtype=np.float64, na_value=np.nan)
    stock[rows] = products["in_stock"].fillna(True).to_numpy(dtype=bool)
    categories, merchants = _appended(base.categories, products["category"]), _appended(base.merchants,
                                                                                        products["merchant_id"])
    category, merchant = _grown(base.product_category, len(ids), -1), _grown(base.product_merchant, len(ids), -1)
    category[rows] = _rows_or_missing(categories, products["category"])
    merchant[rows] = _rows_or_missing(merchants, products["merchant_id"])
    return replace(base, products=ids, product_price=price, product_commission=rate, product_in_stock=stock,
                   categories=categories, product_category=category, merchants=merchants,
                   product_merchant=merchant)


def _with_videos(base: Catalog, videos: pd.DataFrame) -> Catalog:
    """New videos (and creators) appended, known videos updated; a product not known yet gets a placeholder
    row (no price, in stock) that its own upsert fills in later, so the link is never lost."""
    base = _with_product_ids(base, videos["product_id"])
    creators = _appended(base.creators, videos["creator_id"])
    ids = _appended(base.videos, videos["video_id"])
    rows = ids.rows(videos["video_id"].astype(str).to_numpy(dtype=object))
    n = len(ids)
    creator, product = _grown(base.video_creator, n, -1), _grown(base.video_product, n, -1)
    duration, published = _grown(base.video_duration_ms, n, np.nan), _grown(base.video_published_ms, n, np.nan)
    creator[rows] = creators.rows(videos["creator_id"].astype(str).to_numpy(dtype=object))
    product[rows] = _rows_or_missing(base.products, videos["product_id"])
    duration[rows] = videos["duration_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
    published[rows] = _published(videos)
    return replace(base, videos=ids, creators=creators, video_creator=creator, video_product=product,
                   video_duration_ms=duration, video_published_ms=published)


def _with_product_ids(base: Catalog, product_ids: pd.Series) -> Catalog:
    """Placeholder rows for product ids the catalog does not know yet."""
    ids = _appended(base.products, product_ids)
    if len(ids) == len(base.products):
        return base
    n = len(ids)
    return replace(base, products=ids, product_price=_grown(base.product_price, n, np.nan),
                   product_commission=_grown(base.product_commission, n, np.nan),
                   product_in_stock=_grown(base.product_in_stock, n, True),
                   product_category=_grown(base.product_category, n, -1),
                   product_merchant=_grown(base.product_merchant, n, -1))


def _rows_or_missing(ids: IdMap, values: pd.Series) -> np.ndarray:
    """Rows of the values, -1 for missing or unknown ones."""
    return ids.rows(values.astype(object).where(values.notna(), "\x00none").to_numpy(dtype=object))


def _published(videos: pd.DataFrame) -> np.ndarray:
    """Epoch ms of `published_at`, NaN where missing."""
    times = videos["published_at"]
    ms = times.astype("datetime64[ms, UTC]").astype("int64").to_numpy(dtype=np.float64)
    return np.where(times.isna().to_numpy(), np.nan, ms)


class LiveUsers:
    """Per-user real-time state over one bundle, cached by the user's latest event sequence number."""

    def __init__(self, bundle: Bundle, catalog: Catalog, source: UserEventSource, cache_size: int = 100_000) -> None:
        config = bundle.manifest.get("config", {})
        self.bundle, self.catalog, self.source = bundle, catalog, source
        self.weights: dict[str, float] = config.get("weights", {})
        self.full_watch_ratio = float(config.get("full_watch_ratio", 0.9))
        self.alpha = float(config.get("als", {}).get("alpha", 1.0))
        self.regularization = float(config.get("als", {}).get("regularization", 0.01))
        end = bundle.manifest.get("data_window", {}).get("end")
        # events strictly after the training data (the store's `since` is inclusive)
        self.since = pd.Timestamp(end) + pd.Timedelta(milliseconds=1) if end else None
        self.grams = {name: gram(als_part(rel)) for name, rel in bundle.relations.items()}
        self._uses_tower = any(rel.mix is not None and rel.mix.kind != "als" for rel in bundle.relations.values())
        self._cache: OrderedDict[str, tuple[int, LiveUser]] = OrderedDict()
        self._cache_size, self._lock = cache_size, threading.Lock()
        self.hits = self.misses = 0

    def with_catalog(self, catalog: Catalog) -> LiveUsers:
        """The same state over a newer catalog (cache emptied: rows may have moved)."""
        live = LiveUsers.__new__(LiveUsers)
        live.__dict__.update(self.__dict__)
        live.catalog, live._cache, live._lock = catalog, OrderedDict(), threading.Lock()
        return live

    def get(self, user_id: str) -> LiveUser | None:
        """The user's state, None when the store has nothing of theirs."""
        seq = self.source.user_seq(user_id)
        if seq == 0:
            return None
        with self._lock:
            cached = self._cache.get(user_id)
            if cached is not None and cached[0] == seq:
                self._cache.move_to_end(user_id)
                self.hits += 1
                return cached[1]
        with self._lock:
            self.misses += 1
        state = self.compute(self.source.user_events(user_id, since=self.since), self.bundle.users.row(user_id))
        self._remember(user_id, seq, state)
        return state

    def _remember(self, user_id: str, seq: int, state: LiveUser) -> None:
        """Cache a state, evicting the least recently used beyond the size limit."""
        with self._lock:
            self._cache[user_id] = (seq, state)
            self._cache.move_to_end(user_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def compute(self, events: pd.DataFrame, row: int) -> LiveUser:
        """Vectors and blocked videos from a user's new events (and their training history when row ≥ 0)."""
        if events.empty:
            return LiveUser({}, np.zeros(0, dtype=np.int64), 0)
        weights = event_weights(events, self.catalog, self.weights)  # (n_events,), the same for every relation
        vectors = self.vectors(row, events, weights)
        blocked = seen_matrix(events, self.catalog, np.zeros(len(events), dtype=np.int64), 1,
                              self.full_watch_ratio).indices.astype(np.int64)
        recent, categories = self._context(events)
        return LiveUser(vectors, blocked, len(events), recent, categories)

    def _context(self, events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The newest distinct engaged videos (newest first) and engaged events per category."""
        engaged = events[events["event"].isin(ENGAGED).to_numpy()]
        videos = self.catalog.videos.rows(engaged["video_id"].to_numpy(dtype=object))
        order = np.argsort(-epoch_ms(engaged["ts"]), kind="stable")
        newest = pd.unique(videos[order])
        category = self.catalog.video_category(videos[videos >= 0])
        counts = np.bincount(category[category >= 0], minlength=len(self.catalog.categories)).astype(np.float32)
        return newest[newest >= 0][:RECENT].astype(np.int64), counts

    def vectors(self, row: int, events: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every relation's refreshed user vector (relations the events do not reach are left out)."""
        tower = self._fold_tower(row, events, weights) if self._uses_tower else None  # once for all relations
        return {name: vector for name in self.bundle.relations
                if (vector := self._fold(name, row, events, weights, tower)) is not None}

    def _fold(self, relation: str, row: int, events: pd.DataFrame, weights: np.ndarray,
              tower_part: np.ndarray | None = None) -> np.ndarray | None:
        """Fold-in over training history plus new events (ALS, the user tower's `tower_part`, or both); None when
        nothing the model knows was touched."""
        model = self.bundle.relations[relation]
        mix = model.mix
        if mix is None or mix.kind == "als":
            return self._fold_als(relation, row, events, weights)
        if tower_part is None:
            return None
        if mix.kind == "two-tower":
            return tower_part
        als_vector = self._fold_als(relation, row, events, weights)
        if als_vector is None:
            return None
        return mix.combine(als_vector[None, :], tower_part[None, :])[0]

    def _fold_als(self, relation: str, row: int, events: pd.DataFrame, weights: np.ndarray) -> np.ndarray | None:
        """ALS fold-in of the relation's history plus the new events."""
        model = self.bundle.relations[relation]
        unique, summed = _summed(model.user_items, row, relation_items(events, self.catalog, relation), weights,
                                 model.item_factors.shape[0])
        if len(unique) == 0:
            return None
        return fold_in(als_part(model), self.grams[relation], unique, summed, self.alpha, self.regularization)

    def _fold_tower(self, row: int, events: pd.DataFrame, weights: np.ndarray) -> np.ndarray | None:
        """The two-tower user vector from the video history plus the new events (numpy, no torch)."""
        tower, videos = self.bundle.tower, self.bundle.relations["video"]
        if tower is None:
            return None
        unique, summed = _summed(videos.user_items, row, relation_items(events, self.catalog, "video"), weights,
                                 len(tower.history))
        if len(unique) == 0:
            return None
        return tower.fold_one(unique, summed, row)


def als_part(model: RelationModel) -> np.ndarray:
    """The ALS columns of a relation's item vectors (all of them without a two-tower part)."""
    mix = model.mix
    return model.item_factors if mix is None else model.item_factors[:, :mix.als_dim]


def _summed(history: sp.csr_matrix, row: int, items: np.ndarray, weights: np.ndarray,
            n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct item rows with positive summed weight over the training history (row ≥ 0) and new events."""
    known = (items >= 0) & (items < n_items)  # items added after training have no vector yet
    items, weights = items[known], weights[known]
    if row >= 0:
        past = history[row]
        items, weights = np.concatenate([past.indices, items]), np.concatenate([past.data, weights])
    unique, inverse = np.unique(items, return_inverse=True)
    summed = np.bincount(inverse, weights=weights, minlength=len(unique))
    positive = summed > 0
    return unique[positive], summed[positive]
