"""`adsim bench`: run a benchmark suite, record its baselines, check a run against them (issue #16)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="CI regression benchmarks: run a suite, record baselines, check a run against them.",
                  no_args_is_help=True)
BASELINES = Path(__file__).resolve().parent / "baselines"
SuiteOption = Annotated[str, typer.Option(help="the scenario: ci (benchmarks/suites.py)")]
SeedOption = Annotated[int, typer.Option(help="the world's and the market's seed")]


def _baselines_path(suite: str, path: Path | None) -> Path:
    return path if path is not None else BASELINES / f"{suite}.json"


def _measure(suite: str, seed: int, console: Console):
    from benchmarks.suites import measure

    console.print(f"suite {suite}, seed {seed} ...")
    try:
        return measure(suite, seed)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


@app.command("run")
def run(suite: SuiteOption = "ci", seed: SeedOption = 0,
        out: Annotated[Path, typer.Option(help="where to write the measurements (JSON)")] = Path("bench.json")) -> None:
    """Measure a suite once and print its figures."""
    console = Console()
    measurements = _measure(suite, seed, console)
    table = Table(title=f"adsim bench run --suite {suite} --seed {seed}")
    for column in ("metric", "value", "kind", "better", "unit"):
        table.add_column(column, justify="right" if column == "value" else "left")
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
                                                              "<suite>.json)")] = None) -> None:
    """Run the suite once per seed and write baselines whose tolerances come from the runs' spread."""
    from benchmarks.harness import record as record_baselines
    from benchmarks.harness import write_baselines

    console = Console()
    try:
        seed_list = [int(seed) for seed in seeds.split(",") if seed.strip()]
        recorded = record_baselines([_measure(suite, seed, console) for seed in seed_list])
    except ValueError as error:
        console.print(f"[red]error:[/red] --seeds {seeds!r}: {error}")
        raise typer.Exit(2) from error
    path = write_baselines(_baselines_path(suite, baselines), suite, recorded)
    console.print(f"wrote {len(recorded)} baselines from {len(seed_list)} runs to {path}")


@app.command("check")
def check(suite: SuiteOption = "ci", seed: SeedOption = 0,
          baselines: Annotated[Path | None, typer.Option(help="recorded baselines (default benchmarks/baselines/"
                                                             "<suite>.json)")] = None,
          out: Annotated[Path, typer.Option(help="where to write the verdicts (JSON)")] = Path("bench.json")) -> None:
    """Run the suite and compare it with the baselines; exit 1 if any metric regressed. Each check's values are
    appended to <out>_history.jsonl beside --out, and from the second run on <out>_trend.png plots them."""
    from benchmarks.harness import append_history, plot_trend, read_baselines
    from benchmarks.harness import check as check_run

    console = Console()
    try:
        recorded = read_baselines(_baselines_path(suite, baselines))
    except FileNotFoundError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    verdicts = check_run(recorded, _measure(suite, seed, console))
    table = Table(title=f"adsim bench check --suite {suite} --seed {seed}")
    for column in ("metric", "baseline", "now", "tolerance", "verdict"):
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
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
