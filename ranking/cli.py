"""`adsim rank`: DCN-v2 ctcvr/vtcvr rankers and the LLM-feature lift (paper 3.6.2, 4.4.1, Table 5)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from synthetic_data.config_io import ConfigError, load_config, to_dict
from synthetic_data.run_folder import RunFolder, file_digest

app = typer.Typer(help="DCN-v2 ctcvr/vtcvr rankers and the LLM-feature lift", no_args_is_help=True)
console = Console()

RunOption = Annotated[Path, typer.Option(help="run folder, e.g. runs/demo")]
WorldOption = Annotated[Optional[Path], typer.Option(help="world folder (default: <run>/world)")]
ConfigOption = Annotated[Optional[Path], typer.Option(help="TOML config file")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: section.field=value")]
ForceOption = Annotated[bool, typer.Option(help="redo the stage even if it is complete with this config")]
PredictionsOption = Annotated[Path, typer.Option(
    help="predictions parquet (schema PREDICTIONS): the LLM's, or a baseline's; its `source` column names it")]
InterestsOption = Annotated[Optional[Path], typer.Option(help="predicted interests parquet (PREDICTED_INTERESTS)")]
ImpressionsOption = Annotated[Optional[Path], typer.Option(
    help="logged impressions parquet (default: <run>/impressions/impressions.parquet)")]


def _config(cls, path: Path | None, overrides: list[str] | None):
    try:
        return load_config(cls, path=path, overrides=overrides)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _read(path: Path, table: str):
    import polars as pl

    from synthetic_data.schema import SCHEMAS, validate

    if not path.exists():
        console.print(f"[red]error:[/red] {path} does not exist")
        raise typer.Exit(2)
    return validate(pl.read_parquet(path), SCHEMAS[table], str(path))


def _sources(predictions) -> str:
    return ", ".join(sorted(predictions["source"].unique().drop_nulls().to_list())) or "unknown"


@app.command()
def impressions(run: RunOption = Path("runs/demo"), world: WorldOption = None, config: ConfigOption = None,
                set_: SetOption = None, force: ForceOption = False) -> None:
    """Log ad impressions with click/ctcvr/vtcvr outcomes from the world's true response model."""
    from synthetic_data.impressions import (LoggingRunConfig, generate_impressions, impression_summary,
                                            world_clock)
    from synthetic_data.response import build_response_state
    from synthetic_data.schema import load_world

    resolved = _config(LoggingRunConfig, config, set_)
    world_dir = world or run / "world"
    folder = RunFolder(run)
    config_dict = {**to_dict(resolved), "world": str(world_dir)}
    if not force and folder.is_complete("impressions", config_dict):
        console.print(f"[green]impressions: {run / 'impressions'} is complete with this config; skipping[/green]")
        return
    started = time.perf_counter()
    start_date, drift_period_days = world_clock(world_dir)
    loaded = load_world(world_dir)
    state = build_response_state(loaded, start_date, drift_period_days, resolved.response)
    logged, truth = generate_impressions(loaded, state, resolved.impressions)
    out = folder.stage_dir("impressions")
    logged.write_parquet(out / "impressions.parquet")
    truth.write_parquet(out / "impressions_truth.parquet")
    summary = {**impression_summary(logged), "seconds": round(time.perf_counter() - started, 2)}
    folder.complete("impressions", config_dict, ["impressions.parquet", "impressions_truth.parquet"], summary)
    console.print(summary)


@app.command("baseline-predictions")
def baseline_predictions(run: RunOption = Path("runs/demo"), world: WorldOption = None,
                         list_length: Annotated[int, typer.Option(help="advertisers per list")] = 20,
                         users_of: Annotated[Optional[Path], typer.Option(
                             help="keep only the (user, anchor) rows of this predictions parquet, e.g. the "
                                  "LLM's held-out users, so both lists feed the same impressions")] = None,
                         stage: Annotated[str, typer.Option(help="stage folder")] = "ranking_inputs") -> None:
    """Write a non-LLM predictions table (most recent advertisers per user and label anchor date)."""
    from synthetic_data.schema import load_world

    from ranking.recency_predictions import recent_advertiser_predictions

    folder = RunFolder(run)
    world_dir = world or run / "world"
    config = {"list_length": list_length, "world": str(world_dir),
              "users_of": None if users_of is None else {"path": str(users_of), "digest": file_digest(users_of)}}
    if folder.is_complete(stage, config):
        console.print(f"[green]{stage}: complete with this config; skipping[/green]")
        return
    loaded = load_world(world_dir, include_truth=False)
    anchors = loaded.labels["anchor_date"].unique().to_list()
    predictions = recent_advertiser_predictions(loaded.events, loaded.advertisers, anchors, list_length)
    if users_of is not None:
        keys = _read(users_of, "predictions").select("user_id", "anchor_date").unique()
        predictions = predictions.join(keys, on=["user_id", "anchor_date"], how="semi")
    path = folder.stage_dir(stage) / "recent_advertisers.parquet"
    predictions.write_parquet(path)
    folder.complete(stage, config, [path.name], {"rows": predictions.height, "source": _sources(predictions),
                                                 "anchors": sorted(map(str, anchors))})
    console.print(f"wrote {path} ({predictions.height:,} rows, source recent_advertisers)")


def _inputs(run: Path, world: Path | None, impressions_path: Path | None, predictions: Path,
            interests: Path | None, users: str = "all"):
    from synthetic_data.schema import load_world

    loaded = load_world(world or run / "world", include_truth=False)
    logged = _read(impressions_path or run / "impressions" / "impressions.parquet", "impressions")
    predicted = _read(predictions, "predictions")
    if users == "predicted":
        logged = logged.join(predicted.select("user_id").unique(), on="user_id", how="semi")
        if logged.is_empty():
            console.print(f"[red]error:[/red] users=predicted, but no impression is of a user in {predictions}")
            raise typer.Exit(2)
    predicted_interests = _read(interests, "predicted_interests") if interests else None
    return loaded, logged, predicted, predicted_interests


def _splits_with_both_classes(logged, resolved) -> dict:
    """The time splits of the impressions; exits 2, naming split and task, where a label is constant."""
    from ranking.features import split_by_time
    from ranking.pipeline import require_both_classes

    splits = split_by_time(logged, resolved.features)
    try:
        require_both_classes(splits, tuple(resolved.tasks))
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    return splits


def _stage_config(resolved, impressions_path, predictions, interests, run) -> dict:
    """The resolved config plus the identity (path and content) of every input table."""
    inputs = {"impressions": impressions_path or run / "impressions" / "impressions.parquet",
              "predictions": predictions, "interests": interests}
    return {**to_dict(resolved), **{name: None if path is None else {"path": str(path), "digest": file_digest(path)}
                                    for name, path in inputs.items() if path is None or Path(path).exists()}}


@app.command()
def train(run: RunOption = Path("runs/demo"), predictions: PredictionsOption = ...,
          interests: InterestsOption = None, world: WorldOption = None, impressions: ImpressionsOption = None,
          config: ConfigOption = None, set_: SetOption = None, force: ForceOption = False,
          seed: Annotated[int, typer.Option(help="seed of the ranker's weights and batch order")] = 0) -> None:
    """Train the DCN ranker with LLM features (and LightGBM / logistic baselines); test metrics to the run."""
    from ranking.config import RankingConfig
    from ranking.pipeline import train_ranker

    resolved = _config(RankingConfig, config, set_)
    folder = RunFolder(run)
    config_dict = {**_stage_config(resolved, impressions, predictions, interests, run), "seed": seed}
    if not force and folder.is_complete("ranking", config_dict):
        console.print(f"[green]ranking: {run / 'ranking'} is complete with this config; skipping[/green]")
        return
    started = time.perf_counter()
    loaded, logged, predicted, predicted_interests = _inputs(run, world, impressions, predictions, interests,
                                                             resolved.users)
    _splits_with_both_classes(logged, resolved)  # a clear exit, not a traceback, on too thin data
    ranker, metrics = train_ranker(loaded, logged, predicted, predicted_interests, resolved, seed, progress=True)
    metrics["prediction_source"] = _sources(predicted)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    out = folder.stage_dir("ranking")
    ranker.save(out / "ranker.pt")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    folder.complete("ranking", config_dict, ["ranker.pt", "metrics.json"],
                    {"prediction_source": metrics["prediction_source"], "seconds": metrics["seconds"]})
    _print_metrics(metrics)


def _print_metrics(metrics: dict) -> None:
    table = Table(title=f"ranking test metrics (predictions: {metrics['prediction_source']})")
    for column in ("model", "task", "log loss", "AUC", "PR-AUC", "ECE", "ECE raw", "positives"):
        table.add_column(column)
    for model in ("dcn", "lightgbm", "logistic_regression"):
        for task, row in metrics.get(model, {}).items():
            raw = row.get("ece_before_calibration")
            table.add_row(model, task, f"{row['log_loss']:.5f}", f"{row['auc']:.4f}", f"{row['pr_auc']:.4f}",
                          f"{row['ece']:.5f}", "" if raw is None else f"{raw:.5f}", f"{row['positives']:,}")
    console.print(table)


@app.command("eval")
def evaluate_lift(run: RunOption = Path("runs/demo"), predictions: PredictionsOption = ...,
                  interests: InterestsOption = None, world: WorldOption = None,
                  impressions: ImpressionsOption = None, config: ConfigOption = None, set_: SetOption = None,
                  force: ForceOption = False,
                  stage: Annotated[str, typer.Option(help="stage folder (one per compared predictions table)")]
                  = "ranking_eval") -> None:
    """The Table 5 analogue: with vs without LLM features vs a random-list control, over seeds."""
    from ranking.config import RankingConfig
    from ranking.lift import lift_markdown, run_lift, summarize_lift
    from ranking.pipeline import fit_builder

    resolved = _config(RankingConfig, config, set_)
    folder = RunFolder(run)
    config_dict = _stage_config(resolved, impressions, predictions, interests, run)
    if not force and folder.is_complete(stage, config_dict):
        console.print(f"[green]{stage}: {run / stage} is complete with this config; skipping[/green]")
        typer.echo((run / stage / "table5.md").read_text())
        return
    started = time.perf_counter()
    loaded, logged, predicted, predicted_interests = _inputs(run, world, impressions, predictions, interests,
                                                             resolved.users)
    builder = fit_builder(loaded, resolved)
    splits = _splits_with_both_classes(logged, resolved)
    results, scores = run_lift(builder, splits, predicted, predicted_interests, resolved, progress=True)
    summary = summarize_lift(scores, resolved.bootstrap_replicates, resolved.bootstrap_seed)
    source = _sources(predicted)
    out = folder.stage_dir(stage)
    results.write_parquet(out / "lift_results.parquet")
    scores.write_parquet(out / "lift_scores.parquet")
    summary.write_parquet(out / "lift_summary.parquet")
    markdown = lift_markdown(summary, source, users=logged["user_id"].n_unique(), restricted=resolved.users)
    (out / "table5.md").write_text(markdown + "\n")
    folder.complete(stage, config_dict, ["lift_results.parquet", "lift_scores.parquet", "lift_summary.parquet",
                                         "table5.md"],
                    {"prediction_source": source, "seconds": round(time.perf_counter() - started, 1),
                     "rows": {name: rows.height for name, rows in splits.items()}})
    typer.echo(markdown)
