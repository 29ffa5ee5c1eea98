"""The LLM as the simulator's nightly job: a sampled budget of active users, counted outputs, fresh anchors."""

from __future__ import annotations

import shutil
from datetime import timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from llm_predictor.cli import app as llm_app
from simulator.nightly import LlmPredictor, NightlyRefresh
from synthetic_data import schema


@pytest.fixture(scope="module")
def llm_run(tiny_world_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("nightly_llm")
    shutil.copytree(tiny_world_dir, root / "world")
    for command in (["pretrain"], ["behaviour"], ["sft", "--target", "list"]):
        result = CliRunner().invoke(llm_app, [*command, "--run", str(root), "--preset", "nano", "--quiet"])
        assert result.exit_code == 0, result.output
    return root


def test_llm_nightly_reinfers_a_seeded_budget_of_active_users(llm_run, tiny_world):
    predictor = LlmPredictor(llm_run, tiny_world, preset="nano", method="sft_list", max_users=3)
    job = NightlyRefresh(predictor, tiny_world.events)
    day = tiny_world.events["ts"].max().date() + timedelta(days=1)
    active = tiny_world.users["user_id"].head(8).to_numpy()
    clicks = pl.DataFrame({"user_id": active, "ts": [tiny_world.events["ts"].max() + timedelta(hours=30)] * 8,
                           "item_id": tiny_world.items["item_id"].head(8), "advertiser_id":
                           tiny_world.items["advertiser_id"].head(8), "kind": ["engagement"] * 8,
                           "value": [None] * 8}, schema_overrides={"value": pl.Float64})
    new_events = clicks.with_columns(pl.int_range(pl.len()).cast(pl.Int64).alias("event_id"), *[
        pl.lit(None, dtype).alias(name) for name, dtype in schema.EVENTS.items() if name not in clicks.columns
        and name != "event_id"]).select(list(schema.EVENTS)).cast(schema.EVENTS)
    fresh = job(day, new_events)
    assert predictor.counts_["outputs"] == 3  # the budget, not all 8 active users
    assert set(fresh["user_id"]) <= set(active.tolist()) and fresh["anchor_date"].unique().to_list() in ([day], [])
    assert predictor.counts_["parsed"] <= predictor.counts_["outputs"]  # malformed outputs counted, not hidden
    again = LlmPredictor(llm_run, tiny_world, preset="nano", method="sft_list", max_users=3)
    NightlyRefresh(again, tiny_world.events)(day, new_events)
    assert again.counts_ == predictor.counts_  # seeded sample and decoding


def test_llm_nightly_needs_a_trained_model(tmp_path, tiny_world):
    with pytest.raises(FileNotFoundError, match="train the LLM"):
        LlmPredictor(tmp_path, tiny_world, preset="nano", method="grpo")


def test_llm_nightly_prompts_as_the_model_was_trained(llm_run, tmp_path, tiny_world):
    """Prompt settings given at training time, not the preset's, reach the nightly prompts."""
    run = tmp_path / "run"
    shutil.copytree(llm_run, run)
    result = CliRunner().invoke(llm_app, ["sft", "--target", "list", "--run", str(run), "--preset", "nano", "--quiet",
                                          "--set", "features.budget_characters=300", "--set", "preset_pool_size=5"])
    assert result.exit_code == 0, result.output
    config = LlmPredictor(run, tiny_world, preset="nano", method="sft_list").config
    assert config.features.budget_characters == 300 and config.preset_pool_size == 5
    assert LlmPredictor(llm_run, tiny_world, preset="nano", method="sft_list").config.preset_pool_size == 8


def test_the_nightly_llm_job_names_its_method_and_a_missing_choice_is_refused(llm_run, tiny_world):
    from llm_predictor.choice import CHOSEN
    from simulator.stack import nightly_job

    assert nightly_job("llm:sft_list", tiny_world, llm_run).predict.method == "sft_list"
    with pytest.raises(ValueError, match="adsim llm choose"):
        nightly_job(f"llm:{CHOSEN}", tiny_world, llm_run)
    with pytest.raises(ValueError, match="llm:METHOD"):
        nightly_job("llm_sft_list", tiny_world, llm_run)
