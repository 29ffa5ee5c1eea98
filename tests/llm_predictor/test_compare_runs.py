"""Tests of llm_predictor/compare_runs.py: two runs' generations of one method, paired on the labels both
predicted; runs of different worlds and missing generations refused."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from llm_predictor.compare_runs import compare_runs
from llm_predictor.config import resolve_config


def _run(tmp_path, name, world_dir, generations: pl.DataFrame | None):
    root = tmp_path / name
    shutil.copytree(world_dir, root / "world")
    if generations is not None:
        directory = root / "llm_eval" / "generations" / "behaviour_ranked_open"
        directory.mkdir(parents=True)
        generations.write_parquet(directory / "epoch_00000.parquet")
        (directory / "epochs.json").write_text(json.dumps({"epochs": 1}))  # the plan generate_predictions writes
    return root


@pytest.fixture(scope="module")
def labelled(tiny_world):
    """40 (user, anchor) pairs with exactly one V1 label each, and its advertiser's name."""
    names = tiny_world.advertisers.select("advertiser_id", "name")
    single = (tiny_world.labels.filter(pl.col("in_v1")).group_by("user_id", "anchor_date")
              .agg(pl.col("advertiser_id").first(), pl.len()).filter(pl.col("len") == 1)
              .sort("user_id", "anchor_date").head(40))
    assert single.height == 40
    return single.join(names, on="advertiser_id").sort("user_id", "anchor_date")


def _generations(labelled: pl.DataFrame, right: int, wrong_name: str) -> pl.DataFrame:
    """Rank-1 names: the label's for the first `right` pairs, `wrong_name` for the others."""
    names = [name if i < right else wrong_name for i, name in enumerate(labelled["name"].to_list())]
    return labelled.select("user_id", "anchor_date").with_columns(
        text=pl.Series(names), num_tokens=pl.lit(1), rank=pl.lit(1))


def test_the_difference_is_paired_on_the_pairs_both_runs_were_asked_for(tmp_path, tiny_world_dir, tiny_world,
                                                                       labelled):
    unlabelled = tiny_world.advertisers.join(labelled, on="advertiser_id", how="anti")["name"][0]
    # 30 hits of 30 against 10; the reference's 10 more pairs (hits) are left out, and an unparsed output is a miss
    run = _run(tmp_path, "tokens", tiny_world_dir, _generations(labelled.head(30), 29, "<answer>garbled"))
    reference = _run(tmp_path, "text", tiny_world_dir, pl.concat([_generations(labelled.head(30), 10, unlabelled),
                                                                  _generations(labelled.tail(10), 10, unlabelled)]))
    table = compare_runs(run, reference, "llm_eval", ["behaviour_ranked_open"], resolve_config("nano", None, None))
    row = table.row(0, named=True)
    assert (row["method"], row["n_labels"]) == ("behaviour_ranked_open", 30)
    assert row["delta_recall_at_1"] == pytest.approx((29 - 10) / 30)
    assert 0 < row["delta_recall_at_1_low"] < row["delta_recall_at_1"] < row["delta_recall_at_1_high"]
    assert compare_runs(run, run, "llm_eval", ["behaviour_ranked_open"],
                        resolve_config("nano", None, None))["delta_recall_at_20"].to_list() == [0.0]


def test_runs_of_different_worlds_and_missing_generations_are_refused(tmp_path, tiny_world_dir, labelled):
    config = resolve_config("nano", None, None)
    run = _run(tmp_path, "a", tiny_world_dir, _generations(labelled, 40, "x"))
    empty = _run(tmp_path, "b", tiny_world_dir, None)
    with pytest.raises(FileNotFoundError, match="adsim llm eval"):
        compare_runs(run, empty, "llm_eval", ["behaviour_ranked_open"], config)
    with pytest.raises(ValueError, match="llm_predict_"):
        compare_runs(run, run, "llm_sft", ["behaviour_ranked_open"], config)
    (run / "llm_eval" / "generations" / "behaviour_ranked_open" / "epochs.json").write_text(json.dumps({"epochs": 2}))
    with pytest.raises(FileNotFoundError, match="lacks 1 of its 2 epochs"):  # an interrupted llm eval
        compare_runs(run, run, "llm_eval", ["behaviour_ranked_open"], config)
    (run / "llm_eval" / "generations" / "behaviour_ranked_open" / "epochs.json").write_text(json.dumps({"epochs": 1}))
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        compare_runs(run, tmp_path / "nowhere", "llm_eval", ["behaviour_ranked_open"], config)
    predicted = run / "llm_predict_grpo_ranked_eval"
    predicted.mkdir()
    _generations(labelled, 40, "x").write_parquet(predicted / "generations.parquet")
    with pytest.raises(FileNotFoundError, match="no finished stage"):  # generations without a stage record
        compare_runs(run, run, predicted.name, ["grpo_ranked"], config)
    (predicted / "stage.json").write_text(json.dumps({"config": {"method": "grpo_ranked"}}))
    with pytest.raises(ValueError, match="holds grpo_ranked's predictions"):
        compare_runs(run, run, predicted.name, ["behaviour_ranked_open"], config)
    assert compare_runs(run, run, predicted.name, ["grpo_ranked"], config)["n_labels"].to_list() == [40]
    (empty / "world" / "stage.json").write_text(json.dumps({"stage": "world", "config_hash": "another"}))
    with pytest.raises(ValueError, match="different worlds"):
        compare_runs(run, empty, "llm_eval", ["behaviour_ranked_open"], config)
