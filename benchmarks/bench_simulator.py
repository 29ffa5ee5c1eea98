"""Simulator throughput (issue 7): requests/s through the full stack, simulated user-days/s, peak memory.

Generates (or loads) a world, then simulates whole days for all its users with the model-free
baseline stack and prints one table. Goal: >= 2,000 requests/s on the 2-core CPU machine.
Run: `python benchmarks/bench_simulator.py [--preset demo] [--world runs/demo/world] [--days 1]`.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

GOAL_REQUESTS_PER_SECOND = 2000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="world preset to generate (ignored with --world)")
    parser.add_argument("--world", type=Path, default=None, help="a run's world/ folder to load instead")
    parser.add_argument("--days", type=int, default=1, help="simulated days")
    parser.add_argument("--batch-seconds", type=float, default=600.0, help="simulated seconds per request batch")
    args = parser.parse_args()

    from blending.blend import BlendConfig
    from simulator.config import SimulationConfig
    from simulator.engine import simulate
    from simulator.stack import BASELINE_SOURCES, baseline_stack, load_predictions
    from synthetic_data.presets import preset
    from synthetic_data.schema import load_world
    from synthetic_data.world import generate_world

    console = Console()
    started = time.perf_counter()
    world_config = preset(args.preset)
    world = load_world(args.world) if args.world else generate_world(world_config, progress=False)
    stack = baseline_stack(world, world_config, load_predictions(None, world)[0])
    setup_seconds = time.perf_counter() - started
    blend = BlendConfig({BASELINE_SOURCES[0]: 30, BASELINE_SOURCES[1]: 10}, max_candidates=30)
    users = world.users["user_id"].to_numpy()
    config = SimulationConfig(days=args.days, batch_seconds=args.batch_seconds)
    result = simulate(world, stack, blend, users, config, progress=True)
    summary = result.summary
    wall = summary["wall_seconds"]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    table = Table(title=f"simulator throughput ({args.preset if not args.world else args.world}, "
                        f"{users.size:,} users, {args.days} day(s), baseline stack)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("world + stack setup (s)", f"{setup_seconds:.1f}"),
        ("requests", f"{summary['requests']:,}"),
        ("request batches", f"{summary['batches']:,}"),
        ("impressions", f"{summary['impressions']:,}"),
        ("simulation wall time (s)", f"{wall:.1f}"),
        ("requests / s (full stack)", f"{summary['requests_per_second']:,.0f}"),
        ("goal requests / s", f"{GOAL_REQUESTS_PER_SECOND:,.0f}"),
        ("simulated user-days / s", f"{users.size * args.days / wall:,.0f}"),
        ("share of time in generators + blending + scorer", f"{summary['model_seconds'] / wall:.0%}"),
        ("peak resident memory (GiB)", f"{peak_gib:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


if __name__ == "__main__":
    main()
