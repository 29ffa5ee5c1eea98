"""Each stage's throughput per core on this machine, and the cluster a daily run at 1M and 100M users needs
(issue #17, docs/scale.md).

    python benchmarks/bench_scale.py --run runs/demo [--users 512] [--window-hours 4] [--core-hour-usd 0.04]

Measured on a run folder `adsim demo` completed: world generation (users/s, one worker process, a world of
the run's preset at `--world-users` users), prompts (the served method's and the paper's template), the
served method's inference (users/s, one torch thread: the per-core rate a replica of `adsim llm predict
--engine ray` has) and the simulated market (requests/s of the trained stack; `bench_simulator.py`, whose
market runs on two threads, so its per-core rate is the machine's halved). The daily load per user is
measured on the run's world too: the share of users a day's serving set holds (paper 3.2.1: a conversion in
the last 90 days), the share with activity on a day (re-inferred incrementally) and requests per user-day.

The plan multiplies each measured rate into core-hours a day and the cores that finish them within the
window; the price of a core-hour is an assumption given on the command line, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

REPOSITORY = Path(__file__).resolve().parents[1]
DAILY_USERS = (1_000_000, 100_000_000)


def per_second(count: int, function) -> tuple[float, float]:
    """(count / wall seconds, wall seconds) of one call of `function`."""
    started = time.perf_counter()
    function()
    seconds = time.perf_counter() - started
    return count / seconds, seconds


def world_rate(run: Path, users: int) -> float:
    """Users generated per second by one worker process, for a world of the run's config at `users` users."""
    from dataclasses import replace

    from synthetic_data.config import WorldConfig
    from synthetic_data.config_io import from_dict
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.world import write_world

    config = from_dict(WorldConfig, RunFolder(run).stage_record("world")["config"])
    config = replace(config, users=replace(config.users, n_users=users))
    with tempfile.TemporaryDirectory() as directory:
        rate, _ = per_second(users, lambda: write_world(config, Path(directory), progress=False, workers=1))
    return rate


def daily_load(world) -> dict:
    """Per-user daily load of the run's world: serving share, share active on a day, requests per user-day."""
    from llm_predictor.config import resolve_config
    from llm_predictor.stages import prediction_keys

    config = resolve_config("small", None, None)  # every serving user (serving_max_users = None)
    serving = prediction_keys(world, config, "serving").height
    days = world.events.select(pl.col("ts").dt.date().n_unique()).item()
    active = world.events.group_by(pl.col("ts").dt.date()).agg(pl.col("user_id").n_unique())["user_id"].mean()
    return {"users": world.users.height, "serving_share": serving / world.users.height,
            "active_share_per_day": active / world.users.height, "days": days}


def llm_rates(run: Path, world, users: int) -> dict:
    """Prompts/s (the served method's and the paper's 1-advertiser template) and the served method's users
    ranked per second, on one thread, for `users` serving users of the run."""
    import torch

    from llm_predictor.choice import resolve_method
    from llm_predictor.config import METHODS, trained_config
    from llm_predictor.stages import method_prompts, predict_users, prediction_keys
    from synthetic_data.run_folder import RunFolder

    torch.set_num_threads(1)
    folder = RunFolder(run)
    method = resolve_method(folder, "chosen")
    config = trained_config(folder, method, "small")
    keys = prediction_keys(world, config, "serving").head(users)
    served, _ = per_second(keys.height, lambda: method_prompts(folder, world, config, METHODS[method], keys,
                                                                config.features))
    paper, _ = per_second(keys.height, lambda: method_prompts(folder, world, config, METHODS["sft_single_ranked"],
                                                               keys, config.features))
    predict_users(folder, world, config, method, keys.head(16), None, False)  # load and warm the model
    inference, _ = per_second(keys.height, lambda: predict_users(folder, world, config, method, keys, None, False))
    return {"method": method, "served_prompts_per_second": served, "paper_prompts_per_second": paper,
            "users_ranked_per_second": inference, "torch_threads": 1}


def market_rate(run: Path) -> dict:
    """The trained stack's requests/s and requests per user-day (bench_simulator.py, one simulated day)."""
    output = subprocess.run([sys.executable, str(REPOSITORY / "benchmarks" / "bench_simulator.py"), "--run", str(run),
                             "--json"], capture_output=True, text=True, check=True, cwd=REPOSITORY)
    figures = json.loads(output.stdout.strip().splitlines()[-1])
    return {"requests_per_second": figures["requests_per_second"], "market_threads": 2,
            "requests_per_user_day": figures["requests"] / figures["users"]}


def plan(rates: dict, load: dict, window_hours: float, core_hour_usd: float) -> list[dict]:
    """Core-hours a day per stage, for each of DAILY_USERS, and the cores that finish them in the window."""
    per_core = {
        "world generation (synthetic users)": (rates["world_users_per_second"], 1.0),
        "prompts (served method, users re-inferred)": (rates["served_prompts_per_second"],
                                                       load["active_share_per_day"]),
        "inference (served method, users re-inferred)": (rates["users_ranked_per_second"],
                                                         load["active_share_per_day"]),
        "inference (served method, every serving user)": (rates["users_ranked_per_second"], load["serving_share"]),
        "market simulation (requests)": (rates["requests_per_second"] / rates["market_threads"],
                                         rates["requests_per_user_day"]),
    }
    rows = []
    for users in DAILY_USERS:
        for stage, (rate, units_per_user) in per_core.items():
            core_hours = users * units_per_user / rate / 3600
            rows.append({"users_per_day": users, "stage": stage, "units_per_core_second": rate,
                         "units_per_user": units_per_user, "core_hours": core_hours,
                         "cores": math.ceil(core_hours / window_hours), "usd_per_day": core_hours * core_hour_usd})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPOSITORY / "runs" / "demo")
    parser.add_argument("--users", type=int, default=512, help="serving users prompted and ranked")
    parser.add_argument("--world-users", type=int, default=5_000, help="users of the generated world")
    parser.add_argument("--window-hours", type=float, default=4.0, help="the daily run's window")
    parser.add_argument("--core-hour-usd", type=float, default=0.04, help="assumed price of a core-hour")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not (args.run / "llm_choice").exists():
        print(f"{args.run} has no completed demo (llm_choice/ is missing): run `make demo` first")
        return 0
    from llm_predictor.stages import run_world

    world = run_world(args.run)
    load = daily_load(world)
    rates = {"world_users_per_second": world_rate(args.run, args.world_users), **llm_rates(args.run, world, args.users),
             **market_rate(args.run)}
    rows = plan(rates, load, args.window_hours, args.core_hour_usd)
    console = Console(width=200)
    measured = Table(title=f"measured on {args.run} (load average {os.getloadavg()[0]:.1f})")
    for column in ("figure", "value"):
        measured.add_column(column)
    for name, value in {**rates, **load}.items():
        measured.add_row(name, f"{value:,.3f}" if isinstance(value, float) else str(value))
    console.print(measured)
    planned = Table(title=f"cores to finish a day in {args.window_hours:g} h; cost at an assumed "
                          f"${args.core_hour_usd}/core-hour")
    for column in ("users/day", "stage", "per core-second", "per user", "core-hours", "cores", "USD/day"):
        planned.add_column(column, justify="right")
    for row in rows:
        planned.add_row(f"{row['users_per_day']:,}", row["stage"], f"{row['units_per_core_second']:,.1f}",
                        f"{row['units_per_user']:.3f}", f"{row['core_hours']:,.1f}", f"{row['cores']:,}",
                        f"{row['usd_per_day']:,.2f}")
    console.print(planned)
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "load": load, "plan": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
