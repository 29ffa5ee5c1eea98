"""`adsim bench`: run a benchmark suite, record its baselines, check a run against them (issue #16)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="CI regression benchmarks: run a suite, record baselines, check a run against them.",
                  no_args_is_help=True)
BASELINES = Path(__file__).resolve().parent / "baselines"
SuiteOption = Annotated[str, typer.Option(help="the scenario: ci (benchmarks/suites.py)")]
SeedOption = Annotated[int, typer.Option(help="the models' and the market's seed")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="an experiment TOML read over the suite's market scenario: your arms and `plugins` "
                     "(docs/plugins.md)")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="experiment override section.field=value")]
TABLE_WIDTH = 132  # a CI log is not a terminal: rich's default of 80 columns would cut the figures short


def _console() -> Console:
    return Console(width=max(Console().width, TABLE_WIDTH))


def _baselines_path(suite: str, path: Path | None) -> Path:
    return path if path is not None else BASELINES / f"{suite}.json"


def _experiment(config: Path | None, overrides: list[str] | None, console: Console):
    """The suite's market scenario with `config` and `overrides` read over it (a ConfigError exits 2)."""
    from benchmarks.suites import ci_experiment
    from simulator.config import ExperimentConfig
    from synthetic_data.config_io import ConfigError, load_config, to_dict

    try:
        return load_config(ExperimentConfig, path=config, base=to_dict(ci_experiment()), overrides=overrides)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error


def _measure(suite: str, seed: int, experiment, console: Console):
    from benchmarks.suites import measure
    from synthetic_data.config_io import ConfigError

    console.print(f"suite {suite}, seed {seed} ...")
    try:
        return measure(suite, seed, experiment=experiment)
    except (ValueError, ConfigError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error


@app.command("run")
def run(suite: SuiteOption = "ci", seed: SeedOption = 0, config: ConfigOption = None, set_: SetOption = None,
        out: Annotated[Path, typer.Option(help="where to write the measurements (JSON)")] = Path("bench.json")) -> None:
    """Measure a suite once and print its figures."""
    console = _console()
    measurements = _measure(suite, seed, _experiment(config, set_, console), console)
    table = Table(title=f"adsim bench run --suite {suite} --seed {seed}")
    for column in ("metric", "value", "kind", "better", "unit"):
        table.add_column(column, justify="right" if column == "value" else "left", no_wrap=column == "metric")
    for m in measurements:
        table.add_row(m.name, f"{m.value:.4g}", m.kind, m.direction, m.unit)
    console.print(table)
    out.write_text(json.dumps({"suite": suite, "seed": seed, "measurements": [asdict(m) for m in measurements]},
                              indent=1) + "\n")
    console.print(f"wrote {out}")


@app.command("record")
def record(suite: SuiteOption = "ci",
           seeds: Annotated[str, typer.Option(help="comma-separated seeds (>= 4): their spread sets the tolerances")
                         ] = "0,1,2,3,4,5",
           baselines: Annotated[Path | None, typer.Option(help="file to write (default benchmarks/baselines/"
                                                              "<suite>.json)")] = None,
           config: ConfigOption = None, set_: SetOption = None) -> None:
    """Run the suite once per seed and write baselines whose tolerances come from the runs' spread, with the
    experiment they measured (a check must measure the same one)."""
    from benchmarks.harness import record as record_baselines
    from benchmarks.harness import write_baselines
    from synthetic_data.config_io import to_dict

    console = _console()
    experiment = _experiment(config, set_, console)
    try:
        seed_list = [int(seed) for seed in seeds.split(",") if seed.strip()]
        recorded = record_baselines([_measure(suite, seed, experiment, console) for seed in seed_list])
    except ValueError as error:
        console.print(f"[red]error:[/red] --seeds {seeds!r}: {error}")
        raise typer.Exit(2) from error
    path = write_baselines(_baselines_path(suite, baselines), suite, recorded, to_dict(experiment))
    console.print(f"wrote {len(recorded)} baselines from {len(seed_list)} runs to {path}")
    blunt = [f"{b.name} ±{b.tolerance:.0%}" for b in recorded.values() if b.kind == "speed" and b.tolerance >= 0.5]
    if blunt:
        console.print(f"[yellow]warning:[/yellow] a 2x slowdown (-50%) would pass these speed checks, whose runs "
                      f"spread too much: {', '.join(blunt)}; record more seeds or on a quieter machine")


@app.command("check")
def check(suite: SuiteOption = "ci", seed: SeedOption = 0,
          baselines: Annotated[Path | None, typer.Option(help="recorded baselines (default benchmarks/baselines/"
                                                             "<suite>.json)")] = None,
          out: Annotated[Path, typer.Option(help="where to write the verdicts (JSON)")] = Path("bench.json"),
          config: ConfigOption = None, set_: SetOption = None) -> None:
    """Run the suite and compare it with the baselines; exit 1 if any metric regressed, 2 if the baselines were
    recorded with another experiment. Each check's values are appended to <out>_history.jsonl beside --out, and
    from the second run on <out>_trend.png plots them."""
    from benchmarks.harness import append_history, plot_trend, read_baselines, recorded_experiment
    from benchmarks.harness import check as check_run
    from synthetic_data.config_io import to_dict

    console = _console()
    path = _baselines_path(suite, baselines)
    experiment = _experiment(config, set_, console)
    try:
        recorded = read_baselines(path)
        differences = _differences(recorded_experiment(path), to_dict(experiment))
    except FileNotFoundError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error
    if differences:
        console.print(f"[red]error:[/red] {escape(str(path))} was recorded with another experiment "
                      f"({escape('; '.join(differences))}); check with the --config it was recorded with, or record "
                      f"this experiment into a file of its own: adsim bench record --baselines OTHER.json"
                      f"{f' --config {config}' if config else ''}")
        raise typer.Exit(2)
    verdicts = check_run(recorded, _measure(suite, seed, experiment, console))
    table = Table(title=f"adsim bench check --suite {suite} --seed {seed}")
    for column in ("metric", "baseline", "now", "tolerance", "verdict"):
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right",
                         no_wrap=column == "metric")
    for verdict in verdicts:
        tolerance = (f"±{verdict.tolerance:.0%}" if verdict.kind == "speed" else f"±{verdict.tolerance:.3g}")
        table.add_row(verdict.name, f"{verdict.baseline:.4g}", f"{verdict.now:.4g}", tolerance,
                      f"[red]REGRESSION: {verdict.reason}[/red]" if verdict.is_regression else "ok")
    console.print(table)
    out.write_text(json.dumps({"suite": suite, "seed": seed, "verdicts": [asdict(v) for v in verdicts]},
                              indent=1) + "\n")
    runs = append_history(out.with_name(f"{out.stem}_history.jsonl"), seed, verdicts)
    if len(runs) >= 2:
        console.print(f"trend over {len(runs)} runs: "
                      f"{plot_trend(runs, recorded, out.with_name(f'{out.stem}_trend.png'))}")
    regressions = [verdict.name for verdict in verdicts if verdict.is_regression]
    if regressions:
        console.print(f"[red]{len(regressions)} regression(s):[/red] {', '.join(regressions)}; wrote {out}")
        raise typer.Exit(1)
    console.print(f"no regression in {len(verdicts)} metrics; wrote {out}")


def _differences(recorded: dict, now: dict, prefix: str = "") -> list[str]:
    """The fields (dotted) where two resolved experiment configs differ, with both values."""
    differences = []
    for key in sorted(set(recorded) | set(now)):
        was, is_ = recorded.get(key), now.get(key)
        if isinstance(was, dict) and isinstance(is_, dict):
            differences += _differences(was, is_, f"{prefix}{key}.")
        elif was != is_:
            differences.append(f"{prefix}{key}: recorded {was!r}, now {is_!r}")
    return differences
