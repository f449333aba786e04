"""Time feed.io.read_table on synthetic event files and print a table (median of a few runs).

Usage: python benchmarks/bench_io.py [--rows 1000000] [--repeat 3]
Compares our validated read with the plain library read of the same file (pyarrow / pandas).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from timing import median_seconds  # benchmarks/timing.py (scripts run from this folder)
from feed.io import read_table, write_table

EVENTS = ("impression", "view", "like", "share", "cart", "purchase", "refund")


def synthetic_events(n: int, seed: int = 0) -> pd.DataFrame:
    """n canonical event rows with plausible ids, times and per-type columns."""
    rng = np.random.default_rng(seed)
    event = np.array(EVENTS)[rng.choice(7, n, p=[0.5, 0.3, 0.08, 0.03, 0.05, 0.03, 0.01])]
    paid = np.isin(event, ("purchase", "refund"))
    start = np.datetime64("2024-05-01T00:00:00", "ms").astype("int64")
    return pd.DataFrame({
        "event_id": pd.Series(np.char.add("e", np.arange(n).astype(str)), dtype="str"),
        "ts": pd.to_datetime(start + np.sort(rng.integers(0, 30 * 86_400_000, n)), unit="ms", utc=True),
        "user_id": pd.Series(np.char.add("u", rng.integers(0, 100_000, n).astype(str)), dtype="str"),
        "video_id": pd.Series(np.char.add("v", rng.integers(0, 20_000, n).astype(str)), dtype="str"),
        "event": pd.Series(event, dtype="str"),
        "watch_ms": np.where(event == "view", rng.integers(0, 60_000, n), np.nan),
        "share_id": pd.Series(np.where(event == "share", np.char.add("s", np.arange(n).astype(str)), None),
                              dtype="str"),
        "order_id": pd.Series(np.where(paid, np.char.add("o", np.arange(n).astype(str)), None), dtype="str"),
        "amount": np.where(paid, rng.uniform(1, 200, n).round(2), np.nan),
        "product_id": pd.Series(np.where(paid, "p1", None), dtype="str"),
    })


def main() -> None:
    """Write the files, time the reads, print the table."""
    args = _parse()
    frame = synthetic_events(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        cases = _files(frame, Path(tmp))
        print(f"{'file':<34} {'read_table s':>12} {'plain read s':>12} {'ratio':>6}")
        for label, (path, plain) in cases.items():
            ours = median_seconds(lambda path=path: read_table(path, "events"), args.repeat)
            base = median_seconds(plain, args.repeat)
            print(f"{label:<34} {ours:>12.2f} {base:>12.2f} {ours / base:>6.1f}")


def _parse() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


def _files(frame: pd.DataFrame, folder: Path) -> dict[str, tuple[Path, Callable[[], object]]]:
    """The benchmark files and, for each, the plain library read to compare with."""
    no_ids = frame.drop(columns="event_id")
    iso = frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    files = {"parquet": (frame, "a.parquet"), "parquet, no event_id": (no_ids, "b.parquet"),
             "parquet, ISO text ts": (iso, "c.parquet"), "csv": (frame, "d.csv")}
    out = {}
    for label, (data, name) in files.items():
        write_table(data, folder / name)
        path = folder / name
        plain = (lambda p=path: pd.read_parquet(p)) if name.endswith("parquet") else (
            lambda p=path: pd.read_csv(p, engine="pyarrow"))
        out[label] = (path, plain)
    return out


if __name__ == "__main__":
    main()
