"""Training positives of the three objectives: exact weights, windows and sources."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from retrieval.config import TrainingConfig
from retrieval.objectives import click_weight, training_positives
from synthetic_data.schema import IMPRESSIONS, conform

from tests.retrieval.conftest import START, events_table

CONFIG = TrainingConfig(dwell_cap_seconds=100.0, min_click_weight=0.2)


def test_click_weight_is_log_shaped_between_the_minimum_and_one():
    weights = pl.select(click_weight(pl.Series([0.0, 9.0, 100.0, 5000.0, None], dtype=pl.Float64), CONFIG)
                        .alias("w"))["w"].to_list()
    assert weights[0] == pytest.approx(0.2)
    assert weights[1] == pytest.approx(0.2 + 0.8 * math.log(10) / math.log(101))
    assert weights[2] == pytest.approx(1.0)
    assert weights[3] == pytest.approx(1.0)
    assert weights[4] == pytest.approx(1.0)  # unknown dwell counts as a full click


def _impressions() -> pl.DataFrame:
    return conform(pl.DataFrame({
        "request_id": [1, 1, 2, 3], "user_id": [1, 1, 2, 1],
        "ts": [START, START, START + timedelta(hours=1), START + timedelta(days=5)],
        "surface": ["home_feed"] * 4, "position": [0, 1, 0, 0], "item_id": [1000, 1001, 1002, 1003],
        "advertiser_id": [1, 2, 3, 4], "category_id": [1, 2, 3, 4],
        "is_click": [True, False, True, True], "dwell_seconds": [9.0, 0.0, 100.0, 50.0],
        "is_ctcvr": [False] * 4, "is_vtcvr": [False] * 4, "propensity": [0.5] * 4,
    }), IMPRESSIONS, "impressions")


def test_impression_objectives_read_the_impressions_table():
    events = events_table([(1, 0, "engagement", 1000, 1, 1, "x")])
    before, users = START + timedelta(days=1), pl.Series([1, 2])
    shown = training_positives(events, TrainingConfig(objective="impressions"), before, users, _impressions())
    assert shown["item_id"].to_list() == [1000, 1001, 1002]  # day-5 impression is after `before`
    assert shown["weight"].to_list() == [1.0, 1.0, 1.0]
    clicks = training_positives(events, CONFIG, before, users, _impressions())
    assert clicks["item_id"].to_list() == [1000, 1002]
    np.testing.assert_allclose(clicks["weight"], [0.2 + 0.8 * math.log(10) / math.log(101), 1.0], rtol=1e-6)


def test_without_impressions_dwell_is_the_gap_to_the_next_event_before_the_cutoff():
    events = events_table([
        (1, 0, "engagement", 1000, 1, 1, "a"),
        (1, 0.15, "onsite_search", None, None, 1, "q"),  # 9 seconds later
        (1, 10, "engagement", 1001, 1, 1, "b"),  # last event before the cutoff: full weight
        (1, 2000, "engagement", 1002, 1, 1, "c"),  # after the cutoff
        (2, 0, "engagement", 1003, 1, 1, "d"),  # user 2 is not a training user
    ])
    clicks = training_positives(events, CONFIG, START + timedelta(minutes=20), pl.Series([1]))
    assert clicks["item_id"].to_list() == [1000, 1001]
    np.testing.assert_allclose(clicks["weight"], [0.2 + 0.8 * math.log(10) / math.log(101), 1.0], rtol=1e-5)
    shown = training_positives(events, TrainingConfig(objective="impressions"), START + timedelta(minutes=20),
                               pl.Series([1]))
    assert shown["weight"].to_list() == [1.0, 1.0]


def test_conversion_objective_keeps_conversions_that_name_an_item():
    events = events_table([
        (1, 0, "attributed_conversion", 1000, 1, 1, "a"),
        (1, 1, "matched_conversion", None, 2, 2, "b"),
        (1, 2, "matched_conversion", 1002, 3, 3, "c"),
        (1, 3, "engagement", 1003, 4, 4, "d"),
    ])
    positives = training_positives(events, TrainingConfig(objective="conversions"), START + timedelta(days=1),
                                   pl.Series([1]), _impressions())
    assert positives["item_id"].to_list() == [1000, 1002]
