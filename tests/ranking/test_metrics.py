"""Metrics and calibration: exact ECE and rank metrics on hand examples, the vectorised bootstrap metrics
equal sklearn's weighted ones, Platt and isotonic fix a miscalibrated score."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.calibration import fit_calibrator
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from ranking.metrics import evaluate, expected_calibration_error, user_weighted_metrics

# Scores below 1e-7 that still rank the rows: clipping them to 1e-7 would tie the first five.
TINY_LABELS = np.array([0, 0, 1, 0, 1, 0])
TINY_SCORES = np.array([1e-12, 3e-11, 5e-10, 2e-9, 8e-9, 0.3])


def test_ece_is_the_row_weighted_gap_per_equal_mass_bin():
    labels = np.array([0, 0, 1, 1, 0, 1])
    probabilities = np.array([0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    # Two bins of three rows: observed 1/3 vs 0.1 and 2/3 vs 0.9.
    expected = (abs(1 / 3 - 0.1) * 3 + abs(2 / 3 - 0.9) * 3) / 6
    assert expected_calibration_error(labels, probabilities, bins=2) == pytest.approx(expected)
    assert expected_calibration_error(labels, labels.astype(float), bins=2) == pytest.approx(0.0, abs=1e-12)


def test_evaluate_reports_perfect_and_random_rankings():
    labels = np.array([0, 0, 0, 1, 1])
    perfect = evaluate(labels, np.array([0.1, 0.2, 0.3, 0.8, 0.9]))
    assert perfect["auc"] == 1.0 and perfect["pr_auc"] == 1.0 and perfect["positives"] == 2
    reversed_ = evaluate(labels, np.array([0.9, 0.8, 0.7, 0.2, 0.1]))
    assert reversed_["auc"] == 0.0
    assert reversed_["log_loss"] > perfect["log_loss"]
    with pytest.raises(ValueError, match="only negative labels"):
        evaluate(np.zeros(3), np.full(3, 0.5))


def test_rank_metrics_rank_scores_below_the_log_loss_clip():
    metrics = evaluate(TINY_LABELS, TINY_SCORES)
    # AUC: the positive at 5e-10 beats 2 of 4 negatives, the one at 8e-9 beats 3 -> 5/8.
    # PR-AUC: positives at places 2 and 4 of the descending order -> (1/2 + 2/4) / 2.
    assert metrics["auc"] == pytest.approx(0.625) and metrics["pr_auc"] == pytest.approx(0.5)
    assert metrics["mean_prediction"] == pytest.approx(TINY_SCORES.mean())
    # only the log loss clips: the two positives cost -log(1e-7) each, not -log(5e-10)
    expected_loss = (2 * -np.log(1e-7) + sum(-np.log1p(-TINY_SCORES[TINY_LABELS == 0]))) / 6
    assert metrics["log_loss"] == pytest.approx(expected_loss)
    unweighted = user_weighted_metrics(TINY_LABELS, TINY_SCORES, np.arange(6), np.ones((1, 6)))
    assert (unweighted["auc"][0], unweighted["pr_auc"][0]) == pytest.approx((0.625, 0.5))
    assert unweighted["log_loss"][0] == pytest.approx(expected_loss)


def test_user_weighted_metrics_equal_sklearn_with_the_users_weights_on_every_row():
    rng = np.random.default_rng(0)
    rows, users = 600, 80
    labels = rng.random(rows) < 0.1
    scores = np.round(rng.random(rows) * 0.1 + labels * 0.03, 2)  # coarse: many ties, also across classes
    user_index = rng.integers(0, users, rows)
    weights = rng.multinomial(users, np.full(users, 1 / users), size=4).astype(float)  # some users weigh 0
    got = user_weighted_metrics(labels, scores, user_index, weights)
    for replicate, user_weight in enumerate(weights):
        row_weight = user_weight[user_index]
        assert got["auc"][replicate] == pytest.approx(roc_auc_score(labels, scores, sample_weight=row_weight))
        assert got["pr_auc"][replicate] == pytest.approx(
            average_precision_score(labels, scores, sample_weight=row_weight))
        assert got["log_loss"][replicate] == pytest.approx(log_loss(labels, scores, sample_weight=row_weight))


def test_user_weighted_metrics_are_undefined_without_both_classes():
    only_negatives = user_weighted_metrics(TINY_LABELS, TINY_SCORES, np.arange(6), np.array([[1, 1, 0, 1, 0, 1.0]]))
    assert np.isnan(only_negatives["auc"][0]) and np.isnan(only_negatives["pr_auc"][0])
    with pytest.raises(ValueError, match="all negative"):
        user_weighted_metrics(np.zeros(3), np.full(3, 0.5), np.arange(3), np.ones((1, 3)))


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_on_held_out_rows_removes_a_systematic_bias(method):
    rng = np.random.default_rng(0)
    logits = rng.normal(-3, 1.5, 40_000)
    labels = rng.random(40_000) < 1 / (1 + np.exp(-logits))
    overconfident = 2.5 * logits + 2.0  # a model whose raw scores are badly calibrated
    held_out, reported = slice(0, 20_000), slice(20_000, None)
    calibrator = fit_calibrator(overconfident[held_out], labels[held_out], method)
    raw_ece = expected_calibration_error(labels[reported], 1 / (1 + np.exp(-overconfident[reported])))
    calibrated_ece = expected_calibration_error(labels[reported], calibrator(overconfident[reported]))
    assert calibrated_ece < raw_ece / 3
    with pytest.raises(ValueError, match="calibration method"):
        fit_calibrator(logits, labels, "beta")
