"""`adsim retrieval`: two-tower training, faiss indexes and candidate generators.

`train` fits the two-tower on one objective (train-split users, events before the evaluation
window), `index` exports item embeddings to faiss, `generate` runs every generator for the
held-out users at the window start, `eval` scores them on the window, `compare` puts the
evaluated objectives side by side. Each writes a stage folder `<run>/retrieval_<step>_<objective>/`
and skips when complete with an unchanged config.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from synthetic_data.config_io import ConfigError, load_config, to_dict
from synthetic_data.run_folder import RunFolder

app = typer.Typer(help="two-tower training, faiss indexes and candidate generators", no_args_is_help=True)
console = Console()

RunOption = Annotated[Path, typer.Option(help="run folder, e.g. runs/demo")]
WorldOption = Annotated[Optional[Path], typer.Option(help="world folder (default: <run>/world)")]
ConfigOption = Annotated[Optional[Path], typer.Option(help="TOML config file (sections of RetrievalConfig)")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: section.field=value")]
ForceOption = Annotated[bool, typer.Option(help="redo the stage even if it is complete with this config")]
ImpressionsOption = Annotated[Optional[Path], typer.Option(
    help="logged impressions parquet (default: <run>/impressions/impressions.parquet if present; "
         "without it, engagement events stand in for impressions and clicks)")]
PredictionsOption = Annotated[Optional[Path], typer.Option(
    help="advertiser predictions parquet (PREDICTIONS) for the LLM-advertiser generator; "
         "without it that generator is skipped")]


def _config(path: Path | None, overrides: list[str] | None):
    from retrieval.config import RetrievalConfig

    try:
        return load_config(RetrievalConfig, path=path, overrides=overrides)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _stage(step: str, config) -> str:
    return f"retrieval_{step}_{config.training.objective}"


def _skip(folder: RunFolder, stage: str, config_dict: dict, force: bool) -> bool:
    if not force and folder.is_complete(stage, config_dict):
        console.print(f"[green]{stage}: complete with this config; skipping[/green]")
        return True
    return False


def _require(folder: RunFolder, stage: str, command: str) -> Path:
    if folder.stage_record(stage) is None:
        console.print(f"[red]error:[/red] {folder.root / stage} is missing: run `{command}` first")
        raise typer.Exit(2)
    return folder.root / stage


def _world(run: Path, world: Path | None):
    from synthetic_data.schema import load_world

    directory = world or run / "world"
    try:
        return load_world(directory, include_truth=False)  # models never read *_truth tables
    except FileNotFoundError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _window(loaded, config):
    from retrieval.evaluate import evaluation_anchor, window_start

    anchor = evaluation_anchor(loaded.events, config.evaluation, loaded.labels)
    return anchor, window_start(anchor)


@app.command()
def train(run: RunOption = Path("runs/demo"), world: WorldOption = None, config: ConfigOption = None,
          set_: SetOption = None, impressions: ImpressionsOption = None, force: ForceOption = False) -> None:
    """Train the two-tower on `training.objective` (train-split users, before the eval window)."""
    import polars as pl

    from synthetic_data.schema import IMPRESSIONS, validate

    from retrieval.train import TwoTowerRetriever

    resolved = _config(config, set_)
    impressions_path = impressions or run / "impressions" / "impressions.parquet"
    has_impressions = impressions_path.exists()
    folder, stage = RunFolder(run), _stage("train", resolved)
    config_dict = {**{k: to_dict(resolved)[k] for k in ("features", "model", "training", "evaluation")},
                   "world": str(world or run / "world"),
                   "impressions": str(impressions_path) if has_impressions else None}
    if _skip(folder, stage, config_dict, force):
        return
    if impressions is not None and not has_impressions:
        console.print(f"[red]error:[/red] {impressions} does not exist")
        raise typer.Exit(2)
    if not has_impressions and resolved.training.objective != "conversions":
        console.print("[yellow]no impressions table: engagement events stand in for impressions and "
                      "clicks (dwell proxied by the time to the next event)[/yellow]")
    loaded = _world(run, world)
    logged = (validate(pl.read_parquet(impressions_path), IMPRESSIONS, str(impressions_path))
              if has_impressions else None)
    anchor, start = _window(loaded, resolved)
    train_users = loaded.splits.filter(pl.col("split") == "train")["user_id"]
    retriever = TwoTowerRetriever(resolved).fit(loaded.events, loaded.users, loaded.items, train_users,
                                                start, logged, progress=True)
    retriever.save(folder.stage_dir(stage) / "model.pt")
    summary = {**to_dict(retriever.summary_), "anchor_date": str(anchor), "trained_before": str(start)}
    folder.complete(stage, config_dict, ["model.pt"], summary)
    console.print(summary)


@app.command()
def index(run: RunOption = Path("runs/demo"), world: WorldOption = None, config: ConfigOption = None,
          set_: SetOption = None, force: ForceOption = False) -> None:
    """Export the catalog's item embeddings to faiss and measure approximate recall against exact."""
    from retrieval.index import ItemIndex
    from retrieval.train import TwoTowerRetriever

    resolved = _config(config, set_)
    folder, stage = RunFolder(run), _stage("index", resolved)
    model_dir = _require(folder, _stage("train", resolved), "adsim retrieval train")
    config_dict = {"index": to_dict(resolved)["index"],
                   "model": folder.stage_record(model_dir.name)["config_hash"]}
    if _skip(folder, stage, config_dict, force):
        return
    loaded = _world(run, world)
    retriever = TwoTowerRetriever.load(model_dir / "model.pt", loaded.items)
    started = time.perf_counter()
    item_index = ItemIndex(resolved.index).fit(retriever.item_vectors(), retriever.items_.advertiser_ids)
    seconds = time.perf_counter() - started
    outputs = item_index.save(folder.stage_dir(stage))
    summary = {"kind": item_index.kind_, "items": len(item_index.vectors_),
               "build_seconds": round(seconds, 3), "recall@100_vs_exact": item_index.measured_recall(100)}
    folder.complete(stage, config_dict, [p.name for p in outputs], summary)
    console.print(summary)


@app.command()
def generate(run: RunOption = Path("runs/demo"), world: WorldOption = None, config: ConfigOption = None,
             set_: SetOption = None, predictions: PredictionsOption = None, force: ForceOption = False) -> None:
    """Candidates of every generator for the held-out users at the start of the eval window."""
    import polars as pl

    from synthetic_data.schema import PREDICTIONS, validate

    from retrieval.evaluate import evaluation_requests
    from retrieval.generators import LlmAdvertiserGenerator, MainGenerator, PopularityGenerator
    from retrieval.index import ItemIndex
    from retrieval.train import TwoTowerRetriever

    resolved = _config(config, set_)
    folder, stage = RunFolder(run), _stage("candidates", resolved)
    model_dir = _require(folder, _stage("train", resolved), "adsim retrieval train")
    index_dir = _require(folder, _stage("index", resolved), "adsim retrieval index")
    config_dict = {"generators": to_dict(resolved)["generators"],
                   "index": folder.stage_record(index_dir.name)["config_hash"],
                   "predictions": str(predictions) if predictions else None}
    if _skip(folder, stage, config_dict, force):
        return
    loaded = _world(run, world)
    anchor, start = _window(loaded, resolved)
    retriever = TwoTowerRetriever.load(model_dir / "model.pt", loaded.items)
    item_index = ItemIndex.load(index_dir, resolved.index)
    history = retriever.history(loaded.events.filter(pl.col("ts") < start), loaded.users)
    generators = [MainGenerator(retriever, item_index, history, resolved.generators),
                  PopularityGenerator(resolved.generators, history).fit(loaded.events, loaded.items, start)]
    if predictions is not None:
        if not predictions.exists():
            console.print(f"[red]error:[/red] {predictions} does not exist")
            raise typer.Exit(2)
        predicted = validate(pl.read_parquet(predictions), PREDICTIONS, str(predictions))
        generators.append(LlmAdvertiserGenerator(retriever, item_index, history, predicted,
                                                 resolved.generators))
    else:
        console.print("[yellow]no --predictions: the LLM-advertiser generator is skipped[/yellow]")
    requests = evaluation_requests(loaded.splits, anchor)
    candidates = pl.concat([generator.generate(requests) for generator in generators])
    out = folder.stage_dir(stage)
    candidates.write_parquet(out / "candidates.parquet")
    summary = {"anchor_date": str(anchor), "requests": requests.height,
               **{f"candidates_{s}": n for s, n in candidates["source"].value_counts().iter_rows()},
               **{f"llm_{k}": v for g in generators for k, v in getattr(g, "stats_", {}).items()}}
    folder.complete(stage, config_dict, ["candidates.parquet"], summary)
    console.print(summary)


@app.command("eval")
def evaluate_command(run: RunOption = Path("runs/demo"), world: WorldOption = None, config: ConfigOption = None,
                     set_: SetOption = None, force: ForceOption = False) -> None:
    """Recall@K, advertiser coverage and overlap of each generator on the held-out window."""
    import polars as pl

    from retrieval.evaluate import evaluate, evaluation_requests, relevant_items

    resolved = _config(config, set_)
    folder, stage = RunFolder(run), _stage("eval", resolved)
    candidates_dir = _require(folder, _stage("candidates", resolved), "adsim retrieval generate")
    config_dict = {"evaluation": to_dict(resolved)["evaluation"],
                   "candidates": folder.stage_record(candidates_dir.name)["config_hash"]}
    if _skip(folder, stage, config_dict, force):
        return
    loaded = _world(run, world)
    anchor, _ = _window(loaded, resolved)
    candidates = pl.read_parquet(candidates_dir / "candidates.parquet")
    requests = evaluation_requests(loaded.splits, anchor)
    relevant = relevant_items(loaded.events, requests, anchor, resolved.evaluation.window_days)
    frames = {source: candidates.filter(pl.col("source") == source)
              for source in candidates["source"].unique(maintain_order=True)}
    advertisers = loaded.items["advertiser_id"].n_unique()
    metrics = evaluate(frames, relevant, "two_tower", advertisers, resolved.evaluation)
    out = folder.stage_dir(stage)
    metrics.write_parquet(out / "metrics.parquet")
    summary = {"anchor_date": str(anchor), "requests_with_relevant_items": relevant["request_id"].n_unique()}
    folder.complete(stage, config_dict, ["metrics.parquet"], summary)
    _print_metrics(metrics, f"retrieval, objective {resolved.training.objective}, anchor {anchor}")


@app.command()
def compare(run: RunOption = Path("runs/demo")) -> None:
    """Side-by-side metrics of every evaluated objective (`retrieval_eval_<objective>` stages)."""
    import polars as pl

    from retrieval.config import OBJECTIVES
    from retrieval.evaluate import compare_objectives, markdown_table

    folder = RunFolder(run)
    evaluated = {objective: folder.stage_record(f"retrieval_eval_{objective}")["config_hash"]
                 for objective in OBJECTIVES if folder.stage_record(f"retrieval_eval_{objective}")}
    if not evaluated:
        console.print(f"[red]error:[/red] no retrieval_eval_* stage in {run}: run `adsim retrieval eval` first")
        raise typer.Exit(2)
    config = {"objectives": evaluated}  # the upstream evaluations: a new one redoes the comparison
    if folder.is_complete("retrieval_compare", config):
        console.print("[green]retrieval_compare: complete with these evaluations; skipping[/green]")
        return
    metrics = {objective: pl.read_parquet(run / f"retrieval_eval_{objective}" / "metrics.parquet")
               for objective in evaluated}
    examples = {objective: folder.stage_record(f"retrieval_train_{objective}")["summary"]["examples"]
                for objective in metrics}
    table = compare_objectives(metrics, COMPARED_METRICS).with_columns(
        training_examples=pl.col("objective").replace_strict(examples, return_dtype=pl.Int64))
    path = folder.stage_dir("retrieval_compare") / "objectives.md"
    path.write_text("# Two-tower objectives (held-out users, next window)\n\n" + markdown_table(table))
    folder.complete("retrieval_compare", config, [path.name], {})
    rich_table = Table(title=f"two-tower objectives, {run}")
    for column in table.columns:
        rich_table.add_column(column, justify="right")
    for row in table.iter_rows():
        rich_table.add_row(*map(_cell, row))
    console.print(rich_table)
    console.print(f"wrote {path}")


COMPARED_METRICS = ("recall@20_engaged", "recall@100_engaged", "recall@100_converted",
                    "advertiser_recall@100_converted", "advertiser_coverage", "candidates_not_in_reference",
                    "relevant_found_only_here")


def _print_metrics(metrics, title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    for generator in metrics["generator"]:
        table.add_column(generator, justify="right")
    for column in metrics.columns[1:]:
        values = metrics[column].to_list()
        table.add_row(column, *map(_cell, values))
    console.print(table)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
