"""`adsim world`: generate a world into `runs/<name>/world/` and print its summary."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from synthetic_data.config_io import ConfigError, to_dict
from synthetic_data.presets import PRESETS, resolve_world_config
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import WORLD_TABLES

console = Console()


def print_summary(summary: dict, seconds: float | None = None) -> None:
    table = Table(title="world summary" + (f" ({seconds:.1f} s)" if seconds is not None else ""))
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, rows in summary["rows"].items():
        table.add_row(f"rows: {name}", f"{rows:,}")
    for kind, rows in summary["events_by_kind"].items():
        table.add_row(f"events: {kind}", f"{rows:,}")
    for row in summary["label_coverage"]:
        table.add_row(f"labels @ {row['anchor_date']}",
                      f"{row['labelled_users']:,} users ({row['share_of_users']:.1%}); V0 {row['v0']:,}, V1 {row['v1']:,}")
    table.add_row("conversion types", ", ".join(f"{k} {v:.1%}" for k, v in summary["conversion_type_mix"].items()))
    table.add_row("conversion mechanisms (truth)",
                  ", ".join(f"{k} {v:.1%}" for k, v in summary["conversion_mechanism_mix"].items()))
    table.add_row("eval users", f"{summary['eval_users']:,}")
    console.print(table)


def write_world_run(config, out: Path, progress: bool = True, force: bool = False, workers: int = 1) -> dict:
    """Generate the world into `out/world/` unless an identical one is there; returns its summary."""
    from synthetic_data.world import write_world

    run = RunFolder(out)
    config_dict = to_dict(config)
    if not force and run.is_complete("world", config_dict):
        console.print(f"[green]world: {out / 'world'} is complete with this config; skipping[/green]")
        return run.stage_record("world")["summary"]
    started = time.perf_counter()
    _, summary = write_world(config, run.stage_dir("world"), progress=progress, workers=workers)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    run.complete("world", config_dict, [f"{name}.parquet" for name in WORLD_TABLES], summary)
    return summary


def world(
    out: Annotated[Path, typer.Option(help="run folder, e.g. runs/demo (the world goes to <out>/world/)")] = Path("runs/demo"),
    preset: Annotated[Optional[str], typer.Option(help=f"named preset: {', '.join(PRESETS)}")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML world config (on top of --preset, if given)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: section.field=value")] = None,
    force: Annotated[bool, typer.Option(help="regenerate even if the run folder has this world")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    workers: Annotated[int, typer.Option(help="processes generating user chunks (0 = all cores); "
                                              "the output does not depend on it")] = 0,
) -> None:
    """Generate a synthetic marketplace world (Parquet tables + manifest.json)."""
    try:
        resolved = resolve_world_config(preset, config, set_)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    started = time.perf_counter()
    summary = write_world_run(resolved, out, progress=not quiet, force=force,
                              workers=workers or os.cpu_count() or 1)
    print_summary(summary, time.perf_counter() - started)
    console.print(f"wrote {out / 'world'} and {out / 'manifest.json'}")
