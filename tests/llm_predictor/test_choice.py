"""The served method's choice: validation labels come from held-out train users only, and bad settings are refused."""

from __future__ import annotations

import polars as pl
import pytest

from llm_predictor.behaviour import validation_users
from llm_predictor.choice import ChoiceConfig, chosen_method, validation_labels
from llm_predictor.config import resolve_config
from synthetic_data.config_io import ConfigError
from synthetic_data.run_folder import RunFolder


def test_validation_labels_are_the_held_out_train_users_v1_labels_at_every_anchor(tiny_world):
    config = resolve_config("nano", None, ["behaviour.validation_users=100"])
    labels = validation_labels(tiny_world, config)
    held_out = validation_users(tiny_world, 100, config.seed)["user_id"].to_list()
    expected = tiny_world.labels.filter(pl.col("user_id").is_in(held_out) & pl.col("in_v1"))
    assert labels.height == expected.height > 0
    assert set(labels["user_id"]) <= set(held_out)
    assert labels["anchor_date"].n_unique() == tiny_world.labels["anchor_date"].n_unique() > 1
    eval_users = tiny_world.splits.filter(pl.col("split") == "eval")["user_id"].to_list()
    assert not set(labels["user_id"]) & set(eval_users)


def test_choice_settings_and_a_run_without_a_choice_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="choice.methods"):
        ChoiceConfig(methods=("behaviour_ranked", "no_such_method"))
    with pytest.raises(ConfigError, match="choice.k"):
        ChoiceConfig(k=0)
    with pytest.raises(ConfigError, match="adsim llm choose"):
        chosen_method(RunFolder(tmp_path))
