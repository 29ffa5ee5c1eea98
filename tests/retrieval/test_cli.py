"""`adsim retrieval`: the train -> index -> generate -> eval chain on the tiny world, stage skipping,
and clear errors for bad config and missing stages."""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from retrieval.cli import app
from synthetic_data.schema import CANDIDATES, PREDICTIONS, conform, validate

SMALL = ["--set", "training.epochs=1", "--set", "training.batch_size=128",
         "--set", "training.uniform_negatives=128", "--set", "generators.main_top_n=50"]


def _predictions(tiny_world, path):
    """A hand-made PREDICTIONS table: each eval user's most recent advertisers before each label anchor."""
    eval_users = tiny_world.splits.filter(pl.col("split") == "eval")["user_id"]
    rows = (tiny_world.events.drop_nulls("advertiser_id").filter(pl.col("user_id").is_in(eval_users.implode()))
            .join(tiny_world.labels.select("anchor_date").unique(), how="cross")
            .filter(pl.col("ts").dt.date() <= pl.col("anchor_date"))
            .sort("ts", descending=True).unique(["user_id", "anchor_date", "advertiser_id"], maintain_order=True)
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id", "anchor_date"))
            .filter(pl.col("rank") <= 5)
            .select("user_id", "anchor_date", "rank", "advertiser_id",
                    advertiser_name=pl.lit("name"), source=pl.lit("recent_advertisers")))
    conform(rows, PREDICTIONS, "predictions").write_parquet(path)
    return path


def test_the_cli_chain_writes_each_stage_and_skips_when_complete(tiny_world, tiny_world_dir, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    common = ["--run", str(run), "--world", str(tiny_world_dir), *SMALL]
    predictions = _predictions(tiny_world, tmp_path / "predictions.parquet")
    for command in (["train"], ["index"], ["generate", "--predictions", str(predictions)], ["eval"]):
        result = runner.invoke(app, [*command, *common])
        assert result.exit_code == 0, result.output
    candidates = validate(pl.read_parquet(run / "retrieval_candidates_clicks" / "candidates.parquet"),
                          CANDIDATES, "candidates")
    assert set(candidates["source"]) == {"two_tower", "popularity", "llm_advertiser"}
    metrics = pl.read_parquet(run / "retrieval_eval_clicks" / "metrics.parquet")
    assert set(metrics["generator"]) == {"two_tower", "popularity", "llm_advertiser"}
    assert metrics["recall@100_engaged"].is_between(0, 1).all()
    index_summary = json.loads((run / "retrieval_index_clicks" / "stage.json").read_text())["summary"]
    assert index_summary["kind"] == "exact" and index_summary["recall@100_vs_exact"] == 1.0
    compared = runner.invoke(app, ["compare", "--run", str(run)])
    assert compared.exit_code == 0, compared.output
    assert "| clicks | two_tower |" in (run / "retrieval_compare" / "objectives.md").read_text()
    again = runner.invoke(app, ["train", *common])
    assert again.exit_code == 0 and "skipping" in again.output


def test_cli_errors_name_the_problem(tiny_world_dir, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--run", str(tmp_path), "--world", str(tiny_world_dir),
                              "--set", "training.objective=likes"])
    assert bad.exit_code == 2 and "training.objective" in bad.output
    missing = runner.invoke(app, ["index", "--run", str(tmp_path / "empty"), "--world", str(tiny_world_dir)])
    assert missing.exit_code == 2 and "adsim retrieval train" in missing.output
