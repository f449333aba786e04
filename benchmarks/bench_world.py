"""Time `generate_world` (and optionally `save_world`) at a few sizes; prints a table of medians.

Usage: python benchmarks/bench_world.py [--repeat 3] [--big] [--save DIR]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from feed.world import WorldParams, generate_world, save_world

SIZES = {
    "default": WorldParams(),
    "~1M": WorldParams(users=6000, creators=360, products=1800, videos=4800, days=30),
    "~10M": WorldParams(users=60000, creators=3000, products=15000, videos=40000, days=30),
}


def _time(params: WorldParams, repeat: int, save_dir: Path | None) -> tuple[float, float, int]:
    """Median generation seconds, median save seconds (0 when not saving) and the event count."""
    gen, save, n = [], [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        world = generate_world(params)
        gen.append(time.perf_counter() - start)
        n = len(world.dataset.events)
        if save_dir is not None:
            start = time.perf_counter()
            save_world(world, Path(tempfile.mkdtemp(dir=save_dir)))
            save.append(time.perf_counter() - start)
        del world
    return statistics.median(gen), statistics.median(save) if save else 0.0, n


def main() -> None:
    """Print size, events, generation time, save time and peak memory for each size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="include the ~10M-event world")
    parser.add_argument("--save", type=Path, default=None, help="also time save_world (parquet) into DIR")
    args = parser.parse_args()
    print(f"{'size':>8} {'users':>7} {'days':>5} {'events':>11} {'generate s':>11} {'save s':>7} {'peak RSS GB':>12}")
    for name, params in SIZES.items():
        if name == "~10M" and not args.big:
            continue
        gen, save, n = _time(params, 1 if name == "~10M" else args.repeat, args.save)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{name:>8} {params.users:>7} {params.days:>5} {n:>11,} {gen:>11.2f} {save:>7.2f} {peak:>12.2f}")


if __name__ == "__main__":
    main()
