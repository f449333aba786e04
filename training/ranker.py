"""Train the ranker from logged impressions: examples, features, a small multi-task network, calibration.

Leakage is the trap here: the retrieval vectors and counts of the served model have seen every impression's outcome.
So the window is cut in two. Models fitted on the earlier part (`label_fraction` before the end) give the
features; the impressions of the later part, labelled by what the user did next, are the examples. An impression
without a later view, share or purchase of that video by that user is a negative.

The latest `validation_fraction` of the examples (by time) is held out: its first half picks the epoch (early
stopping) and fits the Platt calibration, its second half gives the reported AUC and log-loss per action.
Data without impressions (most public datasets) gets pseudo-impressions: each engaged (user, video) pair plus
`pseudo_negatives` videos drawn by popularity that the user did not touch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.progress import Progress
from scipy.stats import rankdata

from feed.dataset import Catalog, IdMap, build_interactions, watch_ratio
from feed.features import FEATURES, FeatureTables, PairContext
from feed.ranker import CLIP, HEADS, Ranker
from feed.stats import Stats, StatsConfig, compute_stats, epoch_ms
from training.config import TrainConfig
from training.retriever import Plan, fit_retrieval

CHUNK = 50_000  # pairs per feature batch: bounds the (chunk, recent, dim) gather


@dataclass
class Examples:
    """Ranker examples in time order."""

    x: np.ndarray  # (n, len(FEATURES)) float32
    y: np.ndarray  # (n, len(HEADS)) float32 labels
    ts: np.ndarray  # (n,) epoch ms of the impression

    def take(self, rows: slice | np.ndarray) -> Examples:
        """A subset of the examples."""
        return Examples(self.x[rows], self.y[rows], self.ts[rows])


@dataclass
class FeatureModel:
    """What the features of one period are computed from: vectors and stats of the events before it."""

    users: IdMap
    user_factors: dict[str, np.ndarray]  # relation -> (n_users, dim)
    tables: FeatureTables


def stats_config(config: TrainConfig) -> StatsConfig:
    """Stats settings from the training config."""
    f = config.features
    return StatsConfig(f.half_life_days, f.segments, f.recent, config.full_watch_ratio, config.seed)


def fit_feature_model(events: pd.DataFrame, catalog: Catalog, config: TrainConfig, progress: bool,
                      plan: Plan | None = None) -> FeatureModel:
    """The served retriever's vectors (per `plan`) and stats of `events`, as the ranker's features see them."""
    data = build_interactions(events, catalog, config.weights, config.full_watch_ratio)
    models = fit_retrieval(data, config, progress, plan).relations
    video_users = models["video"].user_factors if "video" in models else None
    stats = compute_stats(events, catalog, data.users, video_users, stats_config(config))
    tables = FeatureTables({r: m.item_factors for r, m in models.items()}, catalog, stats,
                           config.features.prior_strength)
    return FeatureModel(data.users, {r: m.user_factors for r, m in models.items()}, tables)


def ranker_examples(events: pd.DataFrame, catalog: Catalog, follows: pd.DataFrame | None, config: TrainConfig,
                    progress: bool, plan: Plan | None = None) -> Examples | None:
    """Labelled examples from the last `label_fraction` of the window; None when there are too few events."""
    ts = epoch_ms(events["ts"])
    if len(ts) == 0:
        return None
    cut = ts.min() + (1.0 - config.ranker.label_fraction) * (ts.max() - ts.min())
    early, late = events[ts < cut], events[ts >= cut]
    if early.empty or late.empty:
        return None
    model = fit_feature_model(early, catalog, config, progress, plan)
    follows = follows_before(follows, pd.Timestamp(cut, unit="ms", tz="UTC"))
    pairs = _impressions(late, catalog) if (late["event"] == "impression").any() else _pseudo_impressions(
        late, catalog, model.tables, config)
    pairs = pairs.iloc[-config.ranker.max_examples:]
    labels = _labels(pairs, late, catalog, config.full_watch_ratio)
    x = pair_features(model, catalog, follows, pairs)
    return Examples(x, labels, pairs["ts_ms"].to_numpy(dtype=np.float64))


def follows_before(follows: pd.DataFrame | None, cut: pd.Timestamp) -> pd.DataFrame | None:
    """Follows made before a time (those without a time count as known): a later follow must not leak."""
    if follows is None or follows.empty or "ts" not in follows:
        return follows
    return follows[follows["ts"].isna().to_numpy() | (follows["ts"] < cut).to_numpy()]


def _impressions(late: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """The first impression of each (user, video) pair, in time order: user_id, video (row), ts_ms."""
    shown = late[late["event"] == "impression"]
    frame = pd.DataFrame({"user_id": shown["user_id"].to_numpy(dtype=object),
                          "video": catalog.videos.rows(shown["video_id"].to_numpy(dtype=object)),
                          "ts_ms": epoch_ms(shown["ts"])})
    frame = frame[frame["video"] >= 0].sort_values("ts_ms", kind="stable")
    return frame.drop_duplicates(["user_id", "video"]).reset_index(drop=True)


def _pseudo_impressions(late: pd.DataFrame, catalog: Catalog, tables: FeatureTables,
                        config: TrainConfig) -> pd.DataFrame:
    """Without logged impressions: engaged pairs plus popularity-drawn negatives at the same times."""
    engaged = late[late["event"].isin(["view", "like", "share", "cart", "purchase"])]
    positives = _impressions(engaged.assign(event="impression"), catalog)
    rng = np.random.default_rng(config.seed)
    weights = tables.stats.video_counts["views"] + 1.0  # (n_videos,)
    k = config.ranker.pseudo_negatives
    negatives = pd.DataFrame({
        "user_id": np.repeat(positives["user_id"].to_numpy(dtype=object), k),
        "video": rng.choice(len(weights), size=k * len(positives), p=weights / weights.sum()),
        "ts_ms": np.repeat(positives["ts_ms"].to_numpy(), k)})
    both = pd.concat([positives, negatives], ignore_index=True).sort_values("ts_ms", kind="stable")
    return both.drop_duplicates(["user_id", "video"]).reset_index(drop=True)


def _labels(pairs: pd.DataFrame, late: pd.DataFrame, catalog: Catalog, full_watch_ratio: float) -> np.ndarray:
    """(n, 3) watch-through, share and purchase of each pair's video by its user in the period."""
    kind = late["event"].to_numpy(dtype=object)
    ratio = watch_ratio(late, catalog)
    done = {"watch": (kind == "view") & (np.isnan(ratio) | (ratio >= full_watch_ratio)),
            "share": kind == "share", "purchase": kind == "purchase"}
    users = IdMap.from_values(pd.concat([pairs["user_id"], late["user_id"]]))
    n_videos = len(catalog.videos)
    pair_key = users.rows(pairs["user_id"].to_numpy(dtype=object)) * n_videos + pairs["video"].to_numpy()
    event_key = (users.rows(late["user_id"].to_numpy(dtype=object)) * n_videos
                 + catalog.videos.rows(late["video_id"].to_numpy(dtype=object)))
    event_ts, pair_ts = epoch_ms(late["ts"]), pairs["ts_ms"].to_numpy(dtype=np.float64)
    return np.stack([_after(pair_key, pair_ts, event_key[done[h]], event_ts[done[h]]) for h in HEADS],
                    axis=1).astype(np.float32)


def _after(pair_key: np.ndarray, pair_ts: np.ndarray, event_key: np.ndarray, event_ts: np.ndarray) -> np.ndarray:
    """(n_pairs,) True where an event of the pair's key happened at or after the pair's time."""
    if len(event_key) == 0:
        return np.zeros(len(pair_key), dtype=bool)
    keys, inverse = np.unique(event_key, return_inverse=True)
    latest = np.full(len(keys), -np.inf)
    np.maximum.at(latest, inverse, event_ts)  # (n_keys,) each key's last event time
    at = np.minimum(np.searchsorted(keys, pair_key), len(keys) - 1)
    return (keys[at] == pair_key) & (latest[at] >= pair_ts)


def pair_features(model: FeatureModel, catalog: Catalog, follows: pd.DataFrame | None,
                  pairs: pd.DataFrame) -> np.ndarray:
    """(n, len(FEATURES)) features of (user_id, video, ts_ms) pairs, computed in chunks."""
    rows = model.users.rows(pairs["user_id"].to_numpy(dtype=object))
    followed = _follow_keys(follows, model.users, catalog)
    recent = _recent_table(model.tables.stats)
    totals = np.asarray(model.tables.stats.user_category.sum(axis=1)).ravel()  # (n_users,)
    out = np.empty((len(pairs), len(FEATURES)), dtype=np.float32)
    videos, now = pairs["video"].to_numpy(dtype=np.int64), pairs["ts_ms"].to_numpy(dtype=np.float64)
    for lo in range(0, len(pairs), CHUNK):
        part = slice(lo, lo + CHUNK)
        context = _context(model, catalog, rows[part], videos[part], followed, recent, totals)
        out[part] = model.tables.features(videos[part], context, now[part])
    return out


def _context(model: FeatureModel, catalog: Catalog, rows: np.ndarray, videos: np.ndarray, followed: np.ndarray,
             recent: np.ndarray, totals: np.ndarray) -> PairContext:
    """Per-pair context of a chunk; users unknown to the feature model (row -1) get zeros."""
    known = rows >= 0
    safe = np.where(known, rows, 0)
    tables, stats = model.tables, model.tables.stats
    affinity = {r: tables.affinity(r, f[safe] * known[:, None], videos) for r, f in model.user_factors.items()}
    creator = catalog.video_creator[videos]
    follow_key = safe * max(len(catalog.creators), 1) + creator
    segment = np.where(known, stats.user_segment[safe], -1) if len(stats.user_segment) else np.full(len(rows), -1)
    category = tables.category[videos]
    in_category = np.asarray(stats.user_category[safe, np.maximum(category, 0)]).ravel() if len(
        catalog.categories) else np.zeros(len(rows))
    share = np.where(known & (category >= 0) & (totals[safe] > 0), in_category / np.maximum(totals[safe], 1), 0.0)
    return PairContext(
        affinity=affinity, follows=(known & (creator >= 0) & np.isin(follow_key, followed)).astype(np.float32),
        session_sim=tables.pair_session_similarity(np.where(known[:, None], recent[safe], -1), videos),
        segment=segment, category_share=share.astype(np.float32),
        activity=np.where(known, totals[safe], 0.0).astype(np.float32))


def _follow_keys(follows: pd.DataFrame | None, users: IdMap, catalog: Catalog) -> np.ndarray:
    """user row × n_creators + creator row of every follow both sides of which are known."""
    if follows is None or follows.empty:
        return np.zeros(0, dtype=np.int64)
    user = users.rows(follows["user_id"].to_numpy(dtype=object))
    creator = catalog.creators.rows(follows["creator_id"].to_numpy(dtype=object))
    keep = (user >= 0) & (creator >= 0)
    return user[keep] * max(len(catalog.creators), 1) + creator[keep]


def _recent_table(stats: Stats) -> np.ndarray:
    """(n_users, k) each user's latest video rows, newest first, padded with -1."""
    recent = stats.recent.tocoo()
    k = int(recent.data.max()) if recent.nnz else 1
    table = np.full((recent.shape[0], k), -1, dtype=np.int64)
    table[recent.row, recent.data.astype(np.int64) - 1] = recent.col
    return table


def split_examples(examples: Examples, fraction: float) -> tuple[Examples, Examples, Examples]:
    """(train, calibration, test) in time order: the latest `fraction` is split in half."""
    n = len(examples.ts)
    n_held = max(2, round(n * fraction))
    start_cal, start_test = n - n_held, n - n_held // 2
    return examples.take(slice(0, start_cal)), examples.take(slice(start_cal, start_test)), examples.take(
        slice(start_test, n))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties averaged); NaN when one class is missing."""
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) minimizing the log-loss of sigmoid(a·logit + b), by Newton's method with a small ridge."""
    a, b = 1.0, 0.0
    x = np.stack([logits, np.ones_like(logits)], axis=1).astype(np.float64)  # (n, 2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ np.array([a, b]), -30, 30)))
        grad = x.T @ (p - labels) + 1e-6 * np.array([a - 1.0, b])
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def fit_network(train: Examples, calibration: Examples, config: TrainConfig,
                progress: bool) -> tuple[Ranker, int]:
    """The multi-task network, early-stopped on the calibration examples; returns it and the best epoch."""
    import torch

    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    mean, std = train.x.mean(axis=0), train.x.std(axis=0)
    scale = np.where(std < 1e-3, 1.0, std).astype(np.float32)  # a feature constant in training is not blown up
    net = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), config.ranker.hidden), torch.nn.ReLU(),
                              torch.nn.Linear(config.ranker.hidden, len(HEADS)))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.ranker.learning_rate)
    x = torch.from_numpy(np.clip((train.x - mean) / scale, -CLIP, CLIP).astype(np.float32))
    y = torch.from_numpy(train.y)
    x_cal = torch.from_numpy(np.clip((calibration.x - mean) / scale, -CLIP, CLIP).astype(np.float32))
    y_cal = torch.from_numpy(calibration.y)
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best, best_epoch, best_state, waited = float("inf"), 0, None, 0
    with Progress(disable=not progress, transient=True) as bars:
        task = bars.add_task("ranker epochs", total=config.ranker.epochs)
        for epoch in range(1, config.ranker.epochs + 1):
            _epoch(net, optimizer, loss_fn, x, y, config.ranker.batch_size, generator)
            with torch.no_grad():
                loss = float(loss_fn(net(x_cal), y_cal))
            bars.update(task, advance=1, description=f"ranker epoch {epoch} validation loss {loss:.4f}")
            if loss < best - 1e-5:
                best, best_epoch, waited = loss, epoch, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= config.ranker.patience:
                    break
    net.load_state_dict(best_state)
    return _to_ranker(net, mean, scale), best_epoch


def _epoch(net: object, optimizer: object, loss_fn: object, x: object, y: object, batch: int,
           generator: object) -> None:
    """One pass over shuffled mini-batches."""
    import torch

    order = torch.randperm(len(x), generator=generator)
    net.train()
    for lo in range(0, len(x), batch):
        rows = order[lo:lo + batch]
        optimizer.zero_grad()
        loss_fn(net(x[rows]), y[rows]).backward()
        optimizer.step()
    net.eval()


def _to_ranker(net: object, mean: np.ndarray, scale: np.ndarray) -> Ranker:
    """The torch network's weights as the numpy Ranker serving runs."""
    first, last = net[0], net[2]
    as_np = (lambda t: t.detach().numpy().astype(np.float32))
    return Ranker(FEATURES, mean.astype(np.float32), scale.astype(np.float32), as_np(first.weight).T.copy(),
                  as_np(first.bias), as_np(last.weight).T.copy(), as_np(last.bias))


def calibrate(ranker: Ranker, calibration: Examples) -> None:
    """Fit Platt scaling per head in place."""
    logits = ranker.logits(calibration.x)
    fitted = [platt(logits[:, j].astype(np.float64), calibration.y[:, j].astype(np.float64))
              for j in range(len(HEADS))]
    ranker.calib_a = np.array([a for a, _ in fitted], dtype=np.float32)
    ranker.calib_b = np.array([b for _, b in fitted], dtype=np.float32)


def ranker_metrics(ranker: Ranker, test: Examples, base_rates: np.ndarray) -> dict[str, float]:
    """AUC, log-loss, the log-loss of always predicting the training rate, and positives per action."""
    probs = ranker.predict(test.x)
    metrics: dict[str, float] = {"ranker.n_test": float(len(test.ts))}
    for j, head in enumerate(HEADS):
        labels = test.y[:, j]
        metrics[f"ranker.{head}.auc"] = auc(probs[:, j], labels)
        metrics[f"ranker.{head}.logloss"] = log_loss(probs[:, j], labels)
        metrics[f"ranker.{head}.logloss_base_rate"] = log_loss(np.full(len(labels), base_rates[j]), labels)
        metrics[f"ranker.{head}.positives"] = float(labels.sum())
        metrics[f"ranker.{head}.mean_predicted"] = float(probs[:, j].mean())
    return metrics


def train_ranker(events: pd.DataFrame, catalog: Catalog, follows: pd.DataFrame | None, config: TrainConfig,
                 progress: bool, plan: Plan | None = None) -> tuple[Ranker | None, dict[str, float]]:
    """The calibrated ranker and its held-out metrics; (None, {}) when the data gives too few examples.
    An action the data never shows (no shares in a ratings log) gets a head that predicts ~0 for it.
    `plan` is the served retriever (its vectors give the affinity features); None: chosen on validation."""
    examples = ranker_examples(events, catalog, follows, config, progress, plan)
    if examples is None or len(examples.ts) < 100 or examples.y.sum() < 1:
        return None, {}
    train, calibration, test = split_examples(examples, config.ranker.validation_fraction)
    ranker, best_epoch = fit_network(train, calibration, config, progress)
    calibrate(ranker, calibration)
    metrics = ranker_metrics(ranker, test, train.y.mean(axis=0))
    return ranker, {**metrics, "ranker.n_train": float(len(train.ts)), "ranker.best_epoch": float(best_epoch)}
