"""`adsim rank impressions|baseline-predictions|train|eval` on the tiny world: outputs, labels, skipping."""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from ranking.cli import app
from synthetic_data.config_io import to_dict
from synthetic_data.presets import preset
from synthetic_data.run_folder import RunFolder
from synthetic_data.schema import WORLD_TABLES

SMALL = ["--set", "train.epochs=1", "--set", "features.validation_days=2", "--set", "features.test_days=3",
         "--set", "reference_models=[]"]


def test_rank_commands_write_their_stages(tiny_world, tmp_path):
    run = tmp_path / "run"
    folder = RunFolder(run)
    tiny_world.write(folder.stage_dir("world"))
    folder.complete("world", to_dict(preset("tiny")), [f"{name}.parquet" for name in WORLD_TABLES])
    runner = CliRunner()

    logged = runner.invoke(app, ["impressions", "--run", str(run), "--set", "impressions.n_days=12"])
    assert logged.exit_code == 0, logged.output
    baseline = runner.invoke(app, ["baseline-predictions", "--run", str(run), "--list-length", "5"])
    assert baseline.exit_code == 0, baseline.output
    predictions = run / "ranking_inputs" / "recent_advertisers.parquet"

    trained = runner.invoke(app, ["train", "--run", str(run), "--predictions", str(predictions), *SMALL])
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((run / "ranking" / "metrics.json").read_text())
    assert metrics["prediction_source"] == "recent_advertisers"
    assert set(metrics["dcn"]) == {"ctcvr", "vtcvr"} and "ece_before_calibration" in metrics["dcn"]["ctcvr"]
    assert (run / "ranking" / "ranker.pt").exists()

    evaluated = runner.invoke(app, ["eval", "--run", str(run), "--predictions", str(predictions),
                                    "--set", "seeds=[0, 1]", *SMALL])
    assert evaluated.exit_code == 0, evaluated.output
    table = (run / "ranking_eval" / "table5.md").read_text()
    assert "source `recent_advertisers`" in table and "random_control vs without_llm" in table
    summary = pl.read_parquet(run / "ranking_eval" / "lift_summary.parquet")
    test_rows = json.loads((run / "ranking_eval" / "stage.json").read_text())["summary"]["rows"]["test"]
    assert (summary["test_rows"] == test_rows).all() and (summary["test_positives"] > 0).all()
    assert f" / {test_rows:,} / " in table  # positives / impressions / users on every row
    assert pl.read_parquet(run / "ranking_eval" / "lift_scores.parquet").height == 2 * 3 * 2 * test_rows

    again = runner.invoke(app, ["eval", "--run", str(run), "--predictions", str(predictions),
                                "--set", "seeds=[0, 1]", *SMALL])
    assert "skipping" in again.output

    # the held-out comparison: a list for a few users only, both tables on exactly those users' impressions
    few = pl.read_parquet(predictions).filter(pl.col("user_id").is_in(
        pl.read_parquet(predictions)["user_id"].unique().sort().head(150).to_list()))
    few_path = tmp_path / "few.parquet"
    few.write_parquet(few_path)
    restricted = runner.invoke(app, ["baseline-predictions", "--run", str(run), "--list-length", "5",
                                     "--users-of", str(few_path), "--stage", "ranking_inputs_few"])
    assert restricted.exit_code == 0, restricted.output
    written = pl.read_parquet(run / "ranking_inputs_few" / "recent_advertisers.parquet")
    assert set(written["user_id"]) == set(few["user_id"])
    scoped = runner.invoke(app, ["eval", "--run", str(run), "--predictions", str(few_path), "--stage", "lift_few",
                                 "--set", "seeds=[0, 1]", "--set", "users=predicted", *SMALL])
    assert scoped.exit_code == 0, scoped.output
    rows = json.loads((run / "lift_few" / "stage.json").read_text())["summary"]["rows"]
    everyone = json.loads((run / "ranking_eval" / "stage.json").read_text())["summary"]["rows"]
    assert 0 < sum(rows.values()) < sum(everyone.values())
    shown = pl.read_parquet(run / "impressions" / "impressions.parquet").filter(pl.col("user_id").is_in(few["user_id"]))
    assert f"Impressions of {shown['user_id'].n_unique()} users (those the lists cover)" in (
        run / "lift_few" / "table5.md").read_text()

    few.filter(pl.col("user_id") != few["user_id"].min()).write_parquet(few_path)  # same path, new lists
    redone = runner.invoke(app, ["eval", "--run", str(run), "--predictions", str(few_path), "--stage", "lift_few",
                                 "--set", "seeds=[0, 1]", "--set", "users=predicted", *SMALL])
    assert redone.exit_code == 0 and "skipping" not in redone.output  # a changed input is never stale

    two = few.filter(pl.col("user_id").is_in(few["user_id"].unique().sort().head(2).to_list()))
    two.write_parquet(tmp_path / "two.parquet")
    too_few = runner.invoke(app, ["eval", "--run", str(run), "--predictions", str(tmp_path / "two.parquet"),
                                  "--stage", "lift_two", "--set", "users=predicted", *SMALL])
    assert too_few.exit_code == 2 and "positive" in too_few.output and "split" in too_few.output
    too_few_train = runner.invoke(app, ["train", "--run", str(run), "--predictions", str(tmp_path / "two.parquet"),
                                        "--set", "users=predicted", *SMALL])
    assert too_few_train.exit_code == 2 and "positive" in too_few_train.output

    bad = runner.invoke(app, ["train", "--run", str(run), "--predictions", str(predictions), "--set", "tasks=['ctr']"])
    assert bad.exit_code == 2 and "tasks" in bad.output
