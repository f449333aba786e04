"""Offline evaluation of the whole feed: replay the first page for every held-out user at the cut-off.

Everything (ALS, stats, the ranker) is fitted on the events before a time cut-off; then each user who bought,
shared or watched something after it gets the page the service would have served at the cut-off, built three
ways in the same run with the same filters:

- `ranker`: the full pipeline (candidates → ranker → value formula → caps, MMR, exploration slots);
- `retrieval`: the same pipeline ranked by the fused retrieval score instead of the ranker;
- `popularity`: the most viewed videos the user has not seen (no personalization, no diversity rules).

Metrics at K (the page size): purchase-recall (held-out purchased videos on the page / purchased videos),
product purchase-recall (a video of the purchased product is on the page), GMV@K (purchase amounts captured per
purchaser) and its share of their held-out GMV, share-recall, engaged-recall (any view, like, share, cart or
purchase), creator coverage (distinct creators on all pages / creators in the catalog), and intra-list
diversity (mean pairwise 1 − cosine of the page's video vectors) with distinct categories per page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from rich.progress import track

from feed.candidates import CandidateConfig
from feed.dataset import Catalog, IdMap, build_catalog, time_split
from feed.rerank import PageConfig
from feed.schema import Dataset
from feed.service import FeedConfig, FeedService, UserSignals
from feed.stats import epoch_ms
from training.config import TrainConfig
from training.pipeline import fit_bundle
from training.ranker import follows_before

ENGAGED = ("view", "like", "share", "cart", "purchase")
MODES = ("ranker", "retrieval", "popularity")


@dataclass
class FeedEvalReport:
    """What `feed evaluate --feed` prints and writes."""

    split: str
    k: int
    n_users: int
    modes: dict[str, dict[str, float]]
    ranker: dict[str, float] = field(default_factory=dict)
    ranking_used: dict[str, str] = field(default_factory=dict)  # mode -> what ranked (no ranker: retrieval)

    def as_json(self) -> dict[str, Any]:
        """The --json document."""
        return {"split": self.split, "k": self.k, "n_users": self.n_users, "modes": self.modes,
                "ranker": self.ranker, "ranking_used": self.ranking_used}


@dataclass
class Targets:
    """Held-out outcomes per evaluated user: (n_users, n_videos) sparse matrices."""

    users: IdMap
    purchased: sp.csr_matrix  # 1 where bought through that video
    gmv: sp.csr_matrix  # purchase amounts summed
    bought_products: sp.csr_matrix  # (n_users, n_products) 1 where bought
    shared: sp.csr_matrix
    engaged: sp.csr_matrix


def feed_config(mode: str) -> FeedConfig:
    """The pipeline each compared mode runs."""
    if mode == "popularity":
        no_caps = PageConfig(max_per_creator=10**6, max_per_product=10**6, max_per_merchant=10**6, mmr_lambda=1.0,
                             fresh_slot=False, new_creator_slot=False)
        return FeedConfig(candidates=CandidateConfig(quotas={"popular": 200}), page=no_caps, ranking="popular")
    return FeedConfig(ranking="ranker" if mode == "ranker" else "retrieval")


def held_out_targets(test: pd.DataFrame, catalog: Catalog, max_users: int | None, seed: int) -> Targets:
    """Outcomes of users with engaged events after the cut-off (a seeded sample of them when capped)."""
    engaged = test[test["event"].isin(ENGAGED).to_numpy()]
    users = np.sort(engaged["user_id"].astype(str).unique())
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    ids = IdMap(users.astype(object))
    rows = ids.rows(test["user_id"].to_numpy(dtype=object))
    videos = catalog.videos.rows(test["video_id"].to_numpy(dtype=object))
    kind = test["event"].to_numpy(dtype=object)
    shape = (len(ids), len(catalog.videos))
    amount = np.nan_to_num(test["amount"].to_numpy(dtype=np.float64, na_value=np.nan))
    product = np.where(videos >= 0, catalog.video_product[np.maximum(videos, 0)], -1)
    return Targets(ids, _matrix(rows, videos, kind == "purchase", shape), _matrix(rows, videos, kind == "purchase",
                   shape, amount), _matrix(rows, product, kind == "purchase", (len(ids), len(catalog.products))),
                   _matrix(rows, videos, kind == "share", shape), _matrix(rows, videos, np.isin(kind, ENGAGED), shape))


def _matrix(rows: np.ndarray, cols: np.ndarray, mask: np.ndarray, shape: tuple[int, int],
            values: np.ndarray | None = None) -> sp.csr_matrix:
    """Summed values (1 without) of the masked events whose row and column are known."""
    keep = mask & (rows >= 0) & (cols >= 0)
    data = values[keep] if values is not None else np.ones(int(keep.sum()))
    matrix = sp.csr_matrix((data, (rows[keep], cols[keep])), shape=shape)
    if values is None:
        matrix.data[:] = 1.0
    return matrix


def follows_at(follows: pd.DataFrame | None, cutoff: pd.Timestamp) -> dict[str, list[str]]:
    """Who follows whom at the cut-off (follows without a time count as known)."""
    known = follows_before(follows, cutoff)
    if known is None or known.empty:
        return {}
    return known.groupby("user_id")["creator_id"].agg(list).to_dict()


def replay(service: FeedService, users: IdMap, k: int, seed: int, now_ms: float, progress: bool,
           label: str) -> list[np.ndarray]:
    """The first page of every user, as video rows."""
    rows = service.catalog.videos
    pages = []
    for user in track(users.ids, description=f"replaying {label}", disable=not progress, transient=True):
        feed = service.feed(str(user), k, seed=seed, now_ms=now_ms)
        pages.append(rows.rows([item.video_id for item in feed.items]))
    return pages


def page_metrics(pages: list[np.ndarray], targets: Targets, service: FeedService, k: int) -> dict[str, float]:
    """Every metric of one mode (see the module docstring)."""
    cat = service.catalog
    per_user = [_user_hits(page, u, targets, cat) for u, page in enumerate(pages)]
    hits = np.array(per_user)  # (n_users, 5): purchased, products, gmv, shared, engaged hits
    totals = np.stack([_row_sums(targets.purchased), _row_sums(targets.bought_products), _row_sums(targets.gmv),
                       _row_sums(targets.shared), _row_sums(targets.engaged)], axis=1)
    out = {name: _mean_ratio(hits[:, j], totals[:, j]) for j, name in enumerate(
        (f"purchase_recall@{k}", f"product_purchase_recall@{k}", None, f"share_recall@{k}",
         f"engaged_recall@{k}")) if name}
    buyers = totals[:, 2] > 0
    out[f"gmv@{k}"] = float(hits[buyers, 2].mean()) if buyers.any() else float("nan")
    out[f"gmv_share@{k}"] = float(hits[buyers, 2].sum() / totals[buyers, 2].sum()) if buyers.any() else float("nan")
    shown = np.concatenate(pages) if pages else np.zeros(0, dtype=np.int64)
    creators = cat.video_creator[shown]
    out["creator_coverage"] = float(len(np.unique(creators[creators >= 0])) / max(len(cat.creators), 1))
    out["intra_list_diversity"] = float(np.mean([_diversity(p, service) for p in pages])) if pages else 0.0
    out["categories_per_page"] = float(np.mean([len(np.unique(_categories(p, cat))) for p in pages])) if pages \
        else 0.0
    out["n_purchasers"], out["n_sharers"] = float(buyers.sum()), float((totals[:, 3] > 0).sum())
    return out


def _user_hits(page: np.ndarray, user: int, targets: Targets, cat: Catalog) -> list[float]:
    """Purchased, product, GMV, shared and engaged hits of one user's page."""
    products = cat.video_product[page]
    return [float(targets.purchased[user, page].sum()),
            float(targets.bought_products[user, np.unique(products[products >= 0])].sum()),
            float(targets.gmv[user, page].sum()), float(targets.shared[user, page].sum()),
            float(targets.engaged[user, page].sum())]


def _row_sums(matrix: sp.csr_matrix) -> np.ndarray:
    """(n_rows,) row sums."""
    return np.asarray(matrix.sum(axis=1)).ravel()


def _mean_ratio(hits: np.ndarray, totals: np.ndarray) -> float:
    """Mean of hits / total over rows with a positive total (NaN when there are none)."""
    some = totals > 0
    return float(np.mean(hits[some] / totals[some])) if some.any() else float("nan")


def _diversity(page: np.ndarray, service: FeedService) -> float:
    """Mean pairwise 1 − cosine of the page's videos that have vectors."""
    unit = service.tables.unit_video
    vectors = unit[page[page < len(unit)]]
    if len(vectors) < 2:
        return 0.0
    sims = vectors @ vectors.T
    n = len(vectors)
    return float((n * n - sims.sum()) / (n * (n - 1)))  # the diagonal contributes 1 − 1 = 0


def _categories(page: np.ndarray, cat: Catalog) -> np.ndarray:
    """Known categories of a page's videos."""
    categories = cat.video_category(page)
    return categories[categories >= 0]


def run_feed_evaluation(dataset: Dataset, config: TrainConfig, k: int = 20, max_users: int | None = None,
                        progress: bool = False) -> FeedEvalReport:
    """Fit on the events before the cut-off and replay every mode on the same held-out users."""
    catalog = build_catalog(dataset)
    split = time_split(dataset.events, config.split.test_fraction)
    bundle, ranker_metrics = fit_bundle(split.train, catalog, config, progress,
                                        follows_before(dataset.follows, split.cutoff))
    bundle.manifest["value_formula"] = config.ranker.value.model_dump(mode="json")
    targets = held_out_targets(split.test, catalog, max_users, config.seed)
    follows = follows_at(dataset.follows, split.cutoff)
    now_ms = float(epoch_ms(pd.Series([split.cutoff]))[0])
    services = {mode: FeedService(bundle, feed_config(mode), signals=UserSignals(
        follows=lambda user: follows.get(user, []))) for mode in MODES}
    modes = {mode: page_metrics(replay(service, targets.users, k, config.seed, now_ms, progress, mode), targets,
                                service, k) for mode, service in services.items()}
    description = f"time split at {split.cutoff.isoformat()} (last {config.split.test_fraction:.0%} of the span)"
    return FeedEvalReport(description, k, len(targets.users), modes, ranker_metrics,
                          {mode: service.ranking for mode, service in services.items()})


def print_feed_report(report: FeedEvalReport, console: Any = None) -> None:
    """The modes side by side, then the ranker's held-out classification metrics."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    used = ", ".join(f"{mode}: {how}" for mode, how in report.ranking_used.items())
    table = Table(title=f"whole-feed replay, first page of {report.n_users:,} users ({report.split})",
                  caption=f"what ranked each page — {used}")
    table.add_column("metric")
    for mode in report.modes:
        table.add_column(mode, justify="right")
    for metric in next(iter(report.modes.values())):
        table.add_row(metric, *[f"{report.modes[mode][metric]:.4f}" for mode in report.modes])
    console.print(table)
    if report.ranker:
        ranker = Table(title="ranker on its held-out impressions (latest examples of the training window)")
        for column in ("action", "AUC", "log-loss", "base-rate log-loss", "positives"):
            ranker.add_column(column, justify="right")
        for head in ("watch", "share", "purchase"):
            m = report.ranker
            ranker.add_row(head, f"{m[f'ranker.{head}.auc']:.4f}", f"{m[f'ranker.{head}.logloss']:.4f}",
                           f"{m[f'ranker.{head}.logloss_base_rate']:.4f}", f"{m[f'ranker.{head}.positives']:.0f}")
        console.print(ranker)
