"""World generation speed and memory: users/s, event rows/s and peak memory for a preset.

    python benchmarks/bench_world.py                      # the `large` preset: 1M users, 90 days
    python benchmarks/bench_world.py --preset demo --workers 1
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from synthetic_data.presets import preset
from synthetic_data.world import write_world


def peak_memory_gib() -> tuple[float, float]:
    """(main process, largest worker) peak resident memory in GiB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return own, children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="large")
    parser.add_argument("--set", action="append", default=[], help="override, e.g. users.n_users=100000")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None, help="keep the world here (default: a temp dir)")
    args = parser.parse_args(argv)
    config = preset(args.preset, args.set)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        started, cpu_started = time.perf_counter(), time.process_time()
        _, summary = write_world(config, out, progress=True, workers=args.workers)
        seconds = time.perf_counter() - started
        size = sum(p.stat().st_size for p in out.glob("*.parquet"))
    own, worker = peak_memory_gib()
    rows = sum(summary["rows"].values())
    table = Table(title=f"world generation: preset {args.preset} {' '.join(args.set)}")
    for column in ("users", "days", "workers", "seconds", "users/s", "event rows", "rows/s (all tables)",
                   "Parquet size", "peak RSS main", "peak RSS worker"):
        table.add_column(column, justify="right")
    table.add_row(f"{config.users.n_users:,}", str(config.n_days), str(args.workers), f"{seconds:.1f}",
                  f"{config.users.n_users / seconds:,.0f}", f"{summary['rows']['events']:,}",
                  f"{rows / seconds:,.0f}", f"{size / 2**30:.2f} GiB", f"{own:.2f} GiB", f"{worker:.2f} GiB")
    Console(width=200).print(table)
    print(f"main-process CPU seconds: {time.process_time() - cpu_started:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
