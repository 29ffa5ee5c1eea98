"""Tests of llm_predictor/fusion.py: reciprocal-rank fusion's lists at the weights' ends and between, the weight
chosen on labels, and the controls (another user's list, the oracle)."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from llm_predictor.fusion import FusionConfig, choose_weight, fuse, oracle_list, other_users_lists
from synthetic_data.config_io import ConfigError

DAY = date(2026, 3, 2)


def _lists(ranked: dict[int, list[int]], anchor: date = DAY) -> pl.DataFrame:
    """PREDICTIONS-like rows: {user_id: advertiser ids, best first}."""
    return pl.DataFrame([{"user_id": user, "anchor_date": anchor, "advertiser_id": advertiser, "rank": rank}
                         for user, advertisers in ranked.items() for rank, advertiser in enumerate(advertisers, 1)],
                        schema={"user_id": pl.Int64, "anchor_date": pl.Date, "advertiser_id": pl.Int32,
                                "rank": pl.Int32})


def _order(table: pl.DataFrame, user: int = 1) -> list[int]:
    return table.filter(pl.col("user_id") == user).sort("rank")["advertiser_id"].to_list()


def test_fusion_keeps_either_list_at_its_end_and_interleaves_between():
    llm, lightgbm = _lists({1: [7, 8, 9]}), _lists({1: [1, 2, 7]})
    assert _order(fuse(llm, lightgbm, 0.0, k=60, top=3)) == [1, 2, 7]  # LightGBM's list alone
    assert _order(fuse(llm, lightgbm, 1.0, k=60, top=3)) == [7, 8, 9]  # the LLM's
    assert _order(fuse(llm, lightgbm, 0.0, k=60, top=5)) == [1, 2, 7]  # a list of weight 0 adds no name
    # 7 is in both lists: 0.5/61 + 0.5/63 beats either list's first alone (0.5/61); 8 and 2 tie (0.5/62)
    assert _order(fuse(llm, lightgbm, 0.5, k=60, top=5)) == [7, 1, 2, 8, 9]
    assert fuse(llm, lightgbm, 0.5, k=60, top=2)["rank"].to_list() == [1, 2]


def test_the_weight_is_the_one_with_the_best_recall_and_ties_keep_lightgbm():
    llm, lightgbm = _lists({1: [5], 2: [6]}), _lists({1: [1], 2: [2]})
    labels = pl.DataFrame({"user_id": [1, 2], "anchor_date": [DAY] * 2,
                           "advertiser_id": pl.Series([5, 2], dtype=pl.Int32)})
    config = FusionConfig(weights=(0.0, 0.4, 0.6, 1.0))
    weight, recall = choose_weight(llm, lightgbm, labels, config, top=1)
    assert recall == {0.0: 0.5, 0.4: 0.5, 0.6: 0.5, 1.0: 0.5} and weight == 0.0  # a tie: LightGBM alone
    weight, recall = choose_weight(llm, lightgbm, labels, config, top=2)
    assert recall[0.0] == 0.5 and recall[0.4] == recall[0.6] == 1.0 and weight == 0.4


def test_the_negative_control_moves_whole_lists_between_users_of_one_anchor():
    lists = pl.concat([_lists({u: [10 * u, 10 * u + 1] for u in range(1, 7)}),
                       _lists({1: [99]}, anchor=date(2026, 2, 23))])
    moved = other_users_lists(lists, seed=0)
    assert moved.columns == lists.columns and moved.height == lists.height
    at_day = {u: tuple(_order(moved.filter(pl.col("anchor_date") == DAY), u)) for u in range(1, 7)}
    assert sorted(at_day.values()) == [(10 * u, 10 * u + 1) for u in range(1, 7)]  # the same lists, reassigned
    assert sum(at_day[u] != (10 * u, 10 * u + 1) for u in range(1, 7)) >= 2
    assert moved.filter(pl.col("anchor_date") != DAY)["advertiser_id"].to_list() == [99]  # its anchor's only user
    assert other_users_lists(lists, seed=0).equals(moved)  # seeded


def test_the_oracle_names_each_label_first():
    labels = pl.DataFrame({"user_id": [1, 2], "anchor_date": [DAY] * 2,
                           "advertiser_id": pl.Series([5, 6], dtype=pl.Int32)})
    assert oracle_list(labels).select("advertiser_id", "rank").rows() == [(5, 1), (6, 1)]


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="fusion.method"):
        FusionConfig(method="zero_shot")  # generates text: no ranked list to fuse
    with pytest.raises(ConfigError, match="fusion.weights"):
        FusionConfig(weights=(0.0, 1.5))
    with pytest.raises(ConfigError, match="fusion.k"):
        FusionConfig(k=0)
