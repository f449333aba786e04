"""Numpy pieces of two-tower training: the validation hold-out, epoch order, pooled histories, log-Q terms.

Everything is vectorized over a batch (no Python loop per example) and seeded by the caller's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Pairs:
    """The (user, item) entries of a matrix with their summed event weights, in one epoch's order."""

    users: np.ndarray  # (n_pairs,) int64
    items: np.ndarray  # (n_pairs,) int64
    values: np.ndarray  # (n_pairs,) float32 summed event weights

    @classmethod
    def of(cls, matrix: sp.csr_matrix) -> Pairs:
        """Every stored entry, row by row."""
        users = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
        return cls(users, matrix.indices.astype(np.int64), matrix.data.astype(np.float32))

    def shuffled(self, rng: np.random.Generator) -> Pairs:
        """The same pairs in a random order."""
        order = rng.permutation(len(self.users))
        return Pairs(self.users[order], self.items[order], self.values[order])

    def __len__(self) -> int:
        return len(self.users)


def holdout(matrix: sp.csr_matrix, fraction: float, rng: np.random.Generator) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, valid): each entry held out with probability `fraction`, but every user keeps one entry."""
    matrix = sp.csr_matrix(matrix)
    keys = rng.random(matrix.nnz)  # (nnz,)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    top = np.zeros(matrix.nnz, dtype=bool)  # the entry with each user's largest key always trains
    if matrix.nnz:
        order = np.lexsort((keys, rows))
        last = np.append(rows[order][1:] != rows[order][:-1], True)
        top[order[last]] = True
    held = (keys < fraction) & ~top
    return _subset(matrix, ~held), _subset(matrix, held)


def _subset(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The matrix with only the entries where `keep` is true."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[keep]
    return sp.csr_matrix((matrix.data[keep], (rows, matrix.indices[keep])), shape=matrix.shape, dtype=np.float32)


def loss_weights(values: np.ndarray, power: float) -> np.ndarray:
    """(n,) per-example loss weights value ** power, scaled to mean 1 over the given values."""
    weights = np.power(np.maximum(values, 1e-12), power, dtype=np.float64)
    return (weights / max(weights.mean(), 1e-12)).astype(np.float32)


def histories(matrix: sp.csr_matrix, users: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
              dropout: float, max_len: int, exclude_target: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each example's pooled history as flat (items, weights, owner); weights sum to 1 per example.

    An example's history is its user's row: each item kept with probability (1 - dropout) · min(1, max_len / n),
    and the target itself left out with probability `exclude_target` (else a model could learn to copy it).
    """
    starts, lens = matrix.indptr[users], np.diff(matrix.indptr)[users]  # (batch,) each
    owner = np.repeat(np.arange(len(users)), lens)  # (n_entries,)
    first = np.repeat(np.cumsum(lens) - lens, lens)
    position = np.arange(len(owner)) - first + np.repeat(starts, lens)
    items, weights = matrix.indices[position].astype(np.int64), matrix.data[position].astype(np.float64)
    keep_p = (1.0 - dropout) * np.minimum(1.0, max_len / np.maximum(lens, 1))  # (batch,)
    keep = rng.random(len(owner)) < keep_p[owner]
    excluded = rng.random(len(users)) < exclude_target  # (batch,)
    keep &= ~((items == targets[owner]) & excluded[owner])
    items, weights, owner = items[keep], weights[keep], owner[keep]
    totals = np.bincount(owner, weights=weights, minlength=len(users))
    return items, (weights / np.maximum(totals[owner], 1e-12)).astype(np.float32), owner


def item_probabilities(matrix: sp.csr_matrix) -> np.ndarray:
    """(n_items,) share of training pairs with each item: the sampling distribution of in-batch candidates."""
    counts = np.bincount(sp.csr_matrix(matrix).indices, minlength=matrix.shape[1]).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def log_expected_counts(candidates: np.ndarray, probabilities: np.ndarray, batch: int, n_uniform: int) -> np.ndarray:
    """(n_candidates,) log E[times each candidate's item appears among a batch's candidates] (the log-Q term).

    The candidates are the batch's `batch` positives (each drawn from `probabilities`) plus `n_uniform` items
    drawn uniformly from the catalog: E[count of item i] = batch · p_i + n_uniform / n_items.
    """
    expected = batch * probabilities[candidates] + n_uniform / len(probabilities)
    return np.log(np.maximum(expected, 1e-30)).astype(np.float32)
