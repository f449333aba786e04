"""Realistic ALS user and video factors at catalog scale (1M users × 1M videos), generated once and cached.

A synthetic world (`feed.world.generate_world`) of a few days is simulated, the user×video matrix is built with
the project's event weights (`feed.dataset.build_interactions`, as `training.pipeline.fit_bundle` does) and ALS
is fitted with the project's default hyperparameters (`training.config.ALSConfig`: 32 factors). The result is
cached under `data/generated/scale/<size>/` (gitignored): factors and catalog arrays as .npy, the world itself
saved with `feed.world.save_world` (for benchmarks that need the tables), and manifest.json.

Size: events ~= 1.35 * users * days * impressions_per_user_day. The default (1M users, 1M videos, 7 days) has
39M events, of which 11M are weighted (impressions weigh 0): 9.0M user×video pairs, 807k users and 714k videos
with at least one (videos never viewed keep all-zero factors, as in a real catalog's cold tail; with 3 days it
would be half the catalog). It takes ~7 minutes on 2 cores (world 100 s, save 40 s, matrix 115 s, ALS 180 s)
and ~10 GB peak memory; later calls load the cache in a second.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/scale_model.py [--users 1000000] [--videos 1000000] [--days 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402

from feed.dataset import Catalog, build_catalog, build_interactions  # noqa: E402
from feed.io import find_table, read_table  # noqa: E402
from feed.models.als import ALSRecommender  # noqa: E402
from feed.schema import Dataset  # noqa: E402
from feed.world import WorldParams, generate_world, save_world  # noqa: E402
from training.config import TrainConfig  # noqa: E402

CACHE = Path("data/generated/scale")
# The default world's proportions (5000 users: 300 creators, 1500 products, 4000 videos, 80 merchants),
# scaled with the number of videos.
CREATORS_PER_VIDEO, PRODUCTS_PER_VIDEO, MERCHANTS_PER_VIDEO = 300 / 4000, 1500 / 4000, 80 / 4000
ARRAYS = ("user_factors", "item_factors", "user_ids", "user_interactions", "video_creator", "video_product")


@dataclass
class ScaleModel:
    """ALS factors of a large synthetic world, aligned with its catalog; rows are catalog/user rows."""

    user_factors: np.ndarray       # (n_users, factors) float32, users with at least one event
    item_factors: np.ndarray       # (n_videos, factors) float32, catalog video rows
    user_ids: np.ndarray           # (n_users,) str
    user_interactions: np.ndarray  # (n_users,) int32: videos with a positive weight (0: impressions only)
    video_creator: np.ndarray      # (n_videos,) int64 row in catalog.creators
    video_product: np.ndarray      # (n_videos,) int64 row in catalog.products, -1 without one
    folder: Path                   # the cache folder; the world tables are in folder / "world"
    manifest: dict

    @property
    def world_dir(self) -> Path:
        """Folder written by `feed.world.save_world` (events, videos, products, follows, friends, truth)."""
        return self.folder / "world"

    def active_users(self) -> np.ndarray:
        """Rows of users with at least one positively weighted video; (n_active,)."""
        return np.flatnonzero(self.user_interactions > 0)

    def catalog(self) -> Catalog:
        """The world's catalog (videos, creators, products) without reading the events."""
        return load_catalog(self.world_dir)


def scale_params(users: int = 1_000_000, videos: int = 1_000_000, days: int = 7,
                 impressions_per_user_day: float = 4.0, seed: int = 0) -> WorldParams:
    """World parameters with creators, products and merchants in the default world's proportions."""
    return WorldParams(users=users, videos=videos, days=days, seed=seed,
                       creators=min(users, max(1, round(videos * CREATORS_PER_VIDEO))),
                       products=max(1, round(videos * PRODUCTS_PER_VIDEO)),
                       merchants=max(1, round(videos * MERCHANTS_PER_VIDEO)),
                       impressions_per_user_day=impressions_per_user_day)


def scale_factors(users: int = 1_000_000, videos: int = 1_000_000, cache: Path = CACHE, days: int = 7,
                  impressions_per_user_day: float = 4.0, seed: int = 0, progress: bool = True) -> ScaleModel:
    """Cached ALS factors of a synthetic world of this size; generated and fitted on the first call."""
    params = scale_params(users, videos, days, impressions_per_user_day, seed)
    config = TrainConfig(seed=seed)
    folder = Path(cache) / _key(params)
    wanted = {"params": dataclasses.asdict(params), "als": config.als.model_dump()}
    cached = _read_cached(folder, wanted)
    if cached is not None:
        return cached
    steps = _Steps(quiet=not progress)
    model = _generate(params, config, folder, steps)
    manifest = {**wanted, "counts": model.manifest["counts"], "timings_s": steps.timings}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    model.manifest = manifest
    return model


def load_catalog(world_dir: Path) -> Catalog:
    """Catalog arrays from a saved world's videos and products tables (the events are not read)."""
    tables = {t: read_table(find_table(world_dir, t), t) for t in ("videos", "products")}
    return build_catalog(Dataset(events=pd.DataFrame(), **tables))


def _key(p: WorldParams) -> str:
    """Cache folder name of a size, e.g. '1000000u_1000000v_7d_4i_s0'."""
    return f"{p.users}u_{p.videos}v_{p.days}d_{p.impressions_per_user_day:g}i_s{p.seed}"


def _read_cached(folder: Path, wanted: dict) -> ScaleModel | None:
    """The cached model when every file is there and it was made with the same parameters, else None."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file() or not (folder / "world" / "world.json").is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    if any(manifest.get(k) != v for k, v in wanted.items()):
        return None
    if not all((folder / f"{name}.npy").is_file() for name in ARRAYS):
        return None
    arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
    return ScaleModel(**arrays, folder=folder, manifest=manifest)


def _generate(params: WorldParams, config: TrainConfig, folder: Path, steps: _Steps) -> ScaleModel:
    """Simulate the world, save it, fit ALS on its user×video matrix and cache the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    with steps.step(f"generating a world of {params.users:,} users × {params.videos:,} videos, {params.days} days"):
        world = generate_world(params, progress=steps.verbose)
    with steps.step(f"saving the world to {folder / 'world'}"):
        save_world(world, folder / "world")
    with steps.step("building the user×video interaction matrix"):
        catalog = build_catalog(world.dataset)
        events = world.dataset.events
        counts = {"events": len(events)}
        # Impressions weigh 0: dropping them first changes no matrix entry, only skips ~73% of the rows.
        weighted = [e for e, w in config.weights.items() if w != 0]
        events = events[events["event"].isin(weighted)]
        del world
        data = build_interactions(events, catalog, config.weights, config.full_watch_ratio)
        matrix = data.matrices["video"]  # (n_users, n_videos)
    counts.update(weighted_events=len(events), users=matrix.shape[0], videos=matrix.shape[1], nnz=int(matrix.nnz),
                  active_users=int((matrix.getnnz(axis=1) > 0).sum()),
                  videos_with_interactions=int((matrix.getnnz(axis=0) > 0).sum()))
    steps.console.print(f"  {counts}")
    with steps.step(f"fitting ALS ({config.als.factors} factors, {config.als.iterations} iterations)"):
        als = ALSRecommender(**config.als.model_dump(), random_state=config.seed, num_threads=config.threads)
        als.fit(matrix, show_progress=steps.verbose)
    arrays = {"user_factors": als.user_factors, "item_factors": als.item_factors,
              "user_ids": np.asarray(data.users.ids, dtype=str),
              "user_interactions": matrix.getnnz(axis=1).astype(np.int32),
              "video_creator": catalog.video_creator, "video_product": catalog.video_product}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array, allow_pickle=False)
    return ScaleModel(**arrays, folder=folder, manifest={"counts": counts})


class _Steps:
    """Prints each step with its duration to stderr (ALS's progress bar comes from implicit)."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        self.verbose = not quiet
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step and report it."""
        self.console.print(f"[bold]▶ {name}[/]")
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        self.console.print(f"  done in {self.timings[name]:.1f}s")


def main() -> None:
    """Generate (or load from the cache) the factors and print their shapes and where they are."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7, help="simulated days (events grow linearly)")
    parser.add_argument("--impressions", type=float, default=4.0, help="impressions per user-day")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    start = time.perf_counter()
    model = scale_factors(args.users, args.videos, args.cache, args.days, args.impressions, args.seed)
    print(f"users {model.user_factors.shape}, videos {model.item_factors.shape}, "
          f"active users {len(model.active_users()):,}; {model.folder} ({time.perf_counter() - start:.1f}s)")
    print(json.dumps(model.manifest, indent=2))


if __name__ == "__main__":
    main()
