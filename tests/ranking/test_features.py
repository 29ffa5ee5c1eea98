"""Ranking features: exact history counts before the impression day, ID codes, the time split."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from ranking.config import FeatureConfig
from ranking.features import HISTORY_FEATURES, SPARSE_FEATURES, FeatureBuilder, split_by_time
from ranking.llm_features import LLM_FEATURES
from synthetic_data.schema import EVENTS, conform

from tests.ranking.test_llm_features import ADVERTISERS, CATEGORIES, PREDICTIONS_TABLE


def _ts(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=timezone.utc)


USERS = pl.DataFrame({"user_id": [7, 8], "age": ["25-34", "55+"], "gender": ["female", "male"],
                      "user_state": ["core", "new"]}, schema_overrides={"user_id": pl.Int64})
ITEMS = pl.DataFrame({"item_id": [100, 200, 300], "advertiser_id": [1, 3, 4], "brand_id": [1, 3, 4],
                      "category_id": [11, 12, 13], "price": [20.0, 50.0, 1.0]},
                     schema_overrides={"item_id": pl.Int32, "advertiser_id": pl.Int32, "brand_id": pl.Int32,
                                       "category_id": pl.Int32})
EVENTS_TABLE = conform(pl.DataFrame({
    "event_id": [1, 2, 3, 4, 5],
    "user_id": [7, 7, 7, 7, 8],
    "ts": [_ts(2), _ts(5), _ts(9), _ts(10, 1), _ts(9)],
    "kind": ["matched_conversion", "engagement", "engagement", "engagement", "onsite_search"],
    "text": ["", "", "", "", "rug"],
    "advertiser_id": [1, 1, None, 1, None], "brand_id": [1, 1, None, 1, None],
    "item_id": [100, 100, None, 100, None], "category_id": [11, 11, 12, 11, None],
    "conversion_type": ["checkout", None, None, None, None],
    "is_high_priority": [True, False, False, False, False], "value": [20.0, None, None, None, None]}),
    EVENTS)


def candidate_rows(day: int = 10) -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": [1, 1, 2], "user_id": [7, 7, 8], "ts": [_ts(day, 18)] * 3,
        "surface": ["search", "search", "home_feed"], "position": [0, 20, 1], "item_id": [100, 200, 100],
        "is_ctcvr": [True, False, False]}, schema_overrides={"user_id": pl.Int64, "item_id": pl.Int32})


@pytest.fixture(scope="module")
def builder() -> FeatureBuilder:
    return FeatureBuilder(FeatureConfig(count_window_days=7)).fit(USERS, ITEMS, ADVERTISERS, CATEGORIES, EVENTS_TABLE)


def test_history_counts_use_only_days_before_the_impression(builder):
    table = builder.transform(candidate_rows(day=10), tasks=("ctcvr",))
    assert table.dense_names == HISTORY_FEATURES and table.sparse_names == SPARSE_FEATURES
    counts = dict(zip(table.dense_names, np.expm1(table.dense[0])))
    # Window [day 3, day 10): engagements on days 5 and 9 count, the day-10 one and the day-2
    # conversion do not; the conversion count with advertiser 1 looks at all history.
    assert counts["user_engagement_count"] == pytest.approx(2)
    assert counts["user_matched_conversion_count"] == pytest.approx(0)
    assert counts["user_advertiser_events"] == pytest.approx(1)
    assert counts["user_advertiser_conversions"] == pytest.approx(1)
    assert counts["user_category_events"] == pytest.approx(1)
    assert table.dense[0, HISTORY_FEATURES.index("log_price")] == pytest.approx(np.log(20.0))
    second = dict(zip(table.dense_names, np.expm1(table.dense[1])))
    assert second["user_category_events"] == pytest.approx(1)  # leaf 12 on day 9
    assert second["user_advertiser_events"] == pytest.approx(0)
    assert table.labels["ctcvr"].tolist() == [True, False, False]


def test_sparse_codes_and_position_cap(builder):
    table = builder.transform(candidate_rows())
    column = {name: table.sparse[:, i] for i, name in enumerate(table.sparse_names)}
    assert column["user_id"].tolist() == [1, 1, 2]
    assert column["advertiser_id"].tolist() == [2, 4, 2]  # advertiser id + 1 (0 = unknown)
    assert column["position"].tolist() == [0, builder.config.max_position, 1]
    sizes = builder.vocab_sizes_
    assert all((table.sparse[:, i] < sizes[name]).all() for i, name in enumerate(table.sparse_names))


def test_llm_features_are_appended_and_can_be_removed(builder):
    table = builder.transform(candidate_rows(day=12), PREDICTIONS_TABLE)
    assert table.dense_names == HISTORY_FEATURES + LLM_FEATURES
    is_predicted = table.dense[:, table.dense_names.index("is_predicted_advertiser")]
    assert is_predicted.tolist() == [1, 1, 0]  # user 7's list (anchor Jan 10) has advertisers 1 and 3
    assert table.without(LLM_FEATURES).dense_names == HISTORY_FEATURES


def test_unknown_items_are_an_error(builder):
    rows = candidate_rows().with_columns(item_id=pl.lit(999, dtype=pl.Int32))
    with pytest.raises(ValueError, match="not in the items table"):
        builder.transform(rows)


def test_time_split_is_ordered_and_disjoint():
    rows = pl.DataFrame({"ts": [_ts(day) for day in range(1, 11) for _ in range(3)]})
    parts = split_by_time(rows, FeatureConfig(validation_days=2, test_days=3))
    days = {name: part["ts"].dt.day().unique().sort().to_list() for name, part in parts.items()}
    assert days == {"train": [1, 2, 3, 4, 5], "validation": [6, 7], "test": [8, 9, 10]}
    with pytest.raises(ValueError, match="features.validation_days"):
        split_by_time(rows, FeatureConfig(validation_days=5, test_days=5))
