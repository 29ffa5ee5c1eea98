"""Ranking fixtures: the tiny world's logged impressions split by time and featurised once."""

from __future__ import annotations

import pytest

from ranking.config import RankingConfig
from ranking.features import split_by_time
from ranking.pipeline import fit_builder

TASKS = ("click", "ctcvr", "vtcvr")


@pytest.fixture(scope="session")
def tiny_tables(tiny_world, tiny_impressions, tiny_predictions):
    """(builder, splits, feature tables per split with the recency-list features)."""
    builder = fit_builder(tiny_world, RankingConfig())
    splits = split_by_time(tiny_impressions, RankingConfig().features)
    tables = {name: builder.transform(rows, tiny_predictions, tasks=TASKS) for name, rows in splits.items()}
    return builder, splits, tables
