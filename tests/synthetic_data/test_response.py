"""The true response model: exact rates on a hand-built world, and its config validation."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import numpy as np
import polars as pl
import pytest

from synthetic_data.config_io import ConfigError
from synthetic_data.response import ResponseConfig, build_response_state, true_rates
from synthetic_data.schema import SCHEMAS, WORLD_TABLES, World, conform, empty

START = date(2026, 1, 1)


def _ts(day: int) -> datetime:
    return datetime(2026, 1, 1 + day, 12, tzinfo=timezone.utc)


def hand_world() -> World:
    """Two users, two advertisers with one item each in leaves 11 and 12, a few history events."""
    tables = {name: empty(SCHEMAS[name]) for name in WORLD_TABLES}
    tables["categories"] = conform(pl.DataFrame({
        "category_id": [1, 11, 12], "parent_id": [None, 1, 1], "level": [1, 2, 2],
        "name": ["home", "lamps", "rugs"]}), SCHEMAS["categories"])
    tables["advertisers"] = conform(pl.DataFrame({
        "advertiser_id": [1, 2], "name": ["Lumen", "Weave"], "domain": ["lumen.com", "weave.com"],
        "is_active": [True, True], "has_active_spend": [True, True], "campaign_type": ["OCPM", "ROAS"],
        "bid": [10.0, 5.0], "target_roas": [None, 3.0], "daily_budget": [100.0, 100.0],
        "category_id": [11, 12], "product_lines": [["desk lamp"], ["wool rug"]]}), SCHEMAS["advertisers"])
    tables["advertisers_truth"] = conform(pl.DataFrame({
        "advertiser_id": [1, 2], "popularity": [0.8, 0.2], "style_weight": [1.0, 1.0]}),
        SCHEMAS["advertisers_truth"])
    tables["items"] = pl.DataFrame({
        "item_id": [100, 200], "advertiser_id": [1, 2], "brand_id": [1, 2], "category_id": [11, 12],
        "product_line_id": [1, 2], "title": ["desk lamp", "wool rug"], "price": [30.0, 90.0],
        "embedding": [[0.0, 1.0], [1.0, 0.0]]},
        schema_overrides={"embedding": pl.Array(pl.Float32, 2)})
    tables["items"] = conform(tables["items"], SCHEMAS["items"])
    tables["users_truth"] = conform(pl.DataFrame({
        "user_id": [7, 9], "commercial_intent": [2.0, 1.0], "brand_loyalty": [0.4, 0.9],
        "activity": [1.0, 1.0], "favorite_advertisers": [[1], [2]]}), SCHEMAS["users_truth"])
    tables["interests_truth"] = conform(pl.DataFrame({
        "user_id": [7, 7, 9], "epoch": [0, 1, 0], "category_id": [11, 12, 12], "weight": [0.5, 1.0, 1.0]}),
        SCHEMAS["interests_truth"])
    tables["events"] = conform(pl.DataFrame({
        "event_id": [1, 2, 3], "user_id": [7, 7, 9], "ts": [_ts(3), _ts(8), _ts(1)],
        "kind": ["matched_conversion", "offsite_url", "engagement"], "text": ["", "lumen.com/x", "rug"],
        "advertiser_id": [1, 1, 2], "brand_id": [1, 1, 2], "item_id": [100, 100, 200],
        "category_id": [11, 11, 12], "conversion_type": ["checkout", None, None],
        "is_high_priority": [True, False, False], "value": [30.0, None, None]}), SCHEMAS["events"])
    return World(**tables)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_rates_match_the_documented_formula():
    config = ResponseConfig()
    state = build_response_state(hand_world(), START, drift_period_days=10, config=config)
    # User 7, item 100 (advertiser 1, leaf 11), search position 2, day 5: interest 0.5 (epoch 0),
    # favourite with loyalty 0.4, converted on day 3, no browse before day 5.
    rates = true_rates(state, np.array([7]), np.array([100]), "search", np.array([2]), 5)
    popularity = math.log(0.8 * 2)
    click = _sigmoid(config.click_base_logit["search"] + config.click_interest_weight * 0.5
                     + config.click_favorite_weight * 0.4 + config.click_popularity_weight * popularity)
    assert rates.p_click[0] == pytest.approx(3 ** -config.position_decay["search"] * click)
    conversion = (config.conversion_base_logit + config.conversion_interest_weight * 0.5
                  + config.conversion_favorite_weight * 0.4 + config.conversion_repeat_weight
                  + config.conversion_popularity_weight * popularity
                  + config.conversion_intent_weight * math.log(2.0))
    assert rates.p_conversion[0] == pytest.approx(_sigmoid(conversion))
    assert rates.p_view_conversion[0] == pytest.approx(
        _sigmoid(conversion + config.view_through_logit_offset))
    assert rates.dwell_log_mean[0] == pytest.approx(config.dwell_log_mean + config.dwell_interest_weight * 0.5)


def test_history_terms_respect_time_and_interest_drift():
    config = ResponseConfig()
    state = build_response_state(hand_world(), START, drift_period_days=10, config=config)
    users, items = np.array([7, 7, 7]), np.array([100, 100, 100])
    # Day 3: the conversion happens that day, so it is not yet history; day 9: browse on day 8
    # counts; day 12: epoch 1, where user 7 no longer cares about leaf 11.
    rates = true_rates(state, users, items, np.array([0, 0, 0]), np.zeros(3), np.array([3, 9, 12]))
    popularity = math.log(1.6)
    base = (config.conversion_base_logit + config.conversion_favorite_weight * 0.4
            + config.conversion_popularity_weight * popularity + config.conversion_intent_weight * math.log(2.0))
    expected = [base + config.conversion_interest_weight * 0.5,
                base + config.conversion_interest_weight * 0.5 + config.conversion_repeat_weight
                + config.conversion_browse_weight,
                base + config.conversion_repeat_weight + config.conversion_browse_weight]
    np.testing.assert_allclose(rates.p_conversion, [_sigmoid(x) for x in expected])


def test_position_bias_lowers_clicks_monotonically():
    state = build_response_state(hand_world(), START, drift_period_days=10)
    rates = true_rates(state, np.full(5, 9), np.full(5, 200), "home_feed", np.arange(5), 2)
    assert np.all(np.diff(rates.p_click) < 0)
    assert np.all(rates.p_conversion == rates.p_conversion[0])


def test_unknown_ids_and_bad_config_are_named():
    state = build_response_state(hand_world(), START, drift_period_days=10)
    with pytest.raises(KeyError, match="user_id"):
        true_rates(state, np.array([8]), np.array([100]), "search", np.array([0]), 1)
    with pytest.raises(ConfigError, match="response.position_decay"):
        ResponseConfig(position_decay={"home_feed": 0.5})
