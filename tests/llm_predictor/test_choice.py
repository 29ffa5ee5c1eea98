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


def test_validation_baselines_predict_the_labels_and_the_ranker_never_trains_on_a_validation_user(
        tiny_world, monkeypatch):
    from llm_predictor import baselines
    from llm_predictor.choice import baseline_pairs, validation_baselines

    config = resolve_config("nano", None, ["behaviour.validation_users=100"])
    labels = validation_labels(tiny_world, config)
    fitted = []
    fit = baselines.PairRanker.fit
    monkeypatch.setattr(baselines.PairRanker, "fit",
                        lambda self, world, train: fitted.append(train) or fit(self, world, train))
    found = validation_baselines(tiny_world, labels, config)
    assert set(found) == {"most_recent", "most_recent_allowed", "lightgbm_pairs_prompt"}
    held_out = set(validation_users(tiny_world, 100, config.seed)["user_id"])
    assert len(fitted) == 1 and fitted[0].height > 0 and not set(fitted[0]["user_id"]) & held_out
    keys = labels.select("user_id", "anchor_date").unique()
    for name, table in found.items():
        assert table.select("user_id", "anchor_date").unique().join(keys, on=["user_id", "anchor_date"],
                                                                    how="anti").is_empty(), name
    # the restricted list keeps most recent's order among fewer names
    assert found["most_recent_allowed"].height < found["most_recent"].height
    assert baseline_pairs(("behaviour_ranked_open", "behaviour_ranked")) == [
        ("behaviour_ranked_open", "most_recent"), ("behaviour_ranked_open", "lightgbm_pairs_prompt"),
        ("behaviour_ranked", "most_recent_allowed")]
