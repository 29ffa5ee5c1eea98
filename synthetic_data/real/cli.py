"""Commands for real-data runs (issue 4): adapt a dataset, run the baselines, score a run.

Runnable as `python -m synthetic_data.real.cli`; the lead mounts `world` as
`adsim world --real amazon --data PATH --out runs/X`.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="real-data runs: adapt, baselines, llm-baselines, sasrec, llm-predict-sample, results",
                  no_args_is_help=True)


@app.command()
def world(
    data: Path = typer.Option(..., help="folder with <name>.item.json and <name>.inter.json"),
    out: Path = typer.Option(..., help="run folder, e.g. runs/amazon_scientific"),
    config: Path = typer.Option(None, help="TOML file of AmazonConfig fields"),
    set_: list[str] = typer.Option([], "--set", help="field=value overrides, e.g. --set end_date=2019-01-01 "
                                   "or --set 'placeholder_brands=[\"generic\", \"unknown\", \"oem\"]'"),
) -> None:
    """Adapt Amazon 2018 purchase sequences into `<out>/world/` (skips when already complete).

    Brand spellings that share a `normalise_name` key are one advertiser; placeholder brands
    ("Generic", "Unknown", ...: the `placeholder_brands` field) count as missing.
    """
    from synthetic_data.config_io import load_config
    from synthetic_data.real.amazon import AmazonConfig, write_amazon_world

    adapted = write_amazon_world(data, out, load_config(AmazonConfig, config, overrides=set_))
    labels = adapted.labels["role"].value_counts().sort("role")
    typer.echo(f"{out}/world: {adapted.users.height} users, {adapted.events.height} purchases, "
               f"{adapted.advertisers.height} brands; labels by role: {dict(labels.iter_rows())}")


@app.command()
def baselines(run: Path = typer.Option(..., help="run folder holding world/")) -> None:
    """Popularity and most-recent-brand predictions for the validation and test labels."""
    from synthetic_data.real.amazon_results import write_baselines

    predictions = write_baselines(run)
    typer.echo(f"{run}/baselines/predictions.parquet: {predictions.height} rows")


@app.command("llm-baselines")
def llm_baselines(
    run: Path = typer.Option(..., help="run folder holding a leave-one-out world/"),
    set_: list[str] = typer.Option([], "--set", help="BaselineConfig overrides, e.g. --set n_estimators=100"),
) -> None:
    """Most-recent (popularity-filled) and LightGBM-pair predictions for the test labels."""
    from synthetic_data.config_io import load_config, to_dict
    from synthetic_data.real.trained_baselines import default_config, write_trained_baselines

    config = default_config()
    predictions = write_trained_baselines(run, load_config(type(config), base=to_dict(config), overrides=set_))
    typer.echo(f"{run}/llm_baselines/predictions.parquet: {predictions.height} rows")


@app.command()
def sasrec(
    run: Path = typer.Option(..., help="run folder holding a leave-one-out world/"),
    set_: list[str] = typer.Option([], "--set", help="SASRecConfig overrides, e.g. --set max_epochs=50"),
) -> None:
    """SASRec over brand IDs: fit on the training purchases, early-stop on the validation labels,
    predict the validation and test labels (`<run>/sasrec/`; skips when complete)."""
    from llm_predictor.sasrec import SASRecConfig, run_sasrec
    from synthetic_data.config_io import load_config

    predictions = run_sasrec(run / "world", run, load_config(SASRecConfig, overrides=set_))
    typer.echo(f"{run}/sasrec/predictions.parquet: {predictions.height} rows")


@app.command("llm-predict-sample")
def llm_predict_sample(
    run: Path = typer.Option(..., help="run folder holding a leave-one-out world/ and trained llm_* stages"),
    method: str = typer.Option("grpo_ranked", help="an `adsim llm` method, e.g. grpo_ranked or sft_list"),
    n_users: int = typer.Option(200, help="test users sampled (seeded) for the LLM"),
    seed: int = typer.Option(0, help="seed of the user sample"),
    preset: str = typer.Option("small", help="`adsim llm` size preset"),
    set_: list[str] = typer.Option([], "--set", help="`adsim llm` overrides, e.g. predict.decoding.strategy=greedy"),
) -> None:
    """An LLM method's next-brand lists for a seeded sample of test users (scored on that sample)."""
    from llm_predictor.config import METHODS, resolve_config
    from synthetic_data.real.llm_sample import predict_test_sample, sample_stage

    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {sorted(METHODS)}")
    summary = predict_test_sample(run, resolve_config(preset, None, set_), method, n_users, seed)
    typer.echo(f"{run}/{sample_stage(method, n_users)}: {summary}")


@app.command()
def results(
    run: Path = typer.Option(..., help="run folder holding world/ and <stage>/predictions.parquet"),
    reference: list[str] = typer.Option(["popularity", "sasrec"], "--reference",
                                        help="a method every other is paired against (repeatable; default "
                                             "popularity and sasrec)"),
) -> None:
    """Score every method's predictions: `<run>/results/next_brand.{md,parquet}`, with each method's paired
    Recall@K difference from each `--reference` present."""
    from synthetic_data.real.amazon_results import ResultsConfig, write_results

    table = write_results(run, ResultsConfig(references=tuple(reference)))
    missing = sorted(set(reference) - set(table["method"]))
    if missing:
        typer.echo(f"note: no method {missing} in {run}, so no difference against it; its methods: "
                   f"{sorted(set(table['method']))}", err=True)
    typer.echo((run / "results" / "next_brand.md").read_text())


if __name__ == "__main__":
    app()
