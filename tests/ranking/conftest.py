"""Ranking fixtures: logged impressions of the tiny world, split by time and featurised once."""

from __future__ import annotations

from datetime import date

import pytest

from ranking.config import RankingConfig
from ranking.features import split_by_time
from ranking.pipeline import fit_builder
from ranking.recency_predictions import recent_advertiser_predictions
from synthetic_data.impressions import ImpressionConfig, generate_impressions
from synthetic_data.presets import preset
from synthetic_data.response import build_response_state

TASKS = ("click", "ctcvr", "vtcvr")


@pytest.fixture(scope="session")
def tiny_impressions(tiny_world):
    """Three weeks of logged impressions (~150k rows) on the tiny world."""
    config = preset("tiny")
    state = build_response_state(tiny_world, date.fromisoformat(config.start_date), config.users.drift_period_days)
    impressions, _ = generate_impressions(tiny_world, state, ImpressionConfig(n_days=20, requests_per_user_day=3.0))
    return impressions


@pytest.fixture(scope="session")
def tiny_predictions(tiny_world):
    """Most-recent-advertiser lists (a non-LLM source) at the tiny world's label anchors."""
    anchors = tiny_world.labels["anchor_date"].unique().to_list()
    return recent_advertiser_predictions(tiny_world.events, tiny_world.advertisers, anchors, 10)


@pytest.fixture(scope="session")
def tiny_tables(tiny_world, tiny_impressions, tiny_predictions):
    """(builder, splits, feature tables per split with the recency-list features)."""
    builder = fit_builder(tiny_world, RankingConfig())
    splits = split_by_time(tiny_impressions, RankingConfig().features)
    tables = {name: builder.transform(rows, tiny_predictions, tasks=TASKS) for name, rows in splits.items()}
    return builder, splits, tables
