"""Metrics and calibration: exact ECE on a hand example, Platt and isotonic fix a miscalibrated score."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.calibration import fit_calibrator
from ranking.metrics import evaluate, expected_calibration_error


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
