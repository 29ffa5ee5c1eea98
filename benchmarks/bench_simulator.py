"""Simulator throughput (issue 7): requests/s through the full stack, simulated user-days/s, peak memory.

Generates (or loads) a world, then simulates whole days for all its users and prints one table:
with the model-free baseline stack, or with `--run` the trained stack of that run folder (its
two-tower generators and DCN ranker). Goal: >= 2,000 requests/s on the 2-core CPU machine.
Run: `python benchmarks/bench_simulator.py [--preset demo] [--days 1]`, or
`python benchmarks/bench_simulator.py --run runs/demo` after `adsim retrieval train/index` and `adsim rank train`.
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
    parser.add_argument("--run", type=Path, default=None,
                        help="a run folder: load its world and run its trained stack instead of the baseline")
    parser.add_argument("--days", type=int, default=1, help="simulated days")
    parser.add_argument("--batch-seconds", type=float, default=600.0, help="simulated seconds per request batch")
    parser.add_argument("--llm-quota", type=int, default=25,
                        help="trained stack: the LLM generator's L0 quota (the sweep goes up to 200)")
    parser.add_argument("--nightly", default="none", choices=("none", "history"),
                        help="nightly re-inference fed to the LLM generator and the ranker")
    args = parser.parse_args()

    from blending.blend import BlendConfig
    from simulator.config import SimulationConfig
    from simulator.engine import simulate
    from simulator.stack import (BASELINE_SOURCES, TRAINED_SOURCES, baseline_stack, load_predictions, nightly_job,
                                 trained_arms, trained_stack)
    from synthetic_data.config import WorldConfig
    from synthetic_data.config_io import from_dict
    from synthetic_data.presets import preset
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.schema import load_world
    from synthetic_data.world import generate_world

    console = Console()
    started = time.perf_counter()
    if args.run:
        world_config = from_dict(WorldConfig, RunFolder(args.run).stage_record("world")["config"])
        world = load_world(args.run / "world")
        blend = BlendConfig(**trained_arms(args.llm_quota)[1]["blend"])
        stack = trained_stack(args.run, world, world_config, load_predictions(None, world)[0], quotas=blend.quotas,
                              nightly=nightly_job(args.nightly, world))
        stack_label = (f"trained stack of {args.run}: {', '.join(TRAINED_SOURCES)} + DCN ranker; "
                       f"LLM quota {args.llm_quota}, nightly {args.nightly}")
    else:
        world_config = preset(args.preset)
        world = generate_world(world_config, progress=False)
        stack = baseline_stack(world, world_config, load_predictions(None, world)[0], nightly_job(args.nightly, world))
        blend = BlendConfig({BASELINE_SOURCES[0]: 30, BASELINE_SOURCES[1]: 10}, max_candidates=30)
        stack_label = f"{args.preset} world, baseline stack"
    setup_seconds = time.perf_counter() - started
    users = world.users["user_id"].to_numpy()
    config = SimulationConfig(days=args.days, batch_seconds=args.batch_seconds)
    result = simulate(world, stack, blend, users, config, progress=True)
    summary = result.summary
    wall = summary["wall_seconds"]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    table = Table(title=f"simulator throughput ({stack_label}; {users.size:,} users, {args.days} day(s))")
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
        ("peak resident memory (GiB)", f"{peak_gib:.2f}"),
        *[(f"share of time: {component}", f"{seconds / wall:.0%}")
          for component, seconds in summary["component_seconds"].items()],
        ("share of time: engine (traffic, auction, ledger, attribution)",
         f"{1 - sum(summary['component_seconds'].values()) / wall:.0%}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


if __name__ == "__main__":
    main()
