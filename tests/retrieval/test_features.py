"""User and item features: exact as-of histories, vocabularies and jagged-row selection."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from retrieval.config import FeatureConfig
from retrieval.features import (UserHistory, bag_starts, build_vocabulary, item_features, take_rows)
from synthetic_data.schema import UTC_TS, SchemaError

from tests.retrieval.conftest import START, events_table


@pytest.fixture()
def history(toy_tables):
    events = events_table([
        (1, 0, "engagement", 1000, 1, 1, "item a"),
        (1, 10, "onsite_search", None, None, 2, "Red SHOES, cheap"),
        (1, 20, "engagement", 1001, 2, 2, "item b"),
        (1, 30, "engagement", 1002, 3, 3, "item c"),
        (1, 40, "engagement", 999_999, 4, 4, "unknown item"),
        (2, 5, "engagement", 1003, 4, 4, "item d"),
    ])
    config = FeatureConfig(max_recent_items=2, max_recent_categories=3, max_recent_searches=1)
    vocabulary = build_vocabulary(toy_tables["items"], toy_tables["users"], events, config)
    items = item_features(toy_tables["items"], vocabulary)
    return UserHistory(events, toy_tables["users"], items, vocabulary, config), vocabulary, items


def _bags(features, name):
    values, lengths = features.sparse[name]
    return np.split(values, np.cumsum(lengths)[:-1])


def test_histories_hold_the_last_events_strictly_before_as_of(history):
    user_history, vocabulary, _ = history
    as_of = pl.Series([START + timedelta(minutes=m) for m in (30, 31, 100, 0)], dtype=UTC_TS)
    features = user_history.features(np.array([1, 1, 1, 1]), as_of)
    items = [vocabulary.item_ids[bag - 1].tolist() for bag in _bags(features, "recent_items")]
    # At minute 30 the engagement at minute 30 is not yet history; at 31 it is; limit 2 keeps the last.
    assert items[0] == [1000, 1001]
    assert items[1] == [1001, 1002]
    assert _bags(features, "recent_items")[2].tolist() == [vocabulary.item_index([1002])[0], 0]  # unknown -> 0
    assert items[3] == []
    assert features.history_events.tolist() == [3, 4, 5, 0]
    categories = [vocabulary.category_ids[bag - 1].tolist() for bag in _bags(features, "recent_categories")]
    assert categories[1] == [1, 2, 2, 3][-3:]


def test_search_tokens_are_lowercased_words_of_recent_queries(history):
    user_history, vocabulary, _ = history
    features = user_history.features(np.array([1, 2]), pl.Series([START + timedelta(hours=1)] * 2, dtype=UTC_TS))
    tokens = [[vocabulary.search_tokens[i - 1] for i in bag] for bag in _bags(features, "search_tokens")]
    assert tokens == [["red", "shoes", "cheap"], []]


def test_user_content_is_the_mean_content_of_recent_items(history, toy_tables):
    user_history, _, items = history
    features = user_history.features(np.array([1]), pl.Series([START + timedelta(minutes=35)], dtype=UTC_TS))
    rows = [int(np.flatnonzero(items.item_ids == i)[0]) for i in (1001, 1002)]
    np.testing.assert_allclose(features.content[0], items.content[rows].mean(axis=0), rtol=1e-6)


def test_profile_fields_index_the_users_table(history, toy_tables):
    user_history, vocabulary, _ = history
    features = user_history.features(np.array([1, 123456]), pl.Series([START] * 2, dtype=UTC_TS))
    age = toy_tables["users"].filter(pl.col("user_id") == 1)["age"].item()
    assert features.sparse["age"][0].tolist() == [vocabulary.profile_values["age"].index(age) + 1, 0]


def test_as_of_must_be_a_utc_timestamp(history):
    user_history, _, _ = history
    with pytest.raises(SchemaError, match="as_of"):
        user_history.features(np.array([1]), pl.Series([START.date()]))


def test_take_rows_selects_jagged_bags_in_the_given_order():
    features = {"f": (np.array([1, 2, 3, 4, 5, 6]), np.array([2, 0, 3, 1]))}
    values, lengths = take_rows(features, np.array([3, 0, 1, 2, 0]), bag_starts(features))["f"]
    assert lengths.tolist() == [1, 2, 0, 3, 2]
    assert values.tolist() == [6, 1, 2, 3, 4, 5, 1, 2]


def test_a_user_is_settled_once_past_their_last_event(history):
    user_history, _, _ = history
    as_of = pl.Series([START + timedelta(minutes=m) for m in (40, 41, 0, 6)], dtype=UTC_TS)
    # user 1's last event is at minute 40, user 2's at 5; user 3 has none
    assert user_history.is_settled(np.array([1, 1, 3, 2]), as_of).tolist() == [False, True, True, True]
