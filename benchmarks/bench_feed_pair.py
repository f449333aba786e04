"""Two versions of the feed server side by side at 1M, taking turns under load: the paired requests/s ratio.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_feed_pair.py --old REF [--new REF] [--pairs 12] [--seconds 4]

The machine's speed drifts by ±25 % within minutes, so two versions measured one after the other in long runs
cannot be told apart by less than that. Here each git ref gets a worktree under data/generated/pair/ (removed
after the run) and a `feed serve` of its own over the cached bundle of `bench_feed_scale.py` (build it first
with `--build-only`); both servers stay up, and wrk (8 connections, the same users file and script as
bench_feed_scale.py) loads them in turns of `--seconds` each, old then new, `--pairs` times. With `--together`
both are loaded at once in each window instead, one wrk each (8 connections each, about one core per server): a
slow spell of the machine then slows both alike. The table gives each pair's requests/s, the new / old ratio and
each server's CPU µs per request (its process's user + system time over the window; the feed is CPU-bound, so
this follows 1/throughput), then the medians. `--new` defaults to the working tree as it is (uncommitted
changes included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench_feed_scale import LUA, build_bundle, cpu_seconds, start, stop, wrk_counts, write_users  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
console = Console(stderr=True)


def worktree(ref: str, folder: Path) -> Path:
    """A checkout of `ref` at `folder` (made again each run)."""
    if folder.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(folder), ref], check=True,
                   capture_output=True)
    return folder


def serve(code: Path, bundle: Path, port: int) -> subprocess.Popen:
    """`feed serve` of the code in `code` (its own packages first on the path), ready on `port`."""
    command = [sys.executable, "-c", "import sys; from feed.cli import run; sys.argv[0] = 'feed'; sys.exit(run())",
               "serve", "--bundle", str(bundle), "--store", "", "--reload-interval", "0", "--port", str(port),
               "--no-sample", "--log-level", "warning"]
    return start(command, {"PYTHONPATH": str(code)}, port, "/readyz")


def turn(server: subprocess.Popen, port: int, users: Path, seconds: int, script: Path) -> tuple[float, float]:
    """wrk's requests/s on the feed route of the server at `port`, and the server's CPU µs per request (user and
    system time of its process over the turn: what a neighbour's load on the machine inflates least)."""
    env = {**os.environ, "BENCH_USERS": str(users), "BENCH_PATH": "/v1/users/%s/feed?limit=20"}
    before = cpu_seconds(server.pid)
    out = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return _rates(out, cpu_seconds(server.pid) - before)


def together(servers: dict[str, subprocess.Popen], ports: dict[str, int], users: Path, seconds: int,
             script: Path) -> list[tuple[float, float]]:
    """Both servers loaded at once (one wrk each, 8 connections each): requests/s and CPU µs per request of each,
    in `ports` order. Each server gets about one core; a slow spell of the machine slows both alike."""
    env = {**os.environ, "BENCH_USERS": str(users), "BENCH_PATH": "/v1/users/%s/feed?limit=20"}
    before = {name: cpu_seconds(servers[name].pid) for name in ports}
    loads = {name: subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(script),
                                     f"http://127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, text=True)
             for name, port in ports.items()}
    outs = {name: load.communicate()[0] for name, load in loads.items()}
    for name, load in loads.items():
        if load.returncode != 0:
            raise RuntimeError(f"wrk against the {name} server failed (exit {load.returncode}): {outs[name]}")
    return [_rates(outs[name], cpu_seconds(servers[name].pid) - before[name]) for name in ports]


def _rates(out: str, cpu_used: float) -> tuple[float, float]:
    """wrk's requests/s and the server's CPU µs per request served."""
    rps, served = wrk_counts(out)
    return rps, cpu_used / max(served, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="git ref of the baseline")
    parser.add_argument("--new", help="git ref of the candidate (default: the working tree)")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--together", action="store_true",
                        help="load both servers at once in each window instead of in turns")
    parser.add_argument("--cache", type=Path, default=Path("data/generated/scale"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")
    bundle = build_bundle(args.cache)
    users = write_users(bundle)
    base = ROOT / "data" / "generated" / "pair"
    codes = {"old": worktree(args.old, base / "old"), "new": worktree(args.new, base / "new") if args.new else ROOT}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    servers = {name: serve(code, bundle, port) for (name, code), port in zip(codes.items(), (8781, 8782), strict=True)}
    try:
        ports = dict(zip(servers, (8781, 8782), strict=True))
        for name, port in ports.items():
            turn(servers[name], port, users, 3, Path(script.name))  # warm-up
        rows = []
        for pair in range(args.pairs):
            if args.together:
                (old, old_cpu), (new, new_cpu) = together(servers, ports, users, args.seconds, Path(script.name))
            else:
                (old, old_cpu), (new, new_cpu) = (turn(servers[name], ports[name], users, args.seconds,
                                                       Path(script.name)) for name in ports)
            rows.append([old, new, old_cpu, new_cpu])
            console.print(f"  pair {pair + 1}: old {old:,.0f}, new {new:,.0f} requests/s; CPU per request old "
                          f"{old_cpu:,.0f}, new {new_cpu:,.0f} µs")
    finally:
        for proc in servers.values():
            stop(proc)
        for code in codes.values():
            if code != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(code)], check=False)
    print_table(np.array(rows), args)


def print_table(rows: np.ndarray, args: argparse.Namespace) -> None:
    """Each pair and the medians."""
    table = Table(title=f"feed at 1M, {args.old} (old) against {args.new or 'the working tree'} (new), "
                        f"{args.pairs} pairs of {args.seconds}s, 8 connections"
                        f"{' each, together' if args.together else ''}")
    for column in ("pair", "old requests/s", "new requests/s", "new / old", "old CPU µs/request",
                   "new CPU µs/request", "new / old CPU"):
        table.add_column(column, justify="right")
    for i, (old, new, old_cpu, new_cpu) in enumerate(rows):
        table.add_row(str(i + 1), f"{old:,.0f}", f"{new:,.0f}", f"{new / old:.3f}", f"{old_cpu:,.0f}",
                      f"{new_cpu:,.0f}", f"{new_cpu / old_cpu:.3f}")
    medians = np.median(rows, axis=0)
    table.add_row("median", f"{medians[0]:,.0f}", f"{medians[1]:,.0f}",
                  f"[bold]{np.median(rows[:, 1] / rows[:, 0]):.3f}[/bold]", f"{medians[2]:,.0f}",
                  f"{medians[3]:,.0f}", f"[bold]{np.median(rows[:, 3] / rows[:, 2]):.3f}[/bold]")
    Console().print(table)


if __name__ == "__main__":
    main()
