"""Saving and loading a two-tower model: `model.pt` (tensors only) and `manifest.json`, checked against each other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from feed.errors import ArtifactError
from feed.models.two_tower import (FORMAT, MANIFEST_FILE, MODEL_FILE, ItemFeatures, TwoTowerParams,
                                   TwoTowerRecommender, TwoTowerVectors, manifest_digest, params_json)

# saved next to the network's own tensors: known users' vectors and histories, per-product fields
EXTRA = ("export.users", "history.indptr", "history.indices", "product.category", "product.price")


def save_model(model: TwoTowerRecommender, folder: Path) -> None:
    """Write the state_dict (plus known users' vectors and per-product fields) and its manifest."""
    import torch

    net, vectors, features = model._network(), model.export(), model.features
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    state["export.users"] = torch.from_numpy(vectors.users.copy())
    state["history.indptr"] = torch.from_numpy(model.known_history.indptr.astype(np.int64))
    state["history.indices"] = torch.from_numpy(model.known_history.indices.astype(np.int64))
    for name in ("category", "price"):
        state[f"product.{name}"] = torch.from_numpy(features.product_fields.get(name, np.zeros(0, np.int64)))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / MODEL_FILE)
    manifest = {"format": FORMAT, "params": params_json(model.params), "n_items": features.n_items,
                "n_users": int(vectors.users.shape[0]), "fields": list(features.fields),
                "sizes": features.sizes, "shapes": {k: list(v.shape) for k, v in state.items()},
                "sha256": {MODEL_FILE: manifest_digest(folder / MODEL_FILE)}, "torch": torch.__version__,
                "training": model.training_log}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=float))


def load_model(cls: type[TwoTowerRecommender], folder: Path) -> TwoTowerRecommender:
    """A model from `folder`; every inconsistency is an ArtifactError naming the file."""
    manifest = read_manifest(folder / MANIFEST_FILE)
    state = _read_state(folder / MODEL_FILE, manifest)
    features = _features(manifest, state, folder / MODEL_FILE)
    model = cls(TwoTowerParams(**manifest["params"]), features)
    net = model.build(manifest["n_users"], manifest["n_items"])
    try:
        net.load_state_dict({k: v for k, v in state.items() if k not in EXTRA}, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"does not fit the manifest's network: {exc}", path=str(folder / MODEL_FILE)) from exc
    indptr, indices = state["history.indptr"].numpy(), state["history.indices"].numpy()
    if indptr[-1] != len(indices) or (len(indices) and indices.max() >= manifest["n_items"]):
        raise ArtifactError("the saved user histories are inconsistent", path=str(folder / MODEL_FILE))
    known = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                          shape=(manifest["n_users"], manifest["n_items"]))
    model.finalize_from(state["export.users"].numpy(), known)
    model.training_log = manifest.get("training", {})
    return model


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest, with its format and required keys checked."""
    try:
        manifest = json.loads(path.read_text())
    except OSError as exc:
        raise ArtifactError(f"cannot read the manifest ({exc.strerror})", path=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"not valid JSON ({exc})", path=str(path)) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"not a {FORMAT} manifest", path=str(path))
    missing = [k for k in ("params", "n_items", "n_users", "fields", "sizes", "shapes", "sha256") if k not in manifest]
    if missing:
        raise ArtifactError(f"manifest lacks {missing}", path=str(path))
    try:
        params = TwoTowerParams(**manifest["params"])
    except TypeError as exc:
        raise ArtifactError(f"bad params: {exc}", path=str(path)) from exc
    expected = expected_shapes(params, manifest)
    declared = {k: manifest["shapes"].get(k) for k in expected}
    if declared != expected:
        raise ArtifactError(f"declared shapes {declared} contradict its own params and sizes {expected}",
                            path=str(path))
    return manifest


def expected_shapes(params: TwoTowerParams, manifest: dict[str, Any]) -> dict[str, list[int]]:
    """The tensor shapes a manifest's params, item count, user count and feature tables imply."""
    n_items, n_users, dim = int(manifest["n_items"]), int(manifest["n_users"]), params.dim
    n_features = n_items + sum(int(v) for v in manifest["sizes"].values())
    return {"features.weight": [n_features, dim], "users.weight": [max(n_users, 1) if params.user_id else 1, dim],
            "history.weight": [dim, dim], "item_bags": [n_items, 1 + len(manifest["fields"])],
            "export.users": [n_users, dim], "history.indptr": [n_users + 1]}


def _read_state(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Tensors of `model.pt`, after checking its hash and every tensor's shape against the manifest."""
    import torch

    try:
        digest = manifest_digest(path)
    except OSError as exc:
        raise ArtifactError(f"cannot read the model ({exc.strerror})", path=str(path)) from exc
    if digest != manifest["sha256"].get(MODEL_FILE):
        raise ArtifactError("SHA-256 differs from the manifest's: the file was changed or replaced", path=str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        raise ArtifactError(f"cannot load tensors: {exc}", path=str(path)) from exc
    shapes = {k: list(v.shape) for k, v in state.items()}
    if shapes != manifest["shapes"]:
        raise ArtifactError(f"tensor shapes {shapes} differ from the manifest's {manifest['shapes']}", path=str(path))
    return state


def _features(manifest: dict[str, Any], state: dict[str, Any], path: Path) -> ItemFeatures:
    """Item features recovered from the saved bags (global rows minus each table's offset)."""
    bags = state["item_bags"].numpy()  # (n_items, 1 + n_fields)
    fields, sizes = list(manifest["fields"]), {k: int(v) for k, v in manifest["sizes"].items()}
    if bags.shape != (manifest["n_items"], 1 + len(fields)) or set(sizes) != set(fields):
        raise ArtifactError(f"item features {bags.shape} do not match the manifest's fields {fields}", path=str(path))
    skeleton = ItemFeatures(manifest["n_items"], {k: np.zeros(0, np.int64) for k in fields}, sizes)
    offsets = skeleton.offsets()
    columns = {k: np.where(bags[:, i + 1] >= 0, bags[:, i + 1] - offsets[k], -1) for i, k in enumerate(fields)}
    per_product = {k: state[f"product.{k}"].numpy() for k in ("category", "price") if len(state[f"product.{k}"])}
    return ItemFeatures(manifest["n_items"], columns, sizes, per_product)


__all__ = ["save_model", "load_model", "read_manifest", "TwoTowerVectors"]
