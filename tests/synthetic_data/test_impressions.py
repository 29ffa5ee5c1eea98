"""Logged impressions: contract, label invariants, logged propensities and sampled rates vs truth."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from synthetic_data.config_io import ConfigError
from synthetic_data.impressions import ImpressionConfig, generate_impressions, impression_summary
from synthetic_data.response import build_response_state
from synthetic_data.schema import IMPRESSIONS, IMPRESSIONS_TRUTH, validate

from tests.synthetic_data.test_response import START, hand_world


@pytest.fixture(scope="module")
def logged():
    world = hand_world()
    state = build_response_state(world, START, drift_period_days=10)
    config = ImpressionConfig(n_days=5, requests_per_user_day=400.0, slots_per_request=3, exploration=0.3)
    return world, state, config, *generate_impressions(world, state, config)


def test_tables_follow_the_contract_and_labels_are_consistent(logged):
    _, _, config, impressions, truth = logged
    validate(impressions, IMPRESSIONS, "impressions")
    validate(truth, IMPRESSIONS_TRUTH, "impressions_truth")
    assert impressions.height == truth.height
    assert impressions["ts"].is_sorted()
    days = impressions["ts"].dt.date().unique()
    assert days.min() == date(2026, 1, 5) and days.max() == date(2026, 1, 9)  # last event day is 8
    per_request = impressions.group_by("request_id").agg(pl.col("position").sort())
    assert (per_request["position"].list.eval(pl.element() == pl.int_range(3)).list.all()).all()
    assert not (impressions["is_ctcvr"] & ~impressions["is_click"]).any()
    assert not (impressions["is_vtcvr"] & impressions["is_click"]).any()
    assert ((impressions["dwell_seconds"] > 0) == impressions["is_click"]).all()


def test_logged_propensity_matches_the_empirical_choice_frequency(logged):
    _, _, config, impressions, _ = logged
    observed = impressions.group_by("user_id", "item_id").agg(
        pl.len().alias("shown"), pl.col("propensity").first())
    shown_per_user = impressions.group_by("user_id").len()
    observed = observed.join(shown_per_user, on="user_id")
    np.testing.assert_allclose(observed["shown"] / observed["len"], observed["propensity"], atol=0.02)
    # User 9's history is leaf 12 only: with smoothing 0.5 the policy prefers item 200.
    user_9 = observed.filter(pl.col("user_id") == 9).sort("item_id")["propensity"].to_list()
    assert user_9[1] > user_9[0]


def test_sampled_outcomes_match_the_true_rates(logged):
    _, _, _, impressions, truth = logged
    joined = impressions.join(truth, on=["request_id", "position"])
    assert joined["is_click"].mean() == pytest.approx(joined["p_click"].mean(), rel=0.1)
    clicked = joined.filter("is_click")
    # Within the 7-day click window almost every delayed conversion is attributed.
    assert clicked["is_ctcvr"].mean() == pytest.approx(clicked["p_conversion"].mean(), rel=0.25)
    summary = impression_summary(impressions)
    assert summary["impressions"] == impressions.height and summary["users"] == 2


def test_same_seed_same_log_and_config_errors():
    world = hand_world()
    state = build_response_state(world, START, drift_period_days=10)
    config = ImpressionConfig(n_days=3, requests_per_user_day=20.0)
    first, _ = generate_impressions(world, state, config)
    second, _ = generate_impressions(world, state, config)
    assert first.equals(second)
    with pytest.raises(ConfigError, match="impressions.exploration"):
        ImpressionConfig(exploration=0.0)
    with pytest.raises(ConfigError, match="impressions.n_days"):
        generate_impressions(world, state, ImpressionConfig(n_days=30))
