"""LLM predictor speed: prompts compiled per second (features + template, goal >= 20,000/s), model
outputs parsed and converted per second, (from `llm_predictor.throughput`) training and
generation tokens per second, and, given a run with trained models, serving users ranked per second and the
text-generating methods' decoding, packed against `generate`.

    python benchmarks/bench_llm.py                          # demo world, generated in memory
    python benchmarks/bench_llm.py --world runs/demo/world --skip-model
    python benchmarks/bench_llm.py --world runs/demo/world --skip-model --ranking-run runs/demo
    python benchmarks/bench_llm.py --world runs/demo/world --skip-model --decoding-run runs/demo

Rates are best-of-`--repeats`; "per CPU-second" divides by the process CPU time, which is less
sensitive than wall time to other jobs sharing the machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from llm_predictor.convert import NameConverter, convert_predictions
from llm_predictor.features import compile_features, preset_pool_names
from llm_predictor.prompts import list_target, render
from synthetic_data.config_io import ConfigError
from synthetic_data.schema import load_world

PROMPT_GOAL = 20_000  # prompts per second (issue 3)


def timed(function: Callable[[], object], repeats: int) -> tuple[object, float, float]:
    """(result, best wall seconds, CPU seconds of that run) over `repeats` runs."""
    best = (None, float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best[1]:
            best = (result, wall, cpu)
    return best


def load_or_generate(world_dir: Path | None, preset_name: str):
    if world_dir is not None:
        return load_world(world_dir, include_truth=False)
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    return generate_world(preset(preset_name), progress=False)


def prompt_rows(world, repeats: int, pool_size: int) -> list[dict]:
    """Feature compilation, rendering and both together for every user at the eval anchor."""
    anchor = world.labels["anchor_date"].max()
    users = world.users["user_id"]
    features, compile_wall, compile_cpu = timed(lambda: compile_features(world, anchor, users), repeats)
    pool = preset_pool_names(world, anchor, pool_size)
    rows = [{"measure": "feature compilation", "items": users.len(), "wall_s": compile_wall, "cpu_s": compile_cpu}]
    for template in ("sft", "grpo"):
        prompts, wall, cpu = timed(lambda t=template: render(features, pool, t), repeats)
        rows.append({"measure": f"render {template}", "items": users.len(), "wall_s": wall, "cpu_s": cpu,
                     "note": f"mean {prompts.str.len_chars().mean():.0f} characters"})
        rows.append({"measure": f"prompts compiled ({template}: features + render)", "items": users.len(),
                     "wall_s": compile_wall + wall, "cpu_s": compile_cpu + cpu, "goal": PROMPT_GOAL})
    return rows


def conversion_row(world, repeats: int) -> dict:
    """Parse and convert one 20-name XML output per user (a fifth of the names perturbed)."""
    names = world.advertisers["name"].to_list()
    users = world.users["user_id"]
    texts = [list_target([n.upper() if (u + i) % 5 == 0 else n for i, n in
                          enumerate(names[u % len(names):][:20] or names[:20])], ["interest"])
             for u in users.to_list()]
    generations = pl.DataFrame({"user_id": users, "anchor_date": [world.labels["anchor_date"].max()] * users.len(),
                                "text": texts})
    converter = NameConverter(world.advertisers)
    _, wall, cpu = timed(lambda: convert_predictions(generations, converter, source="bench"), repeats)
    return {"measure": "outputs parsed + converted", "items": users.len(), "wall_s": wall, "cpu_s": cpu}


def print_rate_table(console: Console, rows: list[dict]) -> None:
    table = Table(title="LLM predictor data path (per second)")
    for column in ("measure", "items", "per second (wall)", "per CPU-second", "goal", "note"):
        table.add_column(column)
    for row in rows:
        goal = row.get("goal")
        rate = row["items"] / row["wall_s"]
        table.add_row(row["measure"], f"{row['items']:,}", f"{rate:,.0f}", f"{row['items'] / row['cpu_s']:,.0f}",
                      f">= {goal:,} {'met' if rate >= goal else 'NOT met'}" if goal else "", row.get("note", ""))
    console.print(table)


def print_model_table(console: Console, size: str) -> None:
    if importlib.util.find_spec("llm_predictor.throughput") is None:
        console.print("llm_predictor.throughput is absent: no training/generation rows")
        return
    from llm_predictor.throughput import measure

    print_rows(console, f"LLM training and generation ({size} model)", measure(size=size))


def print_rows(console: Console, title: str, rows: list[dict]) -> None:
    """One table of same-keyed rows (floats to 3 decimals, ints with thousands separators)."""
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                        for v in row.values()])
    console.print(table)


def print_ranking_table(console: Console, run_root: Path, method_name: str, users: int) -> None:
    """Users ranked per second by `method_name` (a ranked method) on `users` of the run's serving users."""
    from dataclasses import replace

    from llm_predictor.config import METHODS, trained_config
    from llm_predictor.stages import method_decoding, method_prompts, model_dir, prediction_keys, run_world
    from llm_predictor.throughput import ranking_rows
    from synthetic_data.run_folder import RunFolder

    ranked = [name for name, method in METHODS.items() if method.is_ranked]
    if method_name not in ranked:
        raise SystemExit(f"--ranking-method {method_name!r} does not rank names; pick one of {ranked}")
    run = RunFolder(run_root)
    config = trained_config(run, method_name, "small")  # the prompts its model was trained on
    method = METHODS[method_name]
    decoding = method_decoding(method, config.predict.decoding)
    world = run_world(run_root)
    keys = prediction_keys(world, replace(config, serving_max_users=users), "serving")
    prompts = method_prompts(run, world, config, method, keys, config.features)
    rows = ranking_rows(model_dir(run, method_name), prompts["prompt"].to_list(), prompts["allowed_names"].to_list(),
                        decoding.name_end, decoding.num_return_sequences, config.predict.batch_size)
    print_rows(console, f"Name ranking, {method_name}, {keys.height:,} serving users of {run_root}", rows)


def print_decoding_table(console: Console, run_root: Path, methods: list[str], users: int) -> None:
    """Packed decoding against `generate` for each text-generating method of `methods` on the run's first
    `users` eval users (the prompts `llm eval` builds)."""
    from llm_predictor.config import METHODS, trained_config
    from llm_predictor.evaluate import evaluation_requests
    from llm_predictor.stages import method_decoding, method_prompts, model_dir, run_world
    from llm_predictor.throughput import decoding_rows
    from synthetic_data.run_folder import RunFolder

    run = RunFolder(run_root)
    world = run_world(run_root)
    for method_name in methods:
        config = trained_config(run, method_name, "small")
        method = METHODS[method_name]
        keys = evaluation_requests(world, config.eval.evaluation).head(users)
        prompts = method_prompts(run, world, config, method, keys, config.features)
        rows = decoding_rows(model_dir(run, method_name), prompts["prompt"].to_list(),
                             method_decoding(method, config.predict.decoding), config.predict.batch_size)
        print_rows(console, f"Decoding, {method_name} (small preset), {keys.height:,} eval users of {run_root}; "
                            "outputs_alike: share of the outputs, each beam or sample one", rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", help="world preset to generate when --world is not given")
    parser.add_argument("--world", type=Path, default=None, help="a run's world/ folder to load instead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=50)
    parser.add_argument("--skip-model", action="store_true", help="only the prompt and conversion rows")
    parser.add_argument("--model-size", default="small")
    parser.add_argument("--ranking-run", type=Path, default=None,
                        help="a run with trained LLM stages: time name ranking on its serving users")
    parser.add_argument("--ranking-method", default="behaviour_ranked_open")
    parser.add_argument("--ranking-users", type=int, default=512)
    parser.add_argument("--decoding-run", type=Path, default=None,
                        help="a run with trained LLM stages: time packed decoding against generate on its eval users")
    parser.add_argument("--decoding-method", action="append", default=None,
                        help="a method that generates text (repeatable; default: sft_single_beam, "
                             "sft_single_sampling and zero_shot)")
    parser.add_argument("--decoding-users", type=int, default=440)
    args = parser.parse_args(argv)
    from llm_predictor.stages import check_run_folder

    for flag, run_root in (("--ranking-run", args.ranking_run), ("--decoding-run", args.decoding_run)):
        if run_root is None:
            continue
        try:
            check_run_folder(run_root)
        except FileNotFoundError as error:
            raise SystemExit(f"{flag}: {error}") from None
    decoding_methods = args.decoding_method or ["sft_single_beam", "sft_single_sampling", "zero_shot"]
    from llm_predictor.config import METHODS

    ranked = [name for name in decoding_methods if name not in METHODS or METHODS[name].is_ranked]
    if ranked:
        raise SystemExit(f"--decoding-method {ranked} is unknown or ranks names; pick methods that generate text, "
                         "e.g. sft_single_beam, sft_single_sampling, zero_shot (the demo's)")
    if args.decoding_users < 1:
        raise SystemExit(f"--decoding-users must be >= 1, got {args.decoding_users}")
    console = Console(width=150)
    world = load_or_generate(args.world, args.preset)
    from llm_predictor.throughput import processor_name

    console.print(f"world: {world.users.height:,} users, {world.events.height:,} events; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores ({processor_name()})")
    print_rate_table(console, prompt_rows(world, args.repeats, args.pool_size) + [conversion_row(world, args.repeats)])
    if not args.skip_model:
        print_model_table(console, args.model_size)
    try:
        if args.ranking_run is not None:
            print_ranking_table(console, args.ranking_run, args.ranking_method, args.ranking_users)
        if args.decoding_run is not None:
            print_decoding_table(console, args.decoding_run, decoding_methods, args.decoding_users)
    except ConfigError as error:  # e.g. a method whose model the run has not trained
        raise SystemExit(f"error: {error}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
