"""The two-tower network in torch; imported only by code that trains or loads one (never by `import feed`).

One embedding table holds every feature: rows [0, n_items) are item ids, then creators, products, categories and
price buckets (see `feed.models.two_tower.ItemFeatures.offsets`). An item's vector is the sum of its feature
rows; a user's vector is their id row plus a linear map of the weighted mean of their history items' vectors.
Creator and product rows are the same rows the item tower adds up, so users, videos, creators and products
share one space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TwoTowerNet(nn.Module):
    """User tower (id + pooled history) and item tower (sum of feature embeddings), sparse embedding gradients."""

    def __init__(self, n_users: int, n_features: int, item_bags: torch.Tensor, dim: int, user_id: bool,
                 normalize: bool) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = nn.Embedding(n_features, dim, sparse=True)  # (n_features, dim) all feature rows
        self.users = nn.Embedding(max(n_users, 1) if user_id else 1, dim, sparse=True)  # (n_users, dim)
        self.use_user_id = user_id
        self.history = nn.Linear(dim, dim, bias=False)  # pooled history -> user space
        nn.init.normal_(self.features.weight, std=0.1)
        nn.init.normal_(self.users.weight, std=0.1 if user_id else 0.0)
        self.users.weight.requires_grad_(user_id)  # unused without ids: DDP must not wait for its gradient
        with torch.no_grad():
            self.history.weight.copy_(torch.eye(dim))
        self.register_buffer("item_bags", item_bags)  # (n_items, n_fields) feature rows, -1 = absent

    def raw_items(self, items: torch.Tensor) -> torch.Tensor:
        """(n, dim) unnormalized item vectors: the sum of each item's feature rows."""
        bags = self.item_bags[items]  # (n, n_fields)
        if bags.shape[1] == 1:
            return self.features(bags[:, 0])
        present = (bags >= 0).to(self.features.weight.dtype)  # (n, n_fields)
        return (self.features(bags.clamp(min=0)) * present.unsqueeze(-1)).sum(dim=1)

    def pooled(self, items: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """(n, dim) weighted sums of history item vectors; `owner[j]` is the row history entry j belongs to.

        Each distinct item is looked up once and the sums are one sparse × dense product, so the embedding
        gradient has one row per distinct item rather than one per history entry.
        """
        distinct, inverse = torch.unique(items, return_inverse=True)
        rows = self.raw_items(distinct)  # (n_distinct, dim)
        mixing = torch.sparse_coo_tensor(torch.stack([owner, inverse]), weights, (n, len(distinct)),
                                         check_invariants=False)  # built from valid rows; skip the scan
        return torch.sparse.mm(mixing, rows)

    def user_tower(self, users: torch.Tensor, keep_id: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """(n, dim) user vectors: id row (where kept) plus the mapped pooled history."""
        vectors = self.history(pooled)
        if self.use_user_id:
            vectors = vectors + self.users(users.clamp(min=0)) * keep_id.unsqueeze(-1)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def item_tower(self, items: torch.Tensor) -> torch.Tensor:
        """(n, dim) item vectors."""
        vectors = self.raw_items(items)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def forward(self, users: torch.Tensor, keep_id: torch.Tensor, history: tuple[torch.Tensor, ...],
                candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """User vectors (batch, dim) and candidate item vectors (n_candidates, dim) for one training step.

        `history` is (items, weights, owner) of the batch's pooled histories, weights already normalized per row.
        """
        pooled = self.pooled(*history, n=len(users))
        return self.user_tower(users, keep_id, pooled), self.item_tower(candidates)
