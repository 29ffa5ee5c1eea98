"""Tests of llm_predictor/metrics.py: Recall@K by hand and its Wilson interval."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from synthetic_data.intervals import proportion_interval

from llm_predictor.metrics import hits_at_k, recall_at_k, recall_with_intervals

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


def test_recall_with_intervals_gives_each_k_its_wilson_interval(predictions, labels):
    recall = recall_with_intervals(predictions, labels, ks=(1, 5, 20))
    assert recall["recall_at_5"] == 0.4  # 2 of 5 labels
    assert (recall["recall_at_5_low"], recall["recall_at_5_high"]) == pytest.approx(proportion_interval(2, 5))
    assert (recall["recall_at_1_low"], recall["recall_at_1_high"]) == pytest.approx(proportion_interval(1, 5))
