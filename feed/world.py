"""A synthetic self-retail world with known ground truth, deterministic for a seed.

Merchants sell products; creators (who are users) post short videos linked to products; users with latent
tastes see feed sessions of impressions, view, like, share and buy; friends arrive through share links and
some of them buy too. Everything the simulator draws from is kept in `Truth`, so an oracle can be computed.

True affinity of user u for video v, the one quantity that drives views, watch time, likes and shares:

    affinity(u, v) = C * taste[u, category(v)] * quality(v) * (1 + trust[u, creator(v)])

with C the number of categories (uniform taste gives affinity = quality), taste a row of a Dirichlet with
small concentration, quality lognormal, trust a sparse lognormal weight. With s = affinity / (affinity + 4):
P(view | impression) = 0.03 + 0.6 s, watch ratio ~ (0.2 + 0.8 s) * noise, P(like | view) = 0.25 s,
P(share | view) = min(0.5, 0.025 s sqrt(activity[u])); a sharer's friend opens the link with P = 0.35 P(view).

Purchase propensity, the one quantity that drives carts and purchases after a view:

    propensity(u, v) = affinity(u, v) * persuasiveness[creator(v)] * (1 + trust[u, creator(v)])
                       * exp(-price_sensitivity[u] * price(v) / price_ref) * buyable(v)

buyable = the video has a product in stock; P(cart | view) = 1 - exp(-3 k x), P(purchase | view) =
1 - exp(-k x) with x the propensity and k = 0.001 (purchases follow carts); 5% of purchases are refunded
1-5 days later (refunds falling after the last day are cut, like every event past the window).

The draws and the day-by-day simulation (constants included) live in `feed.world_sim`.

Size rule: events ~= 1.35 * users * days * impressions_per_user_day (impressions are ~73% of events),
so the default world (5000 users, 30 days, 4 impressions per user-day) has ~0.82M events; ~1M events take
6,000 users over 30 days and ~10M events 60,000 users over 30 days (scale the catalog along).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from feed import world_sim as ws
from feed.errors import ArtifactError, ConfigError
from feed.io import write_dataset, write_table
from feed.schema import EVENT_TYPES, Dataset

CATEGORY_NAMES = ("beauty", "fashion", "home", "electronics", "food", "sports", "toys", "books", "pets",
                  "health", "garden", "baby", "jewelry", "outdoors", "music", "crafts")
_INT_FIELDS = ("users", "creators", "products", "videos", "days", "categories", "merchants")


@dataclass(frozen=True)
class WorldParams:
    """Size, seed and calendar of a synthetic world; events ~= 1.35 * users * days * impressions_per_user_day."""

    users: int = 5000
    creators: int = 300
    products: int = 1500
    videos: int = 4000
    days: int = 30
    seed: int = 0
    categories: int = 12
    merchants: int = 80
    start: str = "2026-01-01"
    impressions_per_user_day: float = 4.0

    def __post_init__(self) -> None:
        """Reject non-positive sizes, more creators than users and an unparseable start date."""
        for name in (*_INT_FIELDS, "seed"):
            value, least = getattr(self, name), 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ConfigError(f"WorldParams.{name} must be an integer >= {least}, got {value!r}")
            object.__setattr__(self, name, int(value))                                  # numpy ints → int (JSON)
        rate = self.impressions_per_user_day
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.number)) or not rate > 0 or rate == math.inf:
            raise ConfigError(f"WorldParams.impressions_per_user_day must be a positive number, got {rate!r}")
        object.__setattr__(self, "impressions_per_user_day", float(rate))
        if not isinstance(self.start, str):
            raise ConfigError(f"WorldParams.start must be a date string like '2026-01-01', got {self.start!r}")
        if self.creators > self.users:
            raise ConfigError(f"WorldParams.creators ({self.creators}) must not exceed users ({self.users}): "
                              "creators are users")
        try:
            _ = self.start_ms
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"WorldParams.start must be a date like '2026-01-01', got {self.start!r}") from exc

    @property
    def start_ms(self) -> int:
        """Start of day 0 in epoch milliseconds (UTC)."""
        ts = pd.Timestamp(self.start)
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        return int(ts.value // 1_000_000)


@dataclass(eq=False)
class Truth:
    """The latent state the simulator draws from: enough to compute an oracle ranking."""

    user_ids: np.ndarray            # (n_users,) str
    video_ids: np.ndarray           # (n_videos,) str
    taste: np.ndarray               # (n_users, n_categories) rows sum to 1
    video_category: np.ndarray      # (n_videos,) int
    video_quality: np.ndarray       # (n_videos,)
    video_creator: np.ndarray       # (n_videos,) int index into creators
    creator_user_ids: np.ndarray    # (n_creators,) str, the creators' user ids
    persuasiveness: np.ndarray      # (n_creators,)
    creator_popularity: np.ndarray  # (n_creators,) Zipf weights, sum 1: drives exposure in feeds
    trust: sp.csr_array             # (n_users, n_creators)
    price_sensitivity: np.ndarray   # (n_users,)
    params: WorldParams
    user_activity: np.ndarray       # (n_users,) mean 1: relative sessions per day
    video_price: np.ndarray         # (n_videos,) price of the linked product, NaN without one
    video_buyable: np.ndarray       # (n_videos,) bool: has a product that is in stock
    price_ref: float                # median product price, the unit of price in the propensity

    def affinity(self, user_rows: np.ndarray) -> np.ndarray:
        """True affinity of the given user rows for every video; (len(user_rows), n_videos)."""
        rows = np.asarray(user_rows)
        trust = self.trust[rows].toarray()[:, self.video_creator]                       # (n, n_videos)
        taste = self.taste[rows][:, self.video_category]                                # (n, n_videos)
        return self.taste.shape[1] * taste * self.video_quality * (1.0 + trust)

    def purchase_propensity(self, user_rows: np.ndarray) -> np.ndarray:
        """True purchase propensity of the given user rows for every video; (len(user_rows), n_videos)."""
        rows = np.asarray(user_rows)
        trust = self.trust[rows].toarray()[:, self.video_creator]                       # (n, n_videos)
        price = np.where(self.video_buyable, np.nan_to_num(self.video_price), 0.0) / self.price_ref
        damp = np.exp(-self.price_sensitivity[rows, None] * price)                      # (n, n_videos)
        return (self.affinity(rows) * self.persuasiveness[self.video_creator] * (1.0 + trust) * damp
                * self.video_buyable)

    def pair_affinity(self, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """True affinity of each (user row, video row) pair; (n_pairs,)."""
        trust = self._pair_trust(users, videos)
        taste = self.taste[users, self.video_category[videos]]
        return self.taste.shape[1] * taste * self.video_quality[videos] * (1.0 + trust)

    def pair_propensity(self, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """True purchase propensity of each (user row, video row) pair; (n_pairs,)."""
        buyable = self.video_buyable[videos]
        price = np.where(buyable, np.nan_to_num(self.video_price[videos]), 0.0) / self.price_ref
        boost = self.persuasiveness[self.video_creator[videos]] * (1.0 + self._pair_trust(users, videos))
        damp = np.exp(-self.price_sensitivity[users] * price)
        return self.pair_affinity(users, videos) * boost * damp * buyable

    def _pair_trust(self, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """trust[user, creator(video)] for each pair via a sorted-key lookup; (n_pairs,)."""
        keys, values = self._trust_keys
        want = users.astype(np.int64) * self.trust.shape[1] + self.video_creator[videos]
        pos = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
        return np.where(keys[pos] == want, values[pos], 0.0) if len(keys) else np.zeros(len(want))

    @cached_property
    def _trust_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted row * n_creators + col keys of the trust entries and their values; (nnz,), (nnz,)."""
        coo = self.trust.tocoo()
        keys = coo.row.astype(np.int64) * self.trust.shape[1] + coo.col
        order = np.argsort(keys, kind="stable")
        return keys[order], coo.data[order].astype(np.float64)

    def save(self, folder: Path) -> None:
        """Write `folder/truth/`: arrays.npz, trust.npz and params.json (no pickles)."""
        out = Path(folder) / "truth"
        out.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name not in ("trust", "params")}
        _atomic(out / "arrays.npz", lambda fh: np.savez(fh, **arrays))
        _atomic(out / "trust.npz", lambda fh: sp.save_npz(fh, self.trust))
        _atomic(out / "params.json", lambda fh: fh.write(json.dumps(dataclasses.asdict(self.params)).encode()))

    @classmethod
    def load(cls, folder: Path) -> Truth:
        """Read a truth folder written by `save`; raises ArtifactError naming a missing or broken file."""
        base = Path(folder) / "truth"
        for name in ("arrays.npz", "trust.npz", "params.json"):
            if not (base / name).is_file():
                raise ArtifactError("truth file is missing", path=str(base / name))
        try:
            params = WorldParams(**json.loads((base / "params.json").read_text()))
        except (ValueError, TypeError, ConfigError) as exc:
            raise ArtifactError(f"unreadable world params: {exc}", path=str(base / "params.json")) from exc
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("trust", "params")]
        arrays: dict[str, Any] = _read_arrays(base / "arrays.npz", names)
        arrays["price_ref"] = float(arrays["price_ref"])
        try:
            trust = sp.csr_array(sp.load_npz(base / "trust.npz"))
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"unreadable trust matrix: {exc}", path=str(base / "trust.npz")) from exc
        if trust.shape != (len(arrays["user_ids"]), len(arrays["creator_user_ids"])):
            raise ArtifactError(f"trust shape {trust.shape} does not match users x creators",
                                path=str(base / "trust.npz"))
        return cls(trust=trust, params=params, **arrays)


def _read_arrays(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The named arrays of an npz file (no pickles); ArtifactError naming the file when unreadable or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [n for n in names if n not in npz.files]
            if missing:
                raise ArtifactError(f"missing arrays {missing}", path=str(path))
            return {n: npz[n] for n in names}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"unreadable arrays: {exc}", path=str(path)) from exc


@dataclass(eq=False)
class World:
    """A generated world: the observable dataset, its ground truth and the friend graph."""

    dataset: Dataset
    truth: Truth
    friends: pd.DataFrame           # user_id, friend_id (both directions)


def generate_world(params: WorldParams, progress: bool = False) -> World:
    """Draw a catalog, a population and `params.days` days of activity, all from `params.seed`."""
    rngs = [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(params.seed).spawn(6)]
    cat_w = ws.zipf(rngs[0], params.categories, 1.0)                         # (n_categories,)
    products = ws.make_products(rngs[0], params, cat_w)
    taste, activity, sensitivity = ws.make_users(rngs[1], params, cat_w)
    creators = ws.make_creators(rngs[2], params, taste.argmax(1))
    videos = ws.make_videos(rngs[3], params, creators, products)
    trust = ws.make_trust(rngs[4], params, taste, creators)
    truth = _make_truth(params, taste, activity, sensitivity, creators, videos, products, trust)
    friend_a, friend_b = ws.make_friends(rngs[4], params, taste.argmax(1))
    follows = ws.make_follows(rngs[4], params, trust, creators["rows"])
    sim = ws.Simulation(rngs[5], params, truth, videos, products["price"], friend_a, friend_b)
    for day in range(params.days):
        ws.simulate_day(sim, day)
        if progress:
            print(f"world: day {day + 1}/{params.days}, {sim.n_events:,} events", file=sys.stderr)
    dataset = Dataset(events=_events_frame(sim), videos=_videos_frame(truth, videos, products),
                      products=_products_frame(products), follows=_follows_frame(truth, follows))
    friends = pd.DataFrame({"user_id": _take(truth.user_ids, friend_a), "friend_id": _take(truth.user_ids, friend_b)})
    return World(dataset=dataset, truth=truth, friends=friends)


def _make_truth(p: WorldParams, taste: np.ndarray, activity: np.ndarray, sensitivity: np.ndarray,
                creators: dict[str, np.ndarray], videos: dict[str, np.ndarray],
                products: dict[str, np.ndarray], trust: sp.csr_array) -> Truth:
    """Assemble the ground truth from the generated parts."""
    user_ids = _ids("u", p.users)
    has = videos["product"] >= 0
    prod = np.maximum(videos["product"], 0)
    return Truth(user_ids=user_ids, video_ids=_ids("v", p.videos), taste=taste,
                 video_category=videos["category"], video_quality=videos["quality"],
                 video_creator=videos["creator"], creator_user_ids=user_ids[creators["rows"]],
                 persuasiveness=creators["persuasiveness"],
                 creator_popularity=creators["popularity"], trust=trust, price_sensitivity=sensitivity,
                 params=p, user_activity=activity, video_price=np.where(has, products["price"][prod], np.nan),
                 video_buyable=has & products["in_stock"][prod], price_ref=float(np.median(products["price"])))


def _events_frame(sim: ws.Simulation) -> pd.DataFrame:
    """The events table in canonical dtypes, sorted by ts, with e-ids in that order."""
    c, t = ws.gather_events(sim), sim.truth
    product_ids = _ids("p", sim.p.products)
    return pd.DataFrame({
        "event_id": _take(_id_arrow("e", len(c["ts"])), np.arange(len(c["ts"]))),
        "ts": _timestamps(c["ts"]), "user_id": _take(t.user_ids, c["user"]),
        "video_id": _take(t.video_ids, c["video"]), "event": _take(np.array(EVENT_TYPES), c["event"]),
        "watch_ms": c["watch"], "share_id": _take(_id_arrow("s", sim.n_shares), c["share"]),
        "via_share_id": _take(_id_arrow("s", sim.n_shares), c["via_share"]),
        "request_id": _take(_id_arrow("r", sim.n_requests), c["request"]),
        "order_id": _take(_id_arrow("o", sim.n_orders), c["order"]), "amount": c["amount"],
        "product_id": _take(product_ids, c["product"]),
    })


def _videos_frame(truth: Truth, videos: dict[str, np.ndarray], products: dict[str, np.ndarray]) -> pd.DataFrame:
    """The videos table: one creator, an optional product, publication time, duration and a title."""
    names = np.array(_category_names(truth.params.categories))
    cat = truth.video_category
    order = np.argsort(cat, kind="stable")                                             # videos by category
    rank = np.empty(len(cat), np.int64)
    rank[order] = np.arange(len(cat)) - np.searchsorted(cat[order], cat[order])      # ordinal within category
    title = np.strings.add(np.strings.add(names[cat], " pick #"), (rank + 1).astype(str))
    return pd.DataFrame({
        "video_id": _take(truth.video_ids, np.arange(len(cat))),
        "creator_id": _take(truth.creator_user_ids, truth.video_creator),
        "product_id": _take(_ids("p", truth.params.products), videos["product"]),
        "published_at": _timestamps(videos["published"]), "duration_ms": videos["duration"].astype(np.float64),
        "title": _take(title, np.arange(len(cat))),
    })


def _products_frame(products: dict[str, np.ndarray]) -> pd.DataFrame:
    """The products table: merchant, category name, price, commission rate, stock."""
    n, n_cat = len(products["price"]), int(products["category"].max(initial=0)) + 1
    return pd.DataFrame({
        "product_id": _take(_ids("p", n), np.arange(n)),
        "merchant_id": _take(_ids("m", int(products["merchant"].max(initial=0)) + 1), products["merchant"]),
        "category": _take(np.array(_category_names(n_cat)), products["category"]),
        "price": products["price"].astype(np.float64), "commission_rate": products["commission"].astype(np.float64),
        "in_stock": products["in_stock"].astype(bool),
    })


def _follows_frame(truth: Truth, follows: dict[str, np.ndarray]) -> pd.DataFrame:
    """The follows table: user_id, creator_id (a user id), ts; sorted by ts."""
    order = np.argsort(follows["ts"], kind="stable")
    return pd.DataFrame({"user_id": _take(truth.user_ids, follows["user"][order]),
                         "creator_id": _take(truth.user_ids, follows["creator"][order]),
                         "ts": _timestamps(follows["ts"][order])})


def _category_names(n: int) -> list[str]:
    """Readable category names, then 'category_<k>' once the list runs out."""
    return [CATEGORY_NAMES[k] if k < len(CATEGORY_NAMES) else f"category_{k + 1}" for k in range(n)]


def _id_arrow(prefix: str, n: int) -> pa.Array:
    """prefix + zero-padded 0..n-1 (at least 6 digits), built directly as Arrow string buffers; (n,)."""
    width = max(6, len(str(max(n - 1, 0))))
    head = np.frombuffer(prefix.encode(), np.uint8)
    chars = np.empty((n, len(head) + width), np.uint8)                               # (n, id length) bytes
    chars[:, :len(head)] = head
    x = np.arange(n, dtype=np.int64)
    for k in range(width - 1, -1, -1):
        chars[:, len(head) + k], x = 48 + x % 10, x // 10
    large = chars.size >= 2**31
    offsets = np.arange(0, chars.size + 1, chars.shape[1], dtype=np.int64 if large else np.int32)
    kind = pa.LargeStringArray if large else pa.StringArray
    return kind.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def _ids(prefix: str, n: int) -> np.ndarray:
    """Small id vocabularies as a numpy str array, e.g. 'u000123'; (n,)."""
    return np.asarray(_id_arrow(prefix, n).to_numpy(zero_copy_only=False), dtype=str)


def _take(vocab: np.ndarray | pa.Array, codes: np.ndarray) -> pd.Series:
    """vocab[codes] as a pandas `str` column, NA where codes < 0 (vectorized in Arrow)."""
    arrow = vocab if isinstance(vocab, pa.Array) else pa.array(vocab, type=pa.string())
    codes = np.asarray(codes, dtype=np.int64)
    taken = arrow.take(pa.array(np.maximum(codes, 0), mask=codes < 0))
    return pd.Series(pd.array(taken, dtype="str"))


def _timestamps(ms: np.ndarray) -> pd.Series:
    """Epoch milliseconds as a datetime64[ms, UTC] column."""
    return pd.Series(np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")).dt.tz_localize("UTC")


def save_world(world: World, folder: Path, fmt: str = "parquet") -> None:
    """Write the four tables, friends, the truth folder and world.json (params, counts) into `folder`."""
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"save_world fmt must be 'parquet' or 'csv', got {fmt!r}")
    folder = Path(folder)
    write_dataset(world.dataset, folder, fmt)
    write_table(world.friends, folder / f"friends.{fmt}")
    world.truth.save(folder)
    ds = world.dataset
    counts = ds.events["event"].value_counts()
    tables = {"events": ds.events, "videos": ds.videos, "products": ds.products, "follows": ds.follows,
              "friends": world.friends}
    summary = {"params": dataclasses.asdict(world.truth.params),
               "counts": {"rows": {k: 0 if v is None else len(v) for k, v in tables.items()},
                          "events": {e: int(counts.get(e, 0)) for e in EVENT_TYPES}}}
    _atomic(folder / "world.json", lambda fh: fh.write(json.dumps(summary, indent=2).encode()))


def _atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(binary file) on `path`.tmp, then os.replace it over `path`; no half file survives a crash."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
