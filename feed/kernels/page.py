"""The page stage: exploration slots, the candidate pool, caps per creator, product and merchant, greedy MMR.

`assemble` is greedy: at each position it takes the candidate with the best maximal-marginal-relevance score
λ·relevance − (1 − λ)·(max cosine to the videos already on the page) among those that keep every cap, and stops
only when the page is full or no candidate keeps the caps. Slots are filled first (they count towards the caps)
and then placed at their positions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from feed.kernels.base import (K_CREATOR, K_MERCHANT, K_PRODUCT, R_INV_NORM, R_PUBLISHED, dot, gather_rows, jit,
                               order_desc, sort_by_key)

NEW_CREATOR = 8  # SOURCES.index("new_creator")


class Tables(NamedTuple):
    """Per-model arrays the page stage reads (`feed.layout`)."""

    record: np.ndarray  # (n_videos, width) float32, columns R_*
    keys: np.ndarray  # (n_videos, 4) int32, columns K_*
    video_factors: np.ndarray  # (n_trained, dim) float32


class Config(NamedTuple):
    """The page settings as numbers (`feed.rerank.PageConfig`)."""

    caps: np.ndarray  # (3,) int64 most videos per creator, product and merchant
    mmr_lambda: float
    pool: int  # MMR looks at the most relevant `pool` candidates (all of them when the caps need more)
    fresh_slot: bool
    fresh_position: int
    new_creator_slot: bool
    new_creator_position: int


@jit
def compact(keys: np.ndarray) -> np.ndarray:
    """Keys renumbered 0, 1, … (equal keys, equal numbers; -1 stays -1)."""
    order = sort_by_key(keys + 1)  # keys ≥ -1
    out, n = np.full(len(keys), -1, np.int64), 0
    for j in range(len(order)):
        key = keys[order[j]]
        if key < 0:
            continue
        if j == 0 or key != keys[order[j - 1]]:
            n += 1
        out[order[j]] = n - 1
    return out


@jit
def take(i: int, gate: np.ndarray, groups: np.ndarray, counts: np.ndarray, caps: np.ndarray) -> None:
    """Place candidate i: close it and every group (creator, product, merchant) it fills up (gate = −inf)."""
    gate[i] = -np.inf
    for g in range(groups.shape[0]):
        key = groups[g, i]
        if key < 0:
            continue
        counts[g, key] += 1
        if counts[g, key] >= caps[g]:
            for j in range(groups.shape[1]):
                if groups[g, j] == key:
                    gate[j] = -np.inf


@jit
def add_similarity(max_sim: np.ndarray, i: int, vectors: np.ndarray, inv_norm: np.ndarray) -> None:
    """max_sim = max(max_sim, cosine to candidate i); vectors (n, dim) and inv_norm (n,) of the candidates, zero
    for candidates without a vector (whose cosine is then 0)."""
    for j in range(len(max_sim)):
        max_sim[j] = max(max_sim[j], dot(vectors[j], vectors[i]) * inv_norm[j] * inv_norm[i])


@jit
def assemble(relevance: np.ndarray, keys: np.ndarray, caps: np.ndarray, vectors: np.ndarray, inv_norm: np.ndarray,
             limit: int, lam: float, slot_positions: np.ndarray, slot_items: np.ndarray) -> np.ndarray:
    """The page's candidate indices in order. keys: (3, n) creator, product and merchant rows; vectors (n, dim)
    and inv_norm (n,) each candidate's vector and 1/‖vector‖ (zeros without one); slots as positions (ascending)
    and the candidate each reserves."""
    n = len(relevance)
    groups, counts = np.empty(keys.shape, np.int64), np.zeros(keys.shape, np.int64)
    for g in range(keys.shape[0]):
        groups[g] = compact(keys[g])
    gate = np.zeros(n)  # 0 open, −inf closed; λ·relevance where open once MMR starts
    at, reserved, n_reserved = np.empty(len(slot_items), np.int64), np.empty(len(slot_items), np.int64), 0
    for s in range(len(slot_items)):
        if np.isfinite(gate[slot_items[s]]):  # reserved twice or breaking a cap: only the first slot keeps it
            at[n_reserved], reserved[n_reserved] = slot_positions[s], slot_items[s]
            n_reserved += 1
            take(slot_items[s], gate, groups, counts, caps)
    reserved, at = reserved[:n_reserved], at[:n_reserved]
    max_sim = np.zeros(n)
    for i in reserved:
        add_similarity(max_sim, i, vectors, inv_norm)
    picks = mmr(relevance, gate, groups, counts, caps, vectors, inv_norm, max_sim, limit - n_reserved, lam)
    return place(picks, at, reserved, limit)


@jit
def mmr(relevance: np.ndarray, gate: np.ndarray, groups: np.ndarray, counts: np.ndarray, caps: np.ndarray,
        vectors: np.ndarray, inv_norm: np.ndarray, max_sim: np.ndarray, n: int, lam: float) -> np.ndarray:
    """Up to n greedy MMR picks; stops early when no candidate keeps every cap."""
    picks, m = np.empty(max(n, 0), np.int64), 0
    if n <= 0 or len(relevance) == 0:
        return picks[:0]
    low, high = relevance.min(), relevance.max()
    for j in range(len(gate)):
        norm = (relevance[j] - low) / (high - low) if high - low > 0 else 1.0
        gate[j] = lam * norm if np.isfinite(gate[j]) else -np.inf
    while m < n:
        best, best_score = -1, -np.inf
        for j in range(len(gate)):
            score = gate[j] - (1.0 - lam) * max_sim[j]
            if score > best_score:
                best, best_score = j, score
        if best < 0:
            break
        picks[m], m = best, m + 1
        take(best, gate, groups, counts, caps)
        add_similarity(max_sim, best, vectors, inv_norm)
    return picks[:m]


@jit
def place(picks: np.ndarray, positions: np.ndarray, reserved: np.ndarray, limit: int) -> np.ndarray:
    """MMR's picks with each reserved candidate inserted at its position (at the end when the page is short)."""
    out, n = np.empty(len(picks) + len(reserved), np.int64), len(picks)
    out[:n] = picks
    for s in range(len(reserved)):
        p = min(positions[s], n)
        out[p + 1:n + 1] = out[p:n].copy()
        out[p], n = reserved[s], n + 1
    return out[:min(n, limit)]


@jit
def pool_of(relevance: np.ndarray, size: int, slot_items: np.ndarray) -> np.ndarray:
    """Sorted indices of the `size` most relevant candidates (ties: the earlier) and the slots' candidates."""
    if len(relevance) <= size:
        return np.arange(len(relevance))
    keep = np.zeros(len(relevance), np.bool_)
    keep[order_desc(relevance)[:size]] = True
    keep[slot_items] = True
    return np.flatnonzero(keep)


@jit
def slots(t: Tables, c: Config, videos: np.ndarray, source: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions reserved for exploration, ascending, and their candidates: the new-creator pick and the newest
    candidate video (the fresh slot; it takes the position when both ask for the same one)."""
    positions, items, n = np.empty(2, np.int64), np.empty(2, np.int64), 0
    new = np.flatnonzero(source == NEW_CREATOR)
    if c.new_creator_slot and len(new) and c.new_creator_position < limit:
        positions[0], items[0], n = c.new_creator_position, new[0], 1
    if c.fresh_slot and c.fresh_position < limit and len(videos):
        newest, newest_at, record = -np.inf, -1, t.record
        for i in range(len(videos)):
            published = record[videos[i], R_PUBLISHED]  # NaN (unknown) is never the newest
            if published > newest and not (n and items[0] == i):
                newest, newest_at = published, i
        if newest_at >= 0:
            if n and positions[0] == c.fresh_position:
                n = 0
            positions[n], items[n], n = c.fresh_position, newest_at, n + 1
    if n == 2 and positions[1] < positions[0]:
        return positions[::-1].copy(), items[::-1].copy()
    return positions[:n], items[:n]


@jit
def candidate_facts(t: Tables, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(3, n) creator, product and merchant rows (-1 unknown), (n, dim) video vectors and (n,) 1/‖vector‖ (zeros
    for videos without one), each gathered in one pass of independent loads."""
    rows = gather_rows(t.keys, videos)
    keys = np.empty((3, len(videos)), np.int64)
    for i in range(len(videos)):
        keys[0, i], keys[1, i], keys[2, i] = rows[i, K_CREATOR], rows[i, K_PRODUCT], rows[i, K_MERCHANT]
    vectors = gather_rows(t.video_factors, videos)
    inv = np.zeros(len(videos), np.float32)
    for i in range(len(videos)):
        if videos[i] < len(t.video_factors):
            inv[i] = t.record[videos[i], R_INV_NORM]
    return keys, vectors, inv


@jit
def assemble_over(t: Tables, c: Config, videos: np.ndarray, relevance: np.ndarray, pool: np.ndarray, limit: int,
                  positions: np.ndarray, items: np.ndarray) -> np.ndarray:
    """`assemble` over the candidates at `pool` (sorted indices); returns candidate indices."""
    keys, vectors, inv = candidate_facts(t, videos[pool])
    chosen = assemble(relevance[pool], keys, c.caps, vectors, inv, limit, c.mmr_lambda, positions,
                      np.searchsorted(pool, items))
    return pool[chosen]


@jit
def page(t: Tables, c: Config, videos: np.ndarray, source: np.ndarray, relevance: np.ndarray,
         limit: int) -> np.ndarray:
    """The page's candidate indices: MMR over the most relevant `pool` candidates and the slots, over all of
    them when the caps leave that pool short of a full page."""
    positions, items = slots(t, c, videos, source, limit)
    pool = pool_of(relevance, c.pool, items)
    chosen = assemble_over(t, c, videos, relevance, pool, limit, positions, items)
    if len(chosen) < limit and len(pool) < len(relevance):
        return assemble_over(t, c, videos, relevance, np.arange(len(relevance)), limit, positions, items)
    return chosen
