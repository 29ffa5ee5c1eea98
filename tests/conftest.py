"""Shared fixtures: a tiny generated world (seconds, session-scoped) and its folder on disk."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_world():
    """The `tiny` preset world (a `synthetic_data.schema.World`), generated once per test session."""
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    return generate_world(preset("tiny"), progress=False)


@pytest.fixture(scope="session")
def tiny_world_dir(tiny_world, tmp_path_factory):
    """The tiny world written as Parquet files (a run's world/ folder)."""
    directory = tmp_path_factory.mktemp("tiny_run") / "world"
    tiny_world.write(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_impressions(tiny_world):
    """Three weeks of logged impressions (~150k rows) on the tiny world."""
    from datetime import date

    from synthetic_data.impressions import ImpressionConfig, generate_impressions
    from synthetic_data.presets import preset
    from synthetic_data.response import build_response_state

    config = preset("tiny")
    state = build_response_state(tiny_world, date.fromisoformat(config.start_date), config.users.drift_period_days)
    impressions, _ = generate_impressions(tiny_world, state, ImpressionConfig(n_days=20, requests_per_user_day=3.0))
    return impressions


@pytest.fixture(scope="session")
def tiny_predictions(tiny_world):
    """Most-recent-advertiser lists (a non-LLM source) at the tiny world's label anchors."""
    from ranking.recency_predictions import recent_advertiser_predictions

    anchors = tiny_world.labels["anchor_date"].unique().to_list()
    return recent_advertiser_predictions(tiny_world.events, tiny_world.advertisers, anchors, 10)


@pytest.fixture(scope="session")
def sparse_list_ranker(tiny_world, tiny_impressions, tiny_predictions):
    """A ranker whose LLM features were trained with most-recent lists for 2% of users, as the demo's
    held-out LLM lists cover few users (issue #13, fault 0). Tests serve it lists on a `copy.copy`."""
    import polars as pl

    from ranking.config import RankingConfig, TrainConfig
    from ranking.pipeline import train_ranker

    users = tiny_predictions["user_id"].unique().sort()
    few = tiny_predictions.filter(pl.col("user_id").is_in(users.sample(fraction=0.02, seed=0).implode()))
    config = RankingConfig(reference_models=(), train=TrainConfig(epochs=2))
    return train_ranker(tiny_world, tiny_impressions, few, None, config, seed=0)[0]
