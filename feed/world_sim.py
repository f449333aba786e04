"""Internals of `feed.world`: the catalog and population draws and the day-by-day event simulation.

The behaviour functions (P(view), watch ratio, likes, shares, friends arriving, carts, purchases, refunds)
are documented with the affinity and propensity formulas in `feed.world`; all of them are vectorized over
a batch of users or events, with one Python loop per simulated day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse as sp

from feed.schema import EVENT_TYPES

if TYPE_CHECKING:
    from feed.world import Truth, WorldParams

DAY_MS = 86_400_000
_SESSION_LEN = 8.0                  # mean impressions per feed request
# Impressions come from: popular videos, taste-matched videos (by category), videos of creators the user
# trusts (the "following" part of a social feed), and uniformly random videos (exploration). The platform
# being simulated already personalizes its feed, so global popularity drives only a tenth of exposure; with
# this mix an oracle ranking by true affinity recalls ~3.7x what popularity does on held-out days.
_SOURCE_MIX = (0.10, 0.50, 0.25, 0.15)
_HALF_AFFINITY = 4.0                # s = a / (a + 4): the saturating transform behind every probability
_VIEW_BASE, _VIEW_GAIN = 0.03, 0.6  # P(view | impression) = base + gain * s
_LIKE_GAIN = 0.25                   # P(like | view) = gain * s
_SHARE_GAIN = 0.025                 # P(share | view) = min(0.5, gain * s * sqrt(activity))
_CLICK_GAIN = 0.35                  # P(friend opens a share link) = gain * P(view)
_BUY_RATE = 0.001                   # k in P(purchase | view) = 1 - exp(-k * propensity)
_REFUND_RATE = 0.05                 # P(refund | purchase), 1-5 days later, 30% of them partial
_MAX_CASCADE = 3                    # share → friend views → reshare …, at most this deep
_HOURS = np.arange(24)
_DIURNAL = (1.2 + np.cos(2 * np.pi * (_HOURS - 20) / 24)) / (1.2 * 24)  # (24,) sessions peak at 20:00


def zipf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Zipf-like weights 1 / rank**exponent over a random permutation, summing to 1; (n,)."""
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(w / w.sum())


def make_products(rng: np.random.Generator, p: WorldParams, cat_w: np.ndarray) -> dict[str, np.ndarray]:
    """Products: heavy-tailed category, Zipf merchant, lognormal category-scaled price, commission, stock."""
    category = rng.choice(p.categories, size=p.products, p=cat_w)                     # (n_products,)
    merchant = rng.choice(p.merchants, size=p.products, p=zipf(rng, p.merchants, 0.8))
    median = np.exp(rng.normal(np.log(25.0), 0.7, size=p.categories))                # (n_categories,)
    price = np.maximum(np.round(median[category] * rng.lognormal(0.0, 0.6, p.products), 2), 0.99)
    commission = np.round(rng.uniform(0.03, 0.30, p.products), 3)
    in_stock = rng.random(p.products) < 0.95
    return {"category": category, "merchant": merchant, "price": price, "commission": commission,
            "in_stock": in_stock}


def make_users(rng: np.random.Generator, p: WorldParams, cat_w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Taste concentrated on 1-3 categories, heavy-tailed activity (mean 1) and price sensitivity."""
    alpha = np.maximum(2.0 * cat_w, 0.02)                                              # (n_categories,)
    taste = 0.97 * rng.dirichlet(alpha, size=p.users) + 0.03 / p.categories            # (n_users, n_categories)
    activity = rng.lognormal(0.0, 1.0, p.users)
    sensitivity = rng.lognormal(np.log(0.6), 0.5, p.users)
    return taste, activity / activity.mean(), sensitivity


def make_creators(rng: np.random.Generator, p: WorldParams, favourite: np.ndarray) -> dict[str, np.ndarray]:
    """Creators are users; niche = their favourite category; lognormal persuasiveness; Zipf popularity."""
    rows = np.sort(rng.choice(p.users, size=p.creators, replace=False))              # (n_creators,)
    return {"rows": rows, "niche": favourite[rows], "persuasiveness": rng.lognormal(0.0, 0.5, p.creators),
            "popularity": zipf(rng, p.creators, 1.1)}


def make_videos(rng: np.random.Generator, p: WorldParams, creators: dict[str, np.ndarray],
                products: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Videos in publication order: creator, product (mostly in the niche, 5% none), quality, timing."""
    post_w = np.sqrt(creators["popularity"])
    creator = rng.choice(p.creators, size=p.videos, p=post_w / post_w.sum())         # (n_videos,)
    product = _pick_products(rng, creators["niche"][creator], products["category"], p.categories)
    category = np.where(product >= 0, products["category"][np.maximum(product, 0)], creators["niche"][creator])
    n_before = max(1, round(0.25 * p.videos))                                         # published before day 0
    days = np.r_[rng.uniform(-max(3.0, 0.3 * p.days), 0.0, n_before), rng.uniform(0.0, p.days, p.videos - n_before)]
    published = p.start_ms + (days * DAY_MS).astype(np.int64)
    duration = np.clip(np.round(rng.lognormal(np.log(25_000), 0.5, p.videos)), 5_000, 180_000)
    order = np.argsort(published, kind="stable")
    cols = {"creator": creator, "product": product, "category": category, "published": published,
            "duration": duration, "quality": rng.lognormal(0.0, 0.5, p.videos)}
    return {k: v[order] for k, v in cols.items()}


def _pick_products(rng: np.random.Generator, niche: np.ndarray, product_cat: np.ndarray, n_cat: int) -> np.ndarray:
    """85% a product of the niche category (when one exists), else any; 5% none (-1); (len(niche),)."""
    order = np.argsort(product_cat, kind="stable")                                    # products by category
    lo = np.searchsorted(product_cat[order], np.arange(n_cat + 1))                   # (n_categories + 1,)
    count = (lo[1:] - lo[:-1])[niche]
    pos = lo[niche] + (rng.random(len(niche)) * count).astype(np.int64)
    in_niche = order[np.minimum(pos, len(order) - 1)]                                  # used only where count > 0
    any_product = rng.integers(0, len(product_cat), len(niche))
    product = np.where((rng.random(len(niche)) < 0.85) & (count > 0), in_niche, any_product)
    return np.where(rng.random(len(niche)) < 0.05, -1, product)


def _weighted_pick(rng: np.random.Generator, cum0: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Positions in [lo, hi) drawn proportionally to weights whose cumsum (leading 0) is cum0; (len(lo),)."""
    u = cum0[lo] + rng.random(len(lo)) * (cum0[hi] - cum0[lo])
    return np.clip(np.searchsorted(cum0, u, side="right") - 1, lo, hi - 1)


def _sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One column index per row drawn from that row's (unnormalised) probabilities; (n_rows,)."""
    cum = np.cumsum(probs, axis=1)                                                     # (n_rows, n_cols)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((cum < u).sum(axis=1), probs.shape[1] - 1)


def make_trust(rng: np.random.Generator, p: WorldParams, taste: np.ndarray,
               creators: dict[str, np.ndarray]) -> sp.csr_array:
    """A few trusted creators per user, mostly popular ones in the user's taste categories."""
    user = np.repeat(np.arange(p.users), 1 + rng.poisson(2.0, p.users))             # (n_slots,)
    order = np.argsort(creators["niche"], kind="stable")                             # creators by niche
    lo = np.searchsorted(creators["niche"][order], np.arange(p.categories + 1))
    cum0 = np.r_[0.0, np.cumsum(creators["popularity"][order])]
    cat = _sample_rows(rng, taste[user])
    by_taste = (rng.random(len(user)) < 0.7) & (lo[cat + 1] > lo[cat])
    start, stop = np.where(by_taste, lo[cat], 0), np.where(by_taste, lo[cat + 1], p.creators)
    creator = order[_weighted_pick(rng, cum0, start, stop)]
    keep = creators["rows"][creator] != user                                           # nobody trusts themselves
    value = rng.lognormal(0.0, 0.5, len(user))[keep]
    trust = sp.csr_array((value, (user[keep], creator[keep])), shape=(p.users, p.creators))
    trust.sum_duplicates()
    return trust


def make_friends(rng: np.random.Generator, p: WorldParams, favourite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Homophilous friend pairs (60% within the favourite category), both directions, sorted; (n_edges,) x2."""
    user = np.repeat(np.arange(p.users), rng.poisson(3.5, p.users))                 # (n_stubs,)
    order = np.argsort(favourite, kind="stable")
    lo = np.searchsorted(favourite[order], np.arange(p.categories + 1))
    same = order[lo[favourite[user]] + (rng.random(len(user)) * (lo[favourite[user] + 1] - lo[favourite[user]]))
                 .astype(np.int64)]
    friend = np.where(rng.random(len(user)) < 0.6, same, rng.integers(0, p.users, len(user)))
    a, b = np.minimum(user, friend), np.maximum(user, friend)
    pairs = np.unique((a * p.users + b)[a != b])                                       # undirected, deduplicated
    a, b = pairs // p.users, pairs % p.users
    both = np.unique(np.r_[a * p.users + b, b * p.users + a])                          # sorted by user
    return both // p.users, both % p.users


def make_follows(rng: np.random.Generator, p: WorldParams, trust: sp.csr_array,
                 creator_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Users follow ~60% of the creators they trust; 80% of follows predate day 0."""
    coo = trust.tocoo()
    keep = rng.random(coo.nnz) < 0.6
    n = int(keep.sum())
    days = np.where(rng.random(n) < 0.8, rng.uniform(-90.0, 0.0, n), rng.uniform(0.0, p.days, n))
    return {"user": coo.row[keep], "creator": creator_rows[coo.col[keep]],
            "ts": p.start_ms + (days * DAY_MS).astype(np.int64)}


class _Views(NamedTuple):
    """A batch of views: who watched what, when, for how long, and what brought them; each (n,)."""

    user: np.ndarray
    video: np.ndarray
    ts: np.ndarray
    watch: np.ndarray
    request: np.ndarray
    via: np.ndarray

    def take(self, mask: np.ndarray) -> _Views:
        """The sub-batch selected by a boolean mask or index array."""
        return _Views._make(a[mask] for a in self)


class Simulation:
    """Mutable state of one run: lookup arrays, id counters and the event chunks collected so far."""

    def __init__(self, rng: np.random.Generator, p: WorldParams, truth: Truth, videos: dict[str, np.ndarray],
                 price: np.ndarray, friend_a: np.ndarray, friend_b: np.ndarray) -> None:
        """Precompute the exposure weights, per-category video runs and the friend CSR."""
        self.rng, self.p, self.truth, self.videos, self.price = rng, p, truth, videos, price
        self.friend_ptr = np.searchsorted(friend_a, np.arange(p.users + 1))         # (n_users + 1,) CSR
        self.friend_idx = friend_b                                                    # (n_edges,)
        weight = truth.video_quality * truth.creator_popularity[truth.video_creator]  # (n_videos,) exposure
        self.pop_cum0 = np.r_[0.0, np.cumsum(weight)]
        self.cat_order = np.lexsort((videos["published"], truth.video_category))    # by category, then time
        self.cat_lo = np.searchsorted(truth.video_category[self.cat_order], np.arange(p.categories + 1))
        # within a category, exposure follows quality and only the square root of creator popularity
        taste_weight = truth.video_quality * np.sqrt(truth.creator_popularity[truth.video_creator])
        self.cat_cum0 = np.r_[0.0, np.cumsum(taste_weight[self.cat_order])]
        self.creator_order = np.lexsort((videos["published"], truth.video_creator))  # by creator, then time
        self.creator_lo = np.searchsorted(truth.video_creator[self.creator_order],
                                          np.arange(len(truth.creator_user_ids) + 1))  # (n_creators + 1,)
        self.chunks: list[tuple[int, dict[str, np.ndarray]]] = []
        self.n_events = self.n_shares = self.n_orders = self.n_requests = 0

    def emit(self, event: str, ts: np.ndarray, user: np.ndarray, video: np.ndarray, **cols: np.ndarray) -> None:
        """Record a batch of events of one type; omitted columns are missing."""
        self.chunks.append((EVENT_TYPES.index(event), {"ts": ts, "user": user, "video": video, **cols}))
        self.n_events += len(ts)

    def new_ids(self, counter: str, n: int) -> np.ndarray:
        """Reserve n consecutive integer ids from a counter ('n_shares', 'n_orders', 'n_requests'); (n,)."""
        first = getattr(self, counter)
        setattr(self, counter, first + n)
        return np.arange(first, first + n, dtype=np.int64)


def _s(aff: np.ndarray) -> np.ndarray:
    """Saturating transform of affinity into [0, 1): a / (a + 4)."""
    return aff / (aff + _HALF_AFFINITY)


def _p_view(aff: np.ndarray) -> np.ndarray:
    """P(view | impression) as a function of true affinity."""
    return _VIEW_BASE + _VIEW_GAIN * _s(aff)


def _watch_ms(sim: Simulation, aff: np.ndarray, video: np.ndarray) -> np.ndarray:
    """Watched milliseconds: duration x a watch ratio growing with affinity; (n,)."""
    ratio = np.clip((0.2 + 0.8 * _s(aff)) * sim.rng.lognormal(0.0, 0.3, len(aff)), 0.02, 1.0)
    return np.round(sim.videos["duration"][video] * ratio).astype(np.int64)


def simulate_day(sim: Simulation, day: int) -> None:
    """One day: feed sessions of impressions, their views and everything that follows from them."""
    day_start = sim.p.start_ms + day * DAY_MS
    n_published = int(np.searchsorted(sim.videos["published"], day_start))           # videos [0, k) are live
    if n_published == 0:
        return
    user, request, start = _sessions(sim, day_start)                                  # each (n_impressions,)
    video = _pick_videos(sim, user, day_start, n_published)
    aff = sim.truth.pair_affinity(user, video)
    viewed = sim.rng.random(len(user)) < _p_view(aff)
    watch = np.where(viewed, _watch_ms(sim, aff, video), 0)
    ts = _impression_times(sim.rng, request, start, viewed, watch)
    sim.emit("impression", ts, user, video, request=request)
    none = np.full(int(viewed.sum()), -1, dtype=np.int64)
    _after_views(sim, _Views(user[viewed], video[viewed], ts[viewed] + 250, watch[viewed], request[viewed], none), 0)


def _sessions(sim: Simulation, day_start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feed requests of the day, expanded to impressions: user, request id, session start; each (n,)."""
    lam = sim.p.impressions_per_user_day * sim.truth.user_activity / _SESSION_LEN    # (n_users,)
    user = np.repeat(np.arange(sim.p.users), sim.rng.poisson(lam))                   # (n_sessions,)
    hour = sim.rng.choice(24, size=len(user), p=_DIURNAL) + sim.rng.random(len(user))
    start = day_start + (hour * 3_600_000).astype(np.int64)
    length = 1 + sim.rng.poisson(_SESSION_LEN - 1, len(user))
    request = sim.new_ids("n_requests", len(user))
    return np.repeat(user, length), np.repeat(request, length), np.repeat(start, length)


def _pick_videos(sim: Simulation, user: np.ndarray, day_start: int, n_published: int) -> np.ndarray:
    """For each impression a published video: popular, taste-matched or uniformly random; (n,)."""
    n, rng = len(user), sim.rng
    source = rng.choice(len(_SOURCE_MIX), size=n, p=_SOURCE_MIX)
    video = _weighted_pick(rng, sim.pop_cum0, np.zeros(n, np.int64), np.full(n, n_published))
    taste = np.flatnonzero(source == 1)
    cat = _sample_rows(rng, sim.truth.taste[user[taste]])
    lo = sim.cat_lo[cat]
    live = _live_counts(sim.truth.video_category, sim.videos["published"], day_start, len(sim.cat_lo) - 1)[cat]
    ok = live > 0                                                                      # else keep the popular pick
    video[taste[ok]] = sim.cat_order[_weighted_pick(rng, sim.cat_cum0, lo[ok], lo[ok] + live[ok])]
    rand = np.flatnonzero(source == 3)
    video[rand] = rng.integers(0, n_published, len(rand))
    trusted = np.flatnonzero(source == 2)
    _pick_trusted(sim, user, video, trusted, day_start)
    return video


def _live_counts(group: np.ndarray, published: np.ndarray, day_start: int, n_groups: int) -> np.ndarray:
    """(n_groups,) videos of each group (category or creator) published before `day_start`."""
    return np.bincount(group[published < day_start], minlength=n_groups)


def _pick_trusted(sim: Simulation, user: np.ndarray, video: np.ndarray, rows: np.ndarray, day_start: int) -> None:
    """In place: for impressions `rows`, a live video of a creator the user trusts (else keep the pick)."""
    trust = sim.truth.trust
    count = np.diff(trust.indptr)[user[rows]]                                         # (len(rows),)
    rows = rows[count > 0]
    pick = trust.indptr[user[rows]] + (sim.rng.random(len(rows)) * count[count > 0]).astype(np.int64)
    creator = trust.indices[pick]                                                      # (len(rows),)
    live = _live_counts(sim.truth.video_creator, sim.videos["published"], day_start, len(sim.creator_lo) - 1)[creator]
    ok = live > 0                               # a creator's run is sorted by time: the first `live` are published
    offset = (sim.rng.random(int(ok.sum())) * live[ok]).astype(np.int64)
    video[rows[ok]] = sim.creator_order[sim.creator_lo[creator[ok]] + offset]


def _impression_times(rng: np.random.Generator, request: np.ndarray, start: np.ndarray, viewed: np.ndarray,
                      watch: np.ndarray) -> np.ndarray:
    """Impression timestamps: session start plus the dwell on the earlier impressions of the session; (n,)."""
    n = len(request)
    dwell = np.where(viewed, 250 + watch + rng.integers(300, 1500, n), rng.integers(800, 3000, n))
    before = np.cumsum(dwell) - dwell                                                 # exclusive, global
    first = np.r_[True, request[1:] != request[:-1]] if n else np.zeros(0, bool)
    return start + before - np.maximum.accumulate(np.where(first, before, 0))


def _after_views(sim: Simulation, views: _Views, depth: int) -> None:
    """Emit views and what follows them: likes, shares (and friends arriving), carts, purchases, refunds."""
    if len(views.user) == 0:
        return
    keep = {"request": views.request, "via_share": views.via}
    sim.emit("view", views.ts, views.user, views.video, watch=views.watch, **keep)
    aff = sim.truth.pair_affinity(views.user, views.video)
    done = views.ts + views.watch                                                     # (n,) end of watching
    like = sim.rng.random(len(aff)) < _LIKE_GAIN * _s(aff)
    sim.emit("like", views.ts[like] + (sim.rng.random(int(like.sum())) * views.watch[like]).astype(np.int64),
             views.user[like], views.video[like], **{k: v[like] for k, v in keep.items()})
    p_share = np.minimum(_SHARE_GAIN * _s(aff) * np.sqrt(sim.truth.user_activity[views.user]), 0.5)
    share = np.flatnonzero(sim.rng.random(len(aff)) < p_share)
    share_ts = done[share] + sim.rng.integers(1_000, 10_000, len(share))
    share_id = sim.new_ids("n_shares", len(share))
    sim.emit("share", share_ts, views.user[share], views.video[share], share=share_id,
             **{k: v[share] for k, v in keep.items()})
    _purchases(sim, views, done)
    if depth < _MAX_CASCADE and len(share):
        _after_views(sim, _arrivals(sim, views.user[share], views.video[share], share_ts, share_id), depth + 1)


def _arrivals(sim: Simulation, sharer: np.ndarray, video: np.ndarray, ts: np.ndarray, share: np.ndarray) -> _Views:
    """Friends of each sharer who open the link and view the video (no impression, via_share set)."""
    deg = sim.friend_ptr[sharer + 1] - sim.friend_ptr[sharer]                         # (n_shares,)
    pair = np.repeat(np.arange(len(sharer)), deg)                                     # (n_pairs,) share index
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(deg) - deg, deg)
    friend = sim.friend_idx[sim.friend_ptr[sharer][pair] + offset]
    vid = video[pair]
    aff = sim.truth.pair_affinity(friend, vid)
    click = sim.rng.random(len(pair)) < _CLICK_GAIN * _p_view(aff)
    pair, friend, vid, aff = pair[click], friend[click], vid[click], aff[click]
    delay = 1_000 + sim.rng.exponential(3 * 3_600_000, len(pair)).astype(np.int64)
    none = np.full(len(pair), -1, dtype=np.int64)
    return _Views(friend, vid, ts[pair] + delay, _watch_ms(sim, aff, vid), none, share[pair])


def _purchases(sim: Simulation, views: _Views, done: np.ndarray) -> None:
    """Carts, purchases (via carts) and refunds driven by the true purchase propensity."""
    x = _BUY_RATE * sim.truth.pair_propensity(views.user, views.video)               # (n_views,)
    cart = np.flatnonzero(sim.rng.random(len(x)) < -np.expm1(-3.0 * x))
    v, product = views.take(cart), sim.videos["product"][views.video[cart]]
    keep = {"request": v.request, "via_share": v.via}
    cart_ts = done[cart] + sim.rng.integers(1_000, 20_000, len(cart))
    sim.emit("cart", cart_ts, v.user, v.video, product=product, **keep)
    buy = sim.rng.random(len(cart)) < np.expm1(-x[cart]) / np.expm1(-3.0 * x[cart])
    ts = cart_ts[buy] + sim.rng.integers(20_000, 600_000, int(buy.sum()))
    order, amount = sim.new_ids("n_orders", int(buy.sum())), sim.price[product[buy]]
    sim.emit("purchase", ts, v.user[buy], v.video[buy], order=order, amount=amount, product=product[buy],
             **{k: c[buy] for k, c in keep.items()})
    back = sim.rng.random(len(order)) < _REFUND_RATE
    partial = sim.rng.random(int(back.sum())) < 0.3
    refund = np.where(partial, np.maximum(np.round(amount[back] * sim.rng.uniform(0.2, 0.8, len(partial)), 2), 0.01),
                      amount[back])
    later = sim.rng.integers(DAY_MS, 5 * DAY_MS, len(partial))
    sim.emit("refund", ts[back] + later, v.user[buy][back], v.video[buy][back], order=order[back],
             amount=refund, product=product[buy][back])


_EVENT_COLS = {  # internal column: (dtype, missing value)
    "ts": (np.int64, 0), "user": (np.int64, -1), "video": (np.int64, -1), "watch": (np.float64, np.nan),
    "share": (np.int64, -1), "via_share": (np.int64, -1), "request": (np.int64, -1), "order": (np.int64, -1),
    "amount": (np.float64, np.nan), "product": (np.int64, -1),
}


def gather_events(sim: Simulation) -> dict[str, np.ndarray]:
    """Concatenate the event chunks into whole columns, drop events past the last day, sort by time."""
    cols = {name: np.concatenate([np.asarray(c.get(name, np.full(len(c["ts"]), miss)), dtype=dt)
                                  for _, c in sim.chunks] or [np.zeros(0, dt)])
            for name, (dt, miss) in _EVENT_COLS.items()}
    cols["event"] = np.concatenate([np.full(len(c["ts"]), code, np.int8) for code, c in sim.chunks]
                                   or [np.zeros(0, np.int8)])
    sim.chunks = []
    inside = cols["ts"] < sim.p.start_ms + sim.p.days * DAY_MS                       # the log ends with the window
    order = np.flatnonzero(inside)[np.lexsort((cols["event"][inside], cols["ts"][inside]))]
    return {name: col[order] for name, col in cols.items()}
