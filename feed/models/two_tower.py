"""Two-tower retrieval: users, videos, creators and products in one embedding space.

The torch network (`feed.models.towers`) is imported only to train, save or load; scoring known users,
folding in a new user's history and `export()` run on numpy arrays. Training itself is a separate piece
(`training.two_tower.TwoTowerTrainer`), handed to the model so that `fit` keeps the shared contract.
Artifacts: `model.pt` (a state_dict of tensors, read with `weights_only=True`) and `manifest.json`
(hyperparameters, tensor shapes, the SHA-256 of `model.pt`); no pickles.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np
import scipy.sparse as sp

from feed.errors import ConfigError
from feed.models.base import ScoringRecommender, as_batch, top_n

if TYPE_CHECKING:
    from feed.dataset import Catalog
    from feed.models.towers import TwoTowerNet

FORMAT = "two-tower/1"
FIELDS = ("creator", "product", "category", "price")  # optional item features, in table order after item ids
MODEL_FILE, MANIFEST_FILE = "model.pt", "manifest.json"


@dataclass(frozen=True)
class TwoTowerParams:
    """What the network looks like (the training hyperparameters live with the trainer)."""

    dim: int = 64
    user_id: bool = True  # a per-user id embedding next to the pooled history
    normalize: bool = True  # unit vectors: scores are cosines (FAISS inner product needs no transform)
    repeat: float = 0.0  # added to the score of items already in the user's history (≥ 2 with cosines: all first)


@dataclass(frozen=True)
class ItemFeatures:
    """Each item's row in the creator/product/category/price-bucket tables (-1 = absent), and table sizes."""

    n_items: int
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n_items,) int64
    sizes: dict[str, int] = field(default_factory=dict)  # name -> rows in its table
    product_fields: dict[str, np.ndarray] = field(default_factory=dict)  # category/price -> (n_products,)

    @classmethod
    def from_catalog(cls, catalog: Catalog, price_buckets: int = 8) -> ItemFeatures:
        """Videos' creator, product, category and price bucket (quantiles of the known prices)."""
        product = np.asarray(catalog.video_product, np.int64)  # (n_videos,)
        per_product = {"category": np.asarray(catalog.product_category, np.int64),
                       "price": price_bucket(catalog.product_price, price_buckets)}  # each (n_products,)
        fields = {"creator": np.asarray(catalog.video_creator, np.int64), "product": product,
                  **{k: _through(product, v) for k, v in per_product.items()}}
        sizes = {"creator": len(catalog.creators), "product": len(catalog.products),
                 "category": len(catalog.categories), "price": price_buckets}
        used = [k for k in FIELDS if sizes[k] > 0 and (fields[k] >= 0).any()]
        by_product = {k: per_product[k] for k in ("category", "price") if k in used} if "product" in used else {}
        return cls(len(catalog.videos), {k: fields[k] for k in used}, {k: sizes[k] for k in used}, by_product)

    def offsets(self) -> dict[str, int]:
        """First row of each table in the shared feature table: item ids first, then the fields in order."""
        out, start = {"item": 0}, self.n_items
        for name in self.fields:
            out[name], start = start, start + self.sizes[name]
        return out

    @property
    def n_features(self) -> int:
        """Rows of the shared feature table."""
        return self.n_items + sum(self.sizes.values())

    def bags(self) -> np.ndarray:
        """(n_items, 1 + n_fields) rows of each item's features in the shared table, -1 where absent."""
        offsets = self.offsets()
        columns = [np.arange(self.n_items, dtype=np.int64)]
        columns += [np.where(v >= 0, v + offsets[k], -1) for k, v in self.fields.items()]
        return np.stack(columns, axis=1)


def _through(product: np.ndarray, per_product: np.ndarray) -> np.ndarray:
    """A per-product array read through each video's product row, -1 where there is none."""
    if len(per_product) == 0:
        return np.full(len(product), -1, dtype=np.int64)
    return np.where(product >= 0, per_product[np.maximum(product, 0)], -1)


def price_bucket(prices: np.ndarray, n: int) -> np.ndarray:
    """(n_products,) quantile bucket in [0, n) of each known price, -1 where unknown."""
    prices = np.asarray(prices, dtype=np.float64)
    known = np.isfinite(prices)
    if not known.any() or n < 1:
        return np.full(len(prices), -1, dtype=np.int64)
    edges = np.quantile(prices[known], np.linspace(0, 1, n + 1)[1:-1])  # (n - 1,)
    return np.where(known, np.searchsorted(edges, np.where(known, prices, 0.0), side="right"), -1).astype(np.int64)


class Trainer(Protocol):
    """Trains a model in place on a weighted (n_users, n_items) matrix (see training.two_tower)."""

    def train(self, model: TwoTowerRecommender, user_items: sp.csr_matrix, show_progress: bool) -> None:
        """Build the model's network, train it, and call `model.finalize(user_items)`."""
        ...


@dataclass
class TwoTowerVectors:
    """Everything serving needs, as float32 numpy arrays; vectors of one kind are comparable by inner product."""

    items: np.ndarray  # (n_items, dim) video vectors
    users: np.ndarray  # (n_users, dim) known users' vectors from their training history
    creators: np.ndarray  # (n_creators, dim), empty without creators
    products: np.ndarray  # (n_products, dim), empty without products
    history: np.ndarray  # (n_items, dim) each item's contribution to a user vector (the user tower, linear)
    user_ids: np.ndarray  # (n_users, dim) id embeddings (zeros without them)
    normalize: bool = True


class TwoTowerRecommender(ScoringRecommender):
    """Two-tower retrieval with the shared recommender contract; see the module doc."""

    def __init__(self, params: TwoTowerParams = TwoTowerParams(), features: ItemFeatures | None = None,
                 trainer: Trainer | None = None) -> None:
        self.params, self.features, self.trainer = params, features, trainer
        self.net: TwoTowerNet | None = None
        self.vectors: TwoTowerVectors | None = None
        self.known_history = sp.csr_matrix((0, 0), dtype=np.float32)  # (n_users, n_items) 1 = in the history
        self.training_log: dict[str, Any] = {}  # what the trainer measured (epochs, validation scores)

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> Self:
        """Train with the trainer given at construction."""
        if self.trainer is None:
            raise ConfigError("TwoTowerRecommender.fit needs a trainer, e.g. training.two_tower.TwoTowerTrainer")
        if self.features is not None and self.features.n_items != user_items.shape[1]:
            raise ConfigError(f"item features describe {self.features.n_items} items, the matrix has "
                              f"{user_items.shape[1]}")
        self.trainer.train(self, sp.csr_matrix(user_items, dtype=np.float32), show_progress)
        return self

    def build(self, n_users: int, n_items: int) -> TwoTowerNet:
        """A freshly initialized network for this shape (the caller seeds torch)."""
        import torch

        from feed.models.towers import TwoTowerNet

        features = self.features or ItemFeatures(n_items)
        self.features = features
        bags = torch.from_numpy(features.bags())
        self.net = TwoTowerNet(n_users, features.n_features, bags, self.params.dim, self.params.user_id,
                               self.params.normalize)
        return self.net

    def finalize(self, user_items: sp.csr_matrix) -> None:
        """Compute the numpy vectors from the trained network; known users' vectors from `user_items`."""
        self.vectors = network_vectors(self._network(), self.features)
        self.vectors.users = fold_in(self.vectors, sp.csr_matrix(user_items, dtype=np.float32),
                                     np.arange(user_items.shape[0]))
        self.known_history = binary(user_items)

    def finalize_from(self, users: np.ndarray, known_history: sp.csr_matrix) -> None:
        """Compute the numpy vectors from a loaded network, with known users' vectors and histories as saved."""
        self.vectors = network_vectors(self._network(), self.features)
        self.vectors.users = np.ascontiguousarray(users, dtype=np.float32)
        self.known_history = known_history

    def report(self) -> dict[str, float]:
        """The trainer's summary as flat numbers: best epoch, validation recall, median epoch time, examples/s."""
        log = self.training_log
        epochs = log.get("epochs", [])
        out = {f"two_tower.{k}": float(log[k]) for k in ("best_epoch", "best_valid_recall") if k in log}
        if epochs:
            out["two_tower.epochs_run"] = float(len(epochs))
            out["two_tower.epoch_seconds"] = float(np.median([e["seconds"] for e in epochs]))
            out["two_tower.examples_per_s"] = float(np.median([e["examples_per_s"] for e in epochs]))
            out["two_tower.first_loss"], out["two_tower.last_loss"] = epochs[0]["loss"], epochs[-1]["loss"]
        return out

    def _network(self) -> TwoTowerNet:
        if self.net is None:
            raise ConfigError("the two-tower model is not trained or loaded yet")
        return self.net

    def export(self) -> TwoTowerVectors:
        """Item, user, creator and product vectors as numpy arrays (no torch needed to use them)."""
        if self.vectors is None:
            raise ConfigError("the two-tower model is not trained or loaded yet")
        return self.vectors

    def creator_vectors(self) -> np.ndarray:
        """(n_creators, dim) creator vectors in the users' space."""
        return self.export().creators

    def product_vectors(self) -> np.ndarray:
        """(n_products, dim) product vectors in the users' space."""
        return self.export().products

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(n, n_items) scores of known users (vectors from their training history), plus the repeat bonus."""
        vectors = self.export()
        return self._with_repeat(vectors.users[user_rows] @ vectors.items.T, self.known_history[user_rows])

    def _with_repeat(self, scores: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Scores plus `repeat` on the items of each row's history."""
        if self.params.repeat:
            coo = history.tocoo()
            scores[coo.row, coo.col] += self.params.repeat
        return scores

    def recommend(self, user_rows: np.ndarray | int, user_items: sp.csr_matrix, N: int = 10,
                  filter_already_liked_items: bool = True,
                  recalculate_user: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-N items; with `recalculate_user` the user vectors come from `user_items` (rows may be unknown users)."""
        if not recalculate_user:
            return super().recommend(user_rows, user_items, N, filter_already_liked_items)
        rows, single = as_batch(user_rows)
        history = sp.csr_matrix(user_items)
        scores = self._with_repeat(self.user_vectors_from_history(history, rows) @ self.export().items.T, history)
        ids, best = top_n(scores, N, history if filter_already_liked_items else None)
        return (ids[0], best[0]) if single else (ids, best)

    def user_vectors_from_history(self, history: sp.csr_matrix, user_rows: np.ndarray | None = None) -> np.ndarray:
        """(n, dim) user vectors from weighted history rows (numpy); id embeddings added for known `user_rows`."""
        return fold_in(self.export(), sp.csr_matrix(history, dtype=np.float32), user_rows)

    def similar_items(self, item_rows: np.ndarray | int, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Nearest items by cosine similarity, the item itself included first."""
        rows, single = as_batch(item_rows)
        items = unit(self.export().items)
        ids, best = top_n(items[rows] @ items.T, N)
        return (ids[0], best[0]) if single else (ids, best)

    def save(self, path: Path) -> None:
        """Write `model.pt` and `manifest.json` into the folder `path`."""
        from feed.models.two_tower_io import save_model

        save_model(self, Path(path))

    @classmethod
    def load(cls, path: Path) -> TwoTowerRecommender:
        """Read a model written by `save`, checking the manifest against `model.pt`."""
        from feed.models.two_tower_io import load_model

        return load_model(cls, Path(path))


def fold_in(vectors: TwoTowerVectors, history: sp.csr_matrix, user_rows: np.ndarray | None = None) -> np.ndarray:
    """(n, dim) user tower in numpy: id embedding (known rows) + weighted mean of the history items' terms."""
    totals = np.asarray(history.sum(axis=1)).ravel()  # (n,)
    pooled = (history @ vectors.history) / np.maximum(totals, 1e-12)[:, None]  # (n, dim)
    if user_rows is not None:
        rows = np.asarray(user_rows, dtype=np.int64)
        known = (rows >= 0) & (rows < len(vectors.user_ids))
        pooled[known] += vectors.user_ids[rows[known]]
    return unit(pooled) if vectors.normalize else pooled.astype(np.float32)


def network_vectors(net: TwoTowerNet, features: ItemFeatures) -> TwoTowerVectors:
    """Numpy item, creator, product and history vectors of a network (users left empty for the caller)."""
    import torch

    net.eval()
    with torch.no_grad():
        everything = torch.arange(features.n_items)
        raw = net.raw_items(everything)  # (n_items, dim)
        items, history = net.item_tower(everything).numpy(), net.history(raw).numpy()
        weights, ids = net.features.weight.numpy(), net.users.weight.numpy().copy()
    empty = np.zeros((0, items.shape[1]), np.float32)
    return TwoTowerVectors(items, empty, *_side_tables(weights, features, net.normalize), history=history,
                           user_ids=ids if net.use_user_id else empty, normalize=net.normalize)


def _side_tables(weights: np.ndarray, features: ItemFeatures, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Creator rows, and product rows plus their category and price-bucket rows."""
    offsets, dim = features.offsets(), weights.shape[1]
    creators = _rows(weights, offsets.get("creator"), features.sizes.get("creator", 0), dim)
    products = _rows(weights, offsets.get("product"), features.sizes.get("product", 0), dim).copy()
    for name, per_product in features.product_fields.items():
        present = per_product >= 0
        products[present] += weights[offsets[name] + per_product[present]]
    return (unit(creators), unit(products)) if normalize else (creators, products)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _rows(weights: np.ndarray, start: int | None, n: int, dim: int) -> np.ndarray:
    """A slice of the shared table, or an empty (0, dim) array."""
    return np.zeros((0, dim), np.float32) if start is None else weights[start:start + n].astype(np.float32)


def binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """1.0 where a stored entry is positive, float32 CSR."""
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.data = (out.data > 0).astype(np.float32)
    out.eliminate_zeros()
    return out


def manifest_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def params_json(params: TwoTowerParams) -> dict[str, Any]:
    """The network's hyperparameters as JSON."""
    return json.loads(json.dumps(asdict(params)))
