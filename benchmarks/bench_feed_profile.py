"""Where a feed's time goes, in process: µs per `FeedService.feed` and per stage on a mid-size world.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_feed_profile.py [--repeat 3] [--users 400]
           [--factory IVF64,Flat --search-params nprobe=16] [--dump feeds.json] [--profile]

1. The world (20,000 users × 50,000 videos, 14 days) and its ALS bundle (with ranker) are built once and cached
   under data/generated/profile/ (delete it to rebuild). Each relation's index is then rebuilt in process as
   `--factory` (default IVF64,Flat with nprobe=16: a search scans ~12k of the 50k videos, about what IVF1024
   nprobe=16 scans at 1M videos in `bench_feed_scale.py`, so FAISS takes its at-scale share of the feed).
2. `FeedService.feed` (limit 20, FAISS at one thread) for known users, unknown users and the second page of a
   cursor (page 1 of known users), each user several times; the table prints the median and p99 µs per feed and
   the median per stage (`Feed.timings`: candidates, ranking, page); the machines are shared, so the CPU time
   of the process per feed (FAISS and BLAS at one thread) is printed too: it is what load does not inflate.
3. `--dump` writes every feed's items (video, source, reason, score) to JSON, to check that an optimization
   returns the same feeds; `--profile` runs cProfile over the known-user loop and prints the top functions.
4. `--parts` times the parts of a known user's page 0 one by one, in the order `FeedService.rank` runs them
   (its own stage methods), and the JSON body: "in flow" over the users with 4 MB written between two users (as a
   server's other work evicts the caches), "warm" as the same call repeated on one user. The three index
   searches alone are timed in a flow of their own (inside the candidates they cannot be told apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from feed.bundle import Bundle, load_bundle
from feed.index import VectorIndex
from feed.cursor import Cursor
from feed.service import STAGES, Feed, FeedConfig, FeedService, UserRead
from feed.world import WorldParams, generate_world, save_world

CACHE = Path(__file__).resolve().parent.parent / "data" / "generated" / "profile"
PARAMS = WorldParams(users=20_000, creators=2_000, products=10_000, videos=50_000, days=14, seed=3)
NOW_MS = None  # the stats' end: the same features in every run


def build(folder: Path) -> Path:
    """The cached world and bundle (built on the first run)."""
    bundle = folder / "bundle"
    if (bundle / "manifest.json").exists():
        return bundle
    from training.config import load_config
    from training.pipeline import run_training
    save_world(generate_world(PARAMS), folder / "world")
    run_training(folder / "world", load_config(overrides={"retriever": "als"}, environ={}), bundle, track=False,
                 quiet=True)
    return bundle


def reindex(bundle: Bundle, factory: str, search_params: str) -> None:
    """Rebuild every relation's index over its item vectors (the bundle's own with factory 'bundle')."""
    if factory != "bundle":
        for rel in bundle.relations.values():
            rel.index = VectorIndex.build(rel.item_factors, factory, search_params)


def run(service: FeedService, calls: list[tuple[str, object]], repeat: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(n_calls·repeat, 2) wall and CPU seconds per feed, (n, 3) stage seconds, and the last repetition's feeds."""
    total, stages, feeds = [], [], []
    for r in range(repeat):
        for user, cursor in calls:
            start, cpu = time.perf_counter(), time.process_time()
            feed = service.feed(user, 20, cursor=cursor, seed=7, now_ms=NOW_MS, request_id="r")
            total.append((time.perf_counter() - start, time.process_time() - cpu))
            stages.append([feed.timings[s] for s in STAGES])
            if r == repeat - 1:
                feeds.append(feed)
    return np.array(total), np.array(stages), feeds


def second_pages(service: FeedService, users: list[str]) -> list[tuple[str, object]]:
    """(user, cursor of page 1) for each user."""
    from feed.cursor import Cursor
    return [(u, Cursor.decode(service.feed(u, 20, seed=7, now_ms=NOW_MS).next_cursor)) for u in users]


def dump(feeds: dict[str, list[Feed]], path: Path) -> None:
    """Every feed's items as JSON (to compare two versions of the code)."""
    out = {kind: [[(i.video_id, i.source, i.reason, round(i.score, 9), i.sponsored, i.earns_commission,
                    i.predicted and {k: round(v, 6) for k, v in i.predicted.items()}) for i in f.items]
                  + [f.next_cursor] for f in fs] for kind, fs in feeds.items()}
    path.write_text(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--factory", default="IVF64,Flat", help="'bundle' keeps the bundle's exact indexes")
    parser.add_argument("--search-params", default="nprobe=16")
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--parts", action="store_true",
                        help="time each part of a known user's page 0, in flow and warm")
    parser.add_argument("--rank-depth", type=int, default=FeedConfig().rank_depth,
                        help="FeedConfig.rank_depth (0: the ranker scores every candidate)")
    parser.add_argument("--bundle", type=Path, help="profile this bundle (e.g. bench_feed_scale.py's) instead of "
                                                    "the cached mid-size world's; use with --factory bundle")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    bundle = load_bundle(args.bundle or build(CACHE))
    reindex(bundle, args.factory, args.search_params)
    service = FeedService(bundle, FeedConfig(rank_depth=args.rank_depth))
    rng = np.random.default_rng(0)
    known = [str(u) for u in rng.choice(bundle.users.ids, args.users, replace=False)]
    unknown = [f"nobody-{i}" for i in range(args.users // 4)]
    kinds = {"known user, page 0": [(u, None) for u in known], "unknown user, page 0": [(u, None) for u in unknown],
             "known user, page 1 (cursor)": second_pages(service, known[: args.users // 2])}
    for calls in kinds.values():
        run(service, calls[:50], 1)  # warm-up
    if args.parts:
        print_parts(service, known, args.repeat)
        return
    if args.profile:
        from pyinstrument import Profiler
        with Profiler(interval=0.0002) as profiler:
            run(service, kinds["known user, page 0"], args.repeat)
        profiler.print(show_all=False, short_mode=False)
        return
    table = Table(title=f"FeedService.feed, limit 20, {len(bundle.users):,} users × {len(bundle.catalog.videos):,} "
                        f"videos, ranking={service.ranking}, rank_depth={args.rank_depth}, "
                        f"{args.factory} {args.search_params} (µs)")
    for col in ("feeds", "median", "p99", "CPU median", *[f"{s} (median)" for s in STAGES]):
        table.add_column(col, justify="right")
    feeds = {}
    for kind, calls in kinds.items():
        total, stages, feeds[kind] = run(service, calls, args.repeat)
        table.add_row(kind, f"{np.median(total[:, 0]) * 1e6:,.0f}", f"{np.percentile(total[:, 0], 99) * 1e6:,.0f}",
                      f"{np.median(total[:, 1]) * 1e6:,.0f}",
                      *[f"{np.median(stages[:, j]) * 1e6:,.0f}" for j in range(len(STAGES))])
    Console().print(table)
    if args.dump:
        dump(feeds, args.dump)


def page_parts(service: FeedService, user_id: str, timed: Callable[[str, Callable[[], object]], object]) -> None:
    """Run each part of the user's page 0 through `timed(name, call)`, which returns the call's result, in
    `FeedService.rank`'s order (its own stage methods), then the JSON body."""
    from serving.schemas import feed_json

    read, cursor = UserRead(user_id, None, [], [], []), Cursor.first(7)
    user = timed("user view", lambda: service._user_view(read))
    blocked = timed("filters", lambda: service._blocked(read, ()))
    cands, _ = timed("candidates (3 searches + kernel)", lambda: service._candidates(user, blocked, cursor, 20))
    relevance, probs = timed("ranking", lambda: service._relevance(user, cands, NOW_MS))
    chosen = timed("page", lambda: service._page(cands, relevance, 20))
    items = timed("items", lambda: service._items(cands, chosen, relevance, probs))
    shown = service.hashes[cands.videos[chosen]]
    timed("cursor", lambda: cursor.next(cursor.seed, shown, service.config.max_depth).encode())
    feed = Feed("r", user_id, items, service.model_version, False, 7)
    timed("JSON body", lambda: feed_json(feed))


def print_parts(service: FeedService, users: list[str], repeat: int) -> None:
    """Median µs of each part in flow (every part of one user once, 4 MB written, the next user) and warm (one
    call repeated on one user), and of the three index searches alone in a flow of their own."""
    sweep, flow, warm, searches = np.zeros(1_000_000, np.float32), {}, {}, []

    def once(name: str, call: Callable[[], object]) -> object:
        start = time.perf_counter()
        out = call()
        flow.setdefault(name, []).append(time.perf_counter() - start)
        return out

    def repeated(name: str, call: Callable[[], object]) -> object:
        warm[name] = min(timeit.repeat(call, number=50, repeat=5)) / 50
        return call()

    quotas = tuple(service.sources.numbers.quotas[:3].tolist())  # video, creator, product
    for _ in range(repeat):
        for user_id in users:
            sweep += 1.0
            page_parts(service, user_id, once)
        for user_id in users:
            sweep += 1.0
            view = service._user_view(UserRead(user_id, None, [], [], []))
            start = time.perf_counter()
            service.sources._searches(view, quotas)
            searches.append(time.perf_counter() - start)
    page_parts(service, users[0], repeated)
    table = Table(title=f"parts of a known user's page 0 (µs, medians over {len(users)} users × {repeat}; in "
                        f"flow: each part once after the parts before it, 4 MB written between users)")
    for column in ("part", "in flow", "warm (repeated)", "flow / warm"):
        table.add_column(column, justify="right")
    for name, times in flow.items():
        table.add_row(name, f"{np.median(times) * 1e6:,.1f}", f"{warm[name] * 1e6:,.1f}",
                      f"{np.median(times) / warm[name]:.1f}×")
    table.add_row("the 3 searches alone (own flow)", f"{np.median(searches) * 1e6:,.1f}", "", "")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
