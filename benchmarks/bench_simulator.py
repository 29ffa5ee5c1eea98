"""Simulator throughput (issues 7, 15): requests/s through the full stack, simulated user-days/s, peak memory.

Generates (or loads) a world, then simulates whole days for all its users and prints one table:
with the model-free baseline stack, or with `--run` the trained stack of that run folder (its
two-tower generators and DCN ranker). Goal: >= 10,000 requests/s for the trained stack on the
2-core CPU machine (issue 15).

`--baseline-src DIR` compares against other code in the same run: DIR is a checkout of the
reference commit (`git worktree add /tmp/simbase f882f10`); the same measurement runs in
subprocesses, alternately on DIR's code and on this checkout's, and one table gives min/median
requests/s of each, their ratio and whether both simulated the same impressions, clicks,
conversions and spend. Measured on the demo world's trained stack (1 day, 80,146 requests, LLM
quota 25, idle machine, 5 rounds) against f882f10 (the request path on polars): 4,254 vs 10,525
requests/s median (min 10,395, max 10,705; per-round ratio 2.44-2.59); outputs identical in every
run. The market now runs on both cores: a lookahead thread retrieves, blends and featurises the
next batches of the day while the market's thread scores (ctcvr then vtcvr), ranks and auctions
the current one. Component seconds are summed per thread, so their shares can add to over 100%.

Run: `python benchmarks/bench_simulator.py [--preset demo] [--days 1]`, or
`python benchmarks/bench_simulator.py --run runs/demo [--baseline-src /tmp/simbase]` after
`adsim retrieval train/index` and `adsim rank train`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

GOAL_REQUESTS_PER_SECOND = 10_000.0
REPOSITORY = Path(__file__).resolve().parents[1]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="world preset to generate (ignored with --run)")
    parser.add_argument("--run", type=Path, default=None,
                        help="a run folder: load its world and run its trained stack instead of the baseline")
    parser.add_argument("--days", type=int, default=1, help="simulated days")
    parser.add_argument("--batch-seconds", type=float, default=600.0, help="simulated seconds per request batch")
    parser.add_argument("--llm-quota", type=int, default=25,
                        help="trained stack: the LLM generator's L0 quota (the sweep goes up to 200)")
    parser.add_argument("--nightly", default="none", choices=("none", "history"),
                        help="nightly re-inference fed to the LLM generator and the ranker")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="a checkout of the code to compare against, measured alternately in subprocesses")
    parser.add_argument("--rounds", type=int, default=3, help="with --baseline-src: measurements of each code")
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures instead of the table")
    return parser.parse_args()


def measure(args: argparse.Namespace) -> tuple[dict, str]:
    """Build the stack, simulate, and return the figures and a label for the stack."""
    from blending.blend import BlendConfig
    from simulator import engine
    from simulator.config import SimulationConfig
    from simulator.stack import (BASELINE_SOURCES, TRAINED_SOURCES, baseline_stack, load_predictions, nightly_job,
                                 trained_arms, trained_stack)
    from synthetic_data.config import WorldConfig
    from synthetic_data.config_io import from_dict
    from synthetic_data.presets import preset
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.schema import load_world
    from synthetic_data.world import generate_world

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
    result = engine.simulate(world, stack, blend, users,
                             SimulationConfig(days=args.days, batch_seconds=args.batch_seconds), progress=not args.json)
    summary = result.summary
    totals = result.user_metrics.drop("user_id").sum().row(0, named=True)
    figures = {
        "code": str(Path(engine.__file__).resolve().parents[1]), "users": int(users.size),
        "setup_seconds": setup_seconds, "requests": summary["requests"], "batches": summary["batches"],
        "impressions": summary["impressions"], "wall_seconds": summary["wall_seconds"],
        "requests_per_second": summary["requests_per_second"],
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "component_seconds": summary["component_seconds"],
        # what the market simulated, to check that two codes produced the same outputs
        "outputs": {name: totals[name] for name in ("impressions", "clicks", "conversions", "spend",
                                                    "conversion_value")},
    }
    return figures, stack_label


def print_table(figures: dict, stack_label: str, days: int) -> None:
    wall = figures["wall_seconds"]
    table = Table(title=f"simulator throughput ({stack_label}; {figures['users']:,} users, {days} day(s))")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("world + stack setup (s)", f"{figures['setup_seconds']:.1f}"),
        ("requests", f"{figures['requests']:,}"),
        ("request batches", f"{figures['batches']:,}"),
        ("impressions", f"{figures['impressions']:,}"),
        ("simulation wall time (s)", f"{wall:.1f}"),
        ("requests / s (full stack)", f"{figures['requests_per_second']:,.0f}"),
        ("goal requests / s", f"{GOAL_REQUESTS_PER_SECOND:,.0f}"),
        ("simulated user-days / s", f"{figures['users'] * days / wall:,.0f}"),
        ("peak resident memory (GiB)", f"{figures['peak_gib']:.2f}"),
        # the lookahead thread's components (generators, blending, "scorer, ahead") overlap the others
        *[(f"seconds: {component}", f"{seconds:.1f}") for component, seconds in figures["component_seconds"].items()],
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def measure_in_subprocess(args: argparse.Namespace, source: Path) -> dict:
    """This benchmark's figures with the packages imported from `source` (a checkout's root)."""
    forwarded = ["--preset", args.preset, "--days", str(args.days), "--batch-seconds", str(args.batch_seconds),
                 "--llm-quota", str(args.llm_quota), "--nightly", args.nightly,
                 *(["--run", str(args.run)] if args.run else []), "--json"]
    environment = {**os.environ, "PYTHONPATH": str(source.resolve())}
    completed = subprocess.run([sys.executable, __file__, *forwarded], env=environment,
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the benchmark on {source} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    """Alternate the baseline's code and this checkout's, `args.rounds` times each, and print both."""
    codes = {"baseline": args.baseline_src, "this checkout": REPOSITORY}
    runs: dict[str, list[dict]] = {name: [] for name in codes}
    for round_index in range(args.rounds):
        for name, source in codes.items():
            runs[name].append(measure_in_subprocess(args, source))
            print(f"round {round_index + 1}/{args.rounds} {name}: "
                  f"{runs[name][-1]['requests_per_second']:,.0f} requests/s", flush=True)
    table = Table(title=f"requests/s, {args.rounds} alternating rounds ({runs['baseline'][0]['requests']:,} "
                        f"requests, {args.days} day(s))")
    for column in ("code", "source", "min", "median", "max"):
        table.add_column(column, justify="left" if column in ("code", "source") else "right")
    medians = {}
    for name, figures in runs.items():
        speeds = [run["requests_per_second"] for run in figures]
        medians[name] = statistics.median(speeds)
        table.add_row(name, figures[0]["code"], f"{min(speeds):,.0f}", f"{medians[name]:,.0f}", f"{max(speeds):,.0f}")
    pair_ratios = [new["requests_per_second"] / old["requests_per_second"]
                   for old, new in zip(runs["baseline"], runs["this checkout"])]
    table.add_row("ratio", "this checkout / baseline, per round", f"{min(pair_ratios):.2f}",
                  f"{statistics.median(pair_ratios):.2f}", f"{max(pair_ratios):.2f}")
    Console().print(table)
    outputs = [run["outputs"] for figures in runs.values() for run in figures]
    print("outputs (impressions, clicks, conversions, spend, conversion value) identical in every run:",
          all(output == outputs[0] for output in outputs), outputs[0])


def main() -> None:
    args = parse_arguments()
    if args.baseline_src is not None:
        compare(args)
        return
    figures, stack_label = measure(args)
    if args.json:
        print(json.dumps(figures))
    else:
        print_table(figures, stack_label, args.days)


if __name__ == "__main__":
    main()
