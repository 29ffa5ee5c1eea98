"""The L0 quota sweep on one process and on Ray (issue #17): wall seconds of each, their ratio, and the memory
Ray's processes take.

Runs the same `run_sweep` (paired design, the quotas as independent markets) in one process, `--rounds`
times each way, alternating: `engine="local"` (one market after the other) and `engine="ray"` on a local
cluster of `--workers` CPUs (one market per Ray task, one thread per op), started first (timed apart).
Checks that every sweep's table is equal, gives each engine's markets' own seconds (a market slowed by
other processes on the cores shows there), and samples the proportional set size (PSS: shared pages split
between the processes that map them) of the cluster's processes every 0.2 s.
The model-free (baseline) stack on a generated world, or with `--run` on that run folder's world (the
trained stack cannot go to Ray workers yet: retrieval.train.TwoTowerRetriever keeps a weak-keyed cache
that does not pickle).
Run: `python benchmarks/bench_ray_sweep.py [--preset demo] [--quota 0,25,50,100] [--days 1] [--workers 2] [--rounds 1]`
or `python benchmarks/bench_ray_sweep.py --run runs/demo`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
from polars.testing import assert_frame_equal
from rich.console import Console
from rich.table import Table


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="world preset to generate (ignored with --run)")
    parser.add_argument("--run", type=Path, default=None, help="a run folder whose world to load instead")
    parser.add_argument("--quota", default="0,25,50,100", help="comma-separated L0 quotas of the LLM source")
    parser.add_argument("--days", type=int, default=1, help="simulated days per market")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--rounds", type=int, default=1, help="alternating sequential and Ray sweeps")
    return parser.parse_args()


def build(args: argparse.Namespace):
    """The world, the model-free stack, the experiment config and the quotas."""
    from simulator.config import ExperimentConfig
    from simulator.stack import baseline_stack, load_predictions
    from synthetic_data.config import WorldConfig
    from synthetic_data.config_io import from_dict
    from synthetic_data.presets import preset
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.schema import load_world
    from synthetic_data.world import generate_world

    if args.run:
        world_config = from_dict(WorldConfig, RunFolder(args.run).stage_record("world")["config"])
        world, label = load_world(args.run / "world"), f"the world of {args.run}"
    else:
        world_config = preset(args.preset)
        world, label = generate_world(world_config, progress=False), f"a generated {args.preset} world"
    stack = baseline_stack(world, world_config, load_predictions(None, world)[0])
    experiment = ExperimentConfig()
    experiment = replace(experiment, simulation=replace(experiment.simulation, days=args.days))
    quotas = [int(quota) for quota in args.quota.split(",")]
    return world, stack, experiment, quotas, f"{label}, {world.users.height:,} users, baseline stack"


class RayMemory:
    """Peak summed PSS (GiB) of this process's Ray descendants, workers (`ray::` processes) apart, sampled
    on a thread until stopped."""

    def __init__(self, interval_seconds: float = 0.2):
        self.interval_seconds, self.peak = interval_seconds, {"workers": 0.0, "other": 0.0, "all": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            sums = {"workers": 0.0, "other": 0.0}
            for process in psutil.Process().children(recursive=True):
                try:
                    kind = "workers" if process.name().startswith("ray::") else "other"
                    sums[kind] += process.memory_full_info().pss / 2**30
                except (psutil.NoSuchProcess, psutil.AccessDenied):  # a worker that ended between list and read
                    continue
            sums["all"] = sums["workers"] + sums["other"]
            self.peak = {name: max(self.peak[name], value) for name, value in sums.items()}
            self._stop.wait(self.interval_seconds)

    def __enter__(self) -> RayMemory:
        self._thread.start()
        return self

    def __exit__(self, *exception) -> None:
        self._stop.set()
        self._thread.join()


def timed_sweep(world, stack, experiment, source: str, quotas: list[int], engine: str) -> tuple:
    """The sweep's table, its wall seconds and its markets' own wall seconds, summed."""
    from simulator.experiment import run_sweep

    started = time.perf_counter()
    table, result = run_sweep(experiment, world, stack, source, quotas, engine=engine)
    return (table, time.perf_counter() - started,
            sum(market.summary["wall_seconds"] for market in result.results.values()))


def main() -> None:
    import ray

    from simulator.stack import BASELINE_SOURCES
    from synthetic_data.ray_cluster import connect

    args = parse_arguments()
    world, stack, experiment, quotas, label = build(args)
    source, load_before = BASELINE_SOURCES[1], os.getloadavg()[0]
    started = time.perf_counter()
    connect(num_cpus=args.workers)
    start_seconds = time.perf_counter() - started
    seconds: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    with RayMemory() as memory:
        for round_index in range(args.rounds):  # alternating, so a change in the machine's load hits both
            for engine in ("local", "ray"):
                table, wall, markets = timed_sweep(world, stack, experiment, source, quotas, engine)
                seconds[engine].append((wall, markets))
                if engine == "local":
                    reference = table
                assert_frame_equal(reference, table)  # the engine must change no number
                print(f"round {round_index + 1}/{args.rounds} {engine}: {wall:.1f} s", flush=True)
    ray.shutdown()

    table = Table(title=f"quota sweep {quotas} of {source}, {args.days} day(s) per market ({label}; "
                        f"{os.cpu_count()} cores, load average {load_before:.1f} before, "
                        f"{os.getloadavg()[0]:.1f} after)")
    table.add_column("measure")
    table.add_column("value (median of rounds)", justify="right")
    median = {engine: [statistics.median(values) for values in zip(*runs)] for engine, runs in seconds.items()}
    ratios = [local[0] / ray_[0] for local, ray_ in zip(seconds["local"], seconds["ray"])]
    rows = [("sequential sweep (s)", f"{median['local'][0]:.1f}"),
            (f"Ray sweep, {args.workers} workers (s)", f"{median['ray'][0]:.1f}"),
            ("speedup (sequential / Ray), per round", ", ".join(f"{ratio:.2f}" for ratio in ratios)),
            ("markets' own seconds, summed: sequential", f"{median['local'][1]:.1f}"),
            ("markets' own seconds, summed: Ray", f"{median['ray'][1]:.1f}"),
            ("Ray cluster start (s, apart)", f"{start_seconds:.1f}"),
            ("tables identical", "yes"),
            ("driver peak RSS (GiB)", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}"),
            ("Ray workers' peak PSS, summed (GiB)", f"{memory.peak['workers']:.2f}"),
            ("Ray's other processes' peak PSS (GiB)", f"{memory.peak['other']:.2f}"),
            ("all Ray processes' peak PSS (GiB)", f"{memory.peak['all']:.2f}")]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


if __name__ == "__main__":
    main()
