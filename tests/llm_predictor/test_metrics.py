"""Tests of llm_predictor/metrics.py: Recall@K by hand and the bootstrap interval."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from llm_predictor.metrics import bootstrap_interval, hits_at_k, recall_at_k, recall_with_intervals

A, B = date(2026, 3, 1), date(2026, 3, 8)


@pytest.fixture()
def labels() -> pl.DataFrame:
    return pl.DataFrame({"user_id": [1, 2, 3, 4, 1], "anchor_date": [A, A, A, A, B],
                         "advertiser_id": [10, 20, 30, 40, 10]}, schema_overrides={"advertiser_id": pl.Int32})


@pytest.fixture()
def predictions() -> pl.DataFrame:
    rows = [(1, A, 1, 10), (1, A, 2, 11),  # user 1 at A: hit at rank 1
            (2, A, 1, 21), (2, A, 5, 20),  # user 2: hit at rank 5
            (3, A, 6, 30),  # user 3: hit at rank 6 only
            (1, B, 3, 99)]  # user 1 at B: miss; user 4: no predictions at all
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "anchor_date": pl.Date, "rank": pl.Int32,
                                      "advertiser_id": pl.Int32}, orient="row")


def test_recall_by_hand(predictions, labels):
    assert recall_at_k(predictions, labels, ks=(1, 5, 6, 20)) == {1: 0.2, 5: 0.4, 6: 0.6, 20: 0.6}


def test_predictions_of_another_anchor_do_not_count(predictions, labels):
    shifted = predictions.with_columns(pl.lit(B).alias("anchor_date"))
    assert recall_at_k(shifted, labels.filter(pl.col("anchor_date") == A))[20] == 0.0


def test_hits_table_has_one_row_per_label(predictions, labels):
    hits = hits_at_k(predictions, labels)
    assert hits.height == labels.height
    assert hits["rank"].to_list() == [1, 5, 6, None, None]
    with pytest.raises(ValueError, match="two labels"):
        hits_at_k(predictions, pl.concat([labels, labels]))


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = np.array([1.0] * 30 + [0.0] * 70)
    large = np.repeat(small, 100)
    low, high = bootstrap_interval(small, rng)
    assert low < 0.3 < high
    # Binomial standard error sqrt(.21/100) = 0.046: the 95% interval is about +-0.09.
    assert 0.14 < high - low < 0.22
    low_large, high_large = bootstrap_interval(large, rng)
    assert high_large - low_large < (high - low) / 5
    assert bootstrap_interval(np.ones(10), rng) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_interval(np.array([]), rng)))


def test_bootstrap_is_reproducible_from_the_seed(predictions, labels):
    first = recall_with_intervals(predictions, labels, np.random.default_rng(3))
    second = recall_with_intervals(predictions, labels, np.random.default_rng(3))
    assert first == second
    assert first["recall_at_5"] == 0.4 and first["recall_at_5_low"] <= 0.4 <= first["recall_at_5_high"]
