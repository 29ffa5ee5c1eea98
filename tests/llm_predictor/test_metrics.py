"""Tests of llm_predictor/metrics.py: Recall@K by hand, its Wilson interval and the Tango interval of
paired differences, including at the edges where a bootstrap collapses."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from llm_predictor.metrics import (hits_at_k, paired_difference_interval, proportion_interval, recall_at_k,
                                   recall_with_intervals)

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


def _wilson(hits: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) by its formula: centre (p + z²/2n) / (1 + z²/n), half-width z √(p(1-p)/n + z²/4n²) / (1 + z²/n)."""
    share = hits / n
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def test_recall_intervals_are_wilson_and_keep_their_width_at_zero_and_all_hits():
    assert proportion_interval(0, 50) == pytest.approx((0.0, 0.0713), abs=1e-4)  # a bootstrap gave [0, 0]
    assert proportion_interval(50, 50) == pytest.approx((0.9287, 1.0), abs=1e-4)  # and [1, 1]
    assert proportion_interval(30, 100) == pytest.approx(_wilson(30, 100))
    assert all(np.isnan(proportion_interval(0, 0)))


def test_recall_with_intervals_gives_each_k_its_wilson_interval(predictions, labels):
    recall = recall_with_intervals(predictions, labels, ks=(1, 5, 20))
    assert recall["recall_at_5"] == 0.4  # 2 of 5 labels
    assert (recall["recall_at_5_low"], recall["recall_at_5_high"]) == pytest.approx(_wilson(2, 5))
    assert (recall["recall_at_1_low"], recall["recall_at_1_high"]) == pytest.approx(_wilson(1, 5))


def _pairs(both: int, only_method: int, only_reference: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    hits = np.array([1] * both + [1] * only_method + [0] * only_reference + [0] * neither)
    reference = np.array([1] * both + [0] * only_method + [1] * only_reference + [0] * neither)
    return hits, reference


def test_paired_difference_interval_is_tangos_score_interval():
    # Fagerland, Lydersen & Laake (2014, Stat Med 33:2850): airway hyper-responsiveness of 21 children
    # before and after stem cell transplantation; Tango's asymptotic score interval -0.517 to -0.026.
    assert paired_difference_interval(*_pairs(1, 1, 7, 12)) == pytest.approx((-0.517, -0.026), abs=5e-4)


def test_paired_difference_interval_keeps_its_width_without_discordant_labels():
    """0 of 50 labels discordant: the difference is 0, but up to z²/(n + z²) = 7.1% of labels could
    still differ either way (the Wilson bound of 0/50), so the interval is ±0.071, not [0, 0]."""
    z2 = 1.959963984540054**2
    for both in (0, 25, 50):
        assert paired_difference_interval(*_pairs(both, 0, 0, 50 - both)) == pytest.approx(
            (-z2 / (50 + z2), z2 / (50 + z2)))
    # every label hit by the method only: the difference is 1, its lower bound (n - z²) / (n + z²)
    assert paired_difference_interval(*_pairs(0, 50, 0, 0)) == pytest.approx(((50 - z2) / (50 + z2), 1.0))
    assert paired_difference_interval(*_pairs(0, 0, 50, 0)) == pytest.approx((-1.0, -(50 - z2) / (50 + z2)))
    assert all(np.isnan(paired_difference_interval(np.array([]), np.array([]))))
