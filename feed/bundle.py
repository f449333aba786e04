"""The model bundle: a self-describing directory (Parquet, npz, FAISS native, manifest.json), never a pickle.

`write_bundle` writes into a temporary sibling directory and renames it into place, so a reader never sees a
half-written bundle. `load_bundle` checks every file's sha256 against the manifest and the cross-file
invariants (row counts, dimensions) and raises `ArtifactError` naming the offending file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feed.dataset import Catalog, IdMap
from feed.errors import ArtifactError
from feed.index import VectorIndex
from feed.ranker import Ranker
from feed.retrieval import Mix, Tower
from feed.stats import Stats, load_stats, save_stats

FORMAT = "selfretail-feed-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class RelationModel:
    """One relation's user and item vectors and the index over its items."""

    user_factors: np.ndarray  # (n_users, dim)
    item_factors: np.ndarray  # (n_items, dim)
    index: VectorIndex
    user_items: sp.csr_matrix  # (n_users, n_items) training weights: the history a fold-in starts from
    mix: Mix | None = None  # None: ALS alone; else how ALS and the two-tower make the vectors (feed.retrieval)
    neighbours: np.ndarray | None = None  # (n_items, k) int32 each item's k nearest items by the index, -1 padded


@dataclass
class Bundle:
    """Everything serving needs, loaded and checked."""

    users: IdMap
    catalog: Catalog
    popularity: np.ndarray  # (n_videos,) distinct users per video in the training data
    relations: dict[str, RelationModel]
    seen: sp.csr_matrix  # (n_users, n_videos) watched to the end or purchased
    bought: sp.csr_matrix  # (n_users, n_products) purchased: videos added later for them are hidden too
    manifest: dict[str, Any] = field(default_factory=dict)
    stats: Stats | None = None  # counts, trends and user context of the training window
    ranker: Ranker | None = None  # None: candidates are ranked by retrieval scores alone
    tower: Tower | None = None  # the numpy user tower, when a relation's retriever uses the two-tower model

    @property
    def bundle_id(self) -> str:
        """Digest identifying this bundle's content."""
        return str(self.manifest.get("bundle_id", "unsaved"))


def write_bundle(bundle: Bundle, folder: Path, manifest: dict[str, Any]) -> Path:
    """Write the bundle to `folder` atomically and return it; `manifest` adds config, metrics, window."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_tables(bundle, tmp)
    relations = {name: _write_relation(name, rel, tmp) for name, rel in bundle.relations.items()}
    sp.save_npz(tmp / "seen.npz", bundle.seen.tocsr())
    sp.save_npz(tmp / "bought.npz", bundle.bought.tocsr())
    if bundle.stats is not None:
        save_stats(bundle.stats, tmp / "stats.npz")
    if bundle.ranker is not None:
        bundle.ranker.save(tmp / "ranker.npz")
    if bundle.tower is not None:
        np.savez(tmp / "tower.npz", history=bundle.tower.history, user_ids=bundle.tower.user_ids)
        manifest = {**manifest, "tower": {"dim": bundle.tower.dim, "normalize": bundle.tower.normalize}}
    files = {p.name: _file_entry(p) for p in sorted(tmp.iterdir())}
    full = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "relations": relations,
            "counts": _counts(bundle), "files": files, "bundle_id": _digest(files)}
    (tmp / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    bundle.manifest = full
    return folder


def _write_tables(bundle: Bundle, folder: Path) -> None:
    """Id maps and catalog arrays as Parquet."""
    cat = bundle.catalog
    pd.DataFrame({"user_id": bundle.users.ids.astype(str)}).to_parquet(folder / "users.parquet", index=False)
    pd.DataFrame({
        "video_id": cat.videos.ids.astype(str), "creator_row": cat.video_creator,
        "product_row": cat.video_product, "duration_ms": cat.video_duration_ms,
        "published_ms": cat.video_published_ms, "popularity": bundle.popularity,
    }).to_parquet(folder / "videos.parquet", index=False)
    pd.DataFrame({"creator_id": cat.creators.ids.astype(str)}).to_parquet(folder / "creators.parquet", index=False)
    pd.DataFrame({
        "product_id": cat.products.ids.astype(str), "price": cat.product_price,
        "commission_rate": cat.product_commission, "in_stock": cat.product_in_stock,
        "category_row": cat.product_category, "merchant_row": cat.product_merchant,
    }).to_parquet(folder / "products.parquet", index=False)
    pd.DataFrame({"category": cat.categories.ids.astype(str)}).to_parquet(folder / "categories.parquet", index=False)
    pd.DataFrame({"merchant_id": cat.merchants.ids.astype(str)}).to_parquet(folder / "merchants.parquet", index=False)


def _write_relation(name: str, rel: RelationModel, folder: Path) -> dict[str, Any]:
    """Factors as npz and the index natively; returns the relation's manifest entry."""
    mix = rel.mix or Mix.of(0.0, rel.item_factors, None)
    np.savez(folder / f"factors_{name}.npz", user_factors=rel.user_factors, item_factors=rel.item_factors,
             als_cov=mix.als_cov, tower_cov=mix.tower_cov)
    rel.index.write(folder / f"index_{name}.faiss")
    if rel.neighbours is not None:
        np.save(folder / f"neighbours_{name}.npy", np.ascontiguousarray(rel.neighbours, dtype=np.int32))
    sp.save_npz(folder / f"interactions_{name}.npz", rel.user_items.tocsr())
    return {"dim": int(rel.item_factors.shape[1]), "n_items": int(rel.item_factors.shape[0]),
            "index_factory": rel.index.factory, "search_params": rel.index.search_params,
            "max_sq_norm": rel.index.max_sq_norm, "index_scaled": rel.index.scaled,
            "retriever": mix.kind, "tower_weight": mix.weight, "als_dim": mix.als_dim}


def _counts(bundle: Bundle) -> dict[str, int]:
    """Row counts recorded for the cross-file checks."""
    cat = bundle.catalog
    return {"users": len(bundle.users), "videos": len(cat.videos), "creators": len(cat.creators),
            "products": len(cat.products)}


def _file_entry(path: Path) -> dict[str, Any]:
    """sha256 and size of one file."""
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _digest(files: dict[str, dict[str, Any]]) -> str:
    """Short id of the bundle derived from its files' hashes."""
    joined = "".join(f"{name}:{entry['sha256']}" for name, entry in sorted(files.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


def read_manifest(folder: Path) -> dict[str, Any]:
    """The bundle's manifest, with errors naming manifest.json."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError("missing: this folder is not a model bundle", path=str(path)) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"not valid JSON ({exc})", path=str(path)) from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"expected format {FORMAT} v{FORMAT_VERSION}, found "
                            f"{manifest.get('format')} v{manifest.get('format_version')}", path=str(path))
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Check that every file the manifest lists exists with the recorded sha256."""
    for name, entry in manifest["files"].items():
        path = Path(folder) / name
        if not path.is_file():
            raise ArtifactError("missing: listed in manifest.json but not in the bundle", path=str(path))
        actual = _sha256(path)
        if actual != entry["sha256"]:
            raise ArtifactError(f"sha256 mismatch: manifest.json says {entry['sha256'][:16]}…, the file has "
                                f"{actual[:16]}…; it is corrupted or was changed after the bundle was written",
                                path=str(path))


def load_bundle(folder: Path) -> Bundle:
    """Load and check a bundle; any problem raises ArtifactError naming the file."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    users = IdMap(_read_parquet(folder / "users.parquet")["user_id"].to_numpy(dtype=object))
    catalog, popularity = _read_catalog(folder)
    relations = {name: _read_relation(folder, name, entry, len(users), manifest["files"])
                 for name, entry in manifest["relations"].items()}
    seen = _read_sparse(folder / "seen.npz", (len(users), len(catalog.videos)))
    bought = _read_sparse(folder / "bought.npz", (len(users), len(catalog.products)))
    stats = _read_stats(folder / "stats.npz", len(users), len(catalog.videos)) if "stats.npz" in manifest[
        "files"] else None
    ranker = Ranker.load(folder / "ranker.npz") if "ranker.npz" in manifest["files"] else None
    tower = _read_tower(folder, manifest, len(users), len(catalog.videos))
    bundle = Bundle(users, catalog, popularity, relations, seen, bought, manifest, stats, ranker, tower)
    _check_counts(bundle, manifest, folder)
    _check_mixes(bundle, folder)
    return bundle


def _read_tower(folder: Path, manifest: dict[str, Any], n_users: int, n_videos: int) -> Tower | None:
    """The numpy user tower, when the bundle has one, checked against the id maps."""
    if "tower.npz" not in manifest["files"]:
        return None
    path = folder / "tower.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            history, user_ids = data["history"], data["user_ids"]
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"cannot read the user tower ({exc})", path=str(path)) from exc
    entry = manifest.get("tower", {})
    dim = int(entry.get("dim", -1))
    if history.shape != (n_videos, dim) or user_ids.shape not in ((0, dim), (n_users, dim)):
        raise ArtifactError(f"tower arrays {history.shape} and {user_ids.shape} do not match {n_videos} videos, "
                            f"{n_users} users of dim {dim} in manifest.json", path=str(path))
    return Tower(history, user_ids, bool(entry.get("normalize", True)))


def _check_mixes(bundle: Bundle, folder: Path) -> None:
    """A relation that uses the two-tower model needs the tower, with the dimensions its vectors imply."""
    for name, rel in bundle.relations.items():
        mix = rel.mix
        if mix is None or mix.kind == "als":
            continue
        tower_dim = rel.item_factors.shape[1] - mix.als_dim
        if bundle.tower is None or bundle.tower.dim != tower_dim:
            found = "no tower.npz" if bundle.tower is None else f"a tower of dim {bundle.tower.dim}"
            raise ArtifactError(f"relation {name} ({mix.kind}) needs a user tower of dim {tower_dim}, the bundle "
                                f"has {found}", path=str(folder / f"factors_{name}.npz"))


def _read_stats(path: Path, n_users: int, n_videos: int) -> Stats:
    """The training window's stats, checked against the id maps."""
    try:
        stats = load_stats(path)
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"cannot read stats ({exc})", path=str(path)) from exc
    if len(stats.trend) != n_videos or stats.recent.shape != (n_users, n_videos) or len(stats.user_segment) not in (
            0, n_users):
        raise ArtifactError(f"stats cover {len(stats.trend)} videos and {stats.recent.shape[0]} users, the bundle "
                            f"has {n_videos} and {n_users}", path=str(path))
    return stats


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet table of the bundle, errors naming the file."""
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise ArtifactError(f"cannot read Parquet ({exc})", path=str(path)) from exc


def _read_catalog(folder: Path) -> tuple[Catalog, np.ndarray]:
    """Catalog arrays and video popularity from the bundle's Parquet tables."""
    videos = _read_parquet(folder / "videos.parquet")
    creators = _read_parquet(folder / "creators.parquet")
    products = _read_parquet(folder / "products.parquet")
    categories = _read_parquet(folder / "categories.parquet")["category"].to_numpy(dtype=object)
    merchants = _read_parquet(folder / "merchants.parquet")["merchant_id"].to_numpy(dtype=object)
    catalog = Catalog(
        videos=IdMap(videos["video_id"].to_numpy(dtype=object)),
        creators=IdMap(creators["creator_id"].to_numpy(dtype=object)),
        products=IdMap(products["product_id"].to_numpy(dtype=object)),
        video_creator=videos["creator_row"].to_numpy(dtype=np.int64),
        video_product=videos["product_row"].to_numpy(dtype=np.int64),
        video_duration_ms=videos["duration_ms"].to_numpy(dtype=np.float64),
        video_published_ms=videos["published_ms"].to_numpy(dtype=np.float64),
        product_price=products["price"].to_numpy(dtype=np.float64),
        product_commission=products["commission_rate"].to_numpy(dtype=np.float64),
        product_in_stock=products["in_stock"].to_numpy(dtype=bool),
        categories=IdMap(categories), product_category=products["category_row"].to_numpy(dtype=np.int64),
        merchants=IdMap(merchants), product_merchant=products["merchant_row"].to_numpy(dtype=np.int64),
    )
    _check_rows(folder / "videos.parquet", catalog.video_creator, len(catalog.creators), "creator_row")
    _check_rows(folder / "videos.parquet", catalog.video_product, len(catalog.products), "product_row")
    _check_rows(folder / "products.parquet", catalog.product_category, len(catalog.categories), "category_row")
    _check_rows(folder / "products.parquet", catalog.product_merchant, len(catalog.merchants), "merchant_row")
    return catalog, videos["popularity"].to_numpy(dtype=np.float32)


def _check_rows(path: Path, rows: np.ndarray, n: int, column: str) -> None:
    """Row references must be -1 or within [0, n)."""
    bad = (rows < -1) | (rows >= n)
    if bad.any():
        raise ArtifactError(f"column {column} refers to row {rows[bad][0]}, but there are only {n}", path=str(path))


def _read_relation(folder: Path, name: str, entry: dict[str, Any], n_users: int,
                   files: dict[str, Any]) -> RelationModel:
    """Factors and index of one relation, with shape checks against each other."""
    path = folder / f"factors_{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            users, items = data["user_factors"], data["item_factors"]
            covs = (data["als_cov"], data["tower_cov"]) if "als_cov" in data else None
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"cannot read factors ({exc})", path=str(path)) from exc
    if users.shape != (n_users, entry["dim"]) or items.shape != (entry["n_items"], entry["dim"]):
        raise ArtifactError(f"factor shapes {users.shape} and {items.shape} do not match {n_users} users, "
                            f"{entry['n_items']} items of dim {entry['dim']} in manifest.json", path=str(path))
    mix = _read_mix(entry, covs, path)
    index_path = folder / f"index_{name}.faiss"
    index = VectorIndex.read(index_path, entry["max_sq_norm"], entry["index_factory"], entry["search_params"],
                             entry.get("index_scaled", False))
    if index.ntotal != entry["n_items"] or index.dim != entry["dim"]:
        raise ArtifactError(f"index holds {index.ntotal} vectors of dim {index.dim}, expected "
                            f"{entry['n_items']} of dim {entry['dim']}", path=str(index_path))
    shape = (n_users, entry["n_items"])
    neighbours = _read_neighbours(folder / f"neighbours_{name}.npy", entry["n_items"]) if \
        f"neighbours_{name}.npy" in files else None
    return RelationModel(users, items, index, _read_sparse(folder / f"interactions_{name}.npz", shape), mix,
                         neighbours)


def _read_neighbours(path: Path, n_items: int) -> np.ndarray:
    """A relation's precomputed nearest items, checked: one row per item, rows -1 or within the items."""
    try:
        neighbours = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read neighbours ({exc})", path=str(path)) from exc
    if neighbours.ndim != 2 or neighbours.shape[0] != n_items or neighbours.dtype != np.int32:
        raise ArtifactError(f"neighbours are {neighbours.dtype} {neighbours.shape}, expected int32 ({n_items}, k)",
                            path=str(path))
    if neighbours.size and (neighbours.min() < -1 or neighbours.max() >= n_items):
        raise ArtifactError(f"neighbours refer to items outside [0, {n_items})", path=str(path))
    return neighbours


def _read_mix(entry: dict[str, Any], covs: tuple[np.ndarray, np.ndarray] | None, path: Path) -> Mix | None:
    """A relation's retriever from its manifest entry (bundles before the two-tower model: ALS, None)."""
    if "tower_weight" not in entry:
        return None
    weight, als_dim, dim = float(entry["tower_weight"]), int(entry["als_dim"]), int(entry["dim"])
    als_cov, tower_cov = covs if covs is not None else (np.zeros((0, 0)), np.zeros((0, 0)))
    mix = Mix(weight, als_dim, als_cov, tower_cov)
    blend = mix.kind == "blend"
    expected = ((als_dim, als_dim), (dim - als_dim, dim - als_dim)) if blend else ((0, 0), (0, 0))
    if not 0.0 <= weight <= 1.0 or not 0 <= als_dim <= dim or (als_cov.shape, tower_cov.shape) != expected:
        raise ArtifactError(f"retriever {entry.get('retriever')} (weight {weight}, {als_dim} ALS columns of {dim}) "
                            f"does not fit covariances {als_cov.shape} and {tower_cov.shape}", path=str(path))
    return mix


def _read_sparse(path: Path, shape: tuple[int, int]) -> sp.csr_matrix:
    """A sparse matrix of the bundle, checked against the id maps."""
    try:
        seen = sp.load_npz(path).tocsr()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read sparse matrix ({exc})", path=str(path)) from exc
    if seen.shape != shape:
        raise ArtifactError(f"shape {seen.shape} does not match {shape} (users, items)", path=str(path))
    return seen


def _check_counts(bundle: Bundle, manifest: dict[str, Any], folder: Path) -> None:
    """The tables' row counts must equal the manifest's and the relations' item counts."""
    actual = _counts(bundle)
    if actual != manifest["counts"]:
        raise ArtifactError(f"tables hold {actual}, manifest.json says {manifest['counts']}",
                            path=str(folder / MANIFEST))
    for name, rel in bundle.relations.items():
        expected = len(bundle.catalog.items(name))
        if rel.item_factors.shape[0] != expected:
            raise ArtifactError(f"{rel.item_factors.shape[0]} item vectors for {expected} {name}s",
                                path=str(folder / f"factors_{name}.npz"))
