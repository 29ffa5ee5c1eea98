"""`adsim world`: generate a world into `runs/<name>/world/` and print its summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from synthetic_data.config_io import ConfigError, to_dict
from synthetic_data.presets import PRESETS, resolve_world_config
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import WORLD_TABLES, World, load_world

console = Console()


def world_summary(world: World) -> dict:
    """Counts per table, label coverage per anchor, conversion-type and mechanism mix."""
    events = world.events
    conversions = events.filter(pl.col("conversion_type").is_not_null())
    n_users = world.users.height
    coverage = (world.labels.group_by("anchor_date").agg(
        pl.len().alias("labelled_users"), pl.col("in_v0").sum().alias("v0"), pl.col("in_v1").sum().alias("v1"))
        .sort("anchor_date"))
    return {
        "rows": {name: getattr(world, name).height for name in WORLD_TABLES},
        "events_by_kind": dict(events["kind"].cast(pl.String).value_counts().sort("kind").iter_rows()),
        "label_coverage": [
            {"anchor_date": str(r["anchor_date"]), "labelled_users": r["labelled_users"],
             "share_of_users": round(r["labelled_users"] / max(n_users, 1), 4), "v0": r["v0"], "v1": r["v1"]}
            for r in coverage.iter_rows(named=True)],
        "conversion_type_mix": {k: round(v / max(conversions.height, 1), 4) for k, v in
                                conversions["conversion_type"].value_counts().sort("conversion_type").iter_rows()},
        "conversion_mechanism_mix": {k: round(v / max(world.conversions_truth.height, 1), 4) for k, v in
                                     world.conversions_truth["mechanism"].cast(pl.String).value_counts()
                                     .sort("mechanism").iter_rows()},
        "eval_users": int((world.splits["split"] == "eval").sum()),
    }


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


def write_world_run(config, out: Path, progress: bool = True, force: bool = False) -> tuple[World, dict]:
    """Generate the world into `out/world/` unless an identical one is already there."""
    from synthetic_data.world import generate_world

    run = RunFolder(out)
    config_dict = to_dict(config)
    if not force and run.is_complete("world", config_dict):
        console.print(f"[green]world: {out / 'world'} is complete with this config; skipping[/green]")
        return load_world(out / "world"), run.stage_record("world")["summary"]
    started = time.perf_counter()
    world = generate_world(config, progress=progress)
    paths = world.write(run.stage_dir("world"))
    summary = world_summary(world)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    run.complete("world", config_dict, [p.name for p in paths], summary)
    return world, summary


def world(
    out: Annotated[Path, typer.Option(help="run folder, e.g. runs/demo (the world goes to <out>/world/)")] = Path("runs/demo"),
    preset: Annotated[Optional[str], typer.Option(help=f"named preset: {', '.join(PRESETS)}")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML world config (on top of --preset, if given)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: section.field=value")] = None,
    force: Annotated[bool, typer.Option(help="regenerate even if the run folder has this world")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Generate a synthetic marketplace world (Parquet tables + manifest.json)."""
    try:
        resolved = resolve_world_config(preset, config, set_)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    started = time.perf_counter()
    _, summary = write_world_run(resolved, out, progress=not quiet, force=force)
    print_summary(summary, time.perf_counter() - started)
    console.print(f"wrote {out / 'world'} and {out / 'manifest.json'}")
