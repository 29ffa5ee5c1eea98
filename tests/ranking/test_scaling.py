"""Dense scaling: unit-interval features keep their scale, others are standardised, all are bounded."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.scaling import DenseScaler


def _training_rows() -> np.ndarray:
    """10,000 rows: a rare indicator (1 row in 10,000), a log count, an indicator never set in training."""
    rng = np.random.default_rng(0)
    rare = np.zeros(10_000)
    rare[7] = 1.0
    counts = np.log1p(rng.poisson(3.0, 10_000))
    return np.column_stack([rare, counts, np.zeros(10_000)])


def test_a_rare_indicator_keeps_its_unit_scale_instead_of_one_over_its_std():
    scaler = DenseScaler.fit(_training_rows())
    scaled = scaler.transform(np.array([[1.0, 0.0, 0.0]]))
    # standardised by its std (0.01) it would be (1 - 1e-4) / 0.01 = 99.99
    assert scaled[0, 0] == pytest.approx(1.0)


def test_counts_are_standardised_and_values_beyond_the_training_range_are_clipped():
    rows = _training_rows()
    scaler = DenseScaler.fit(rows)
    scaled = scaler.transform(rows)
    assert scaled[:, 1].mean() == pytest.approx(0.0, abs=1e-5)
    assert scaled[:, 1].std() == pytest.approx(1.0, abs=1e-4)
    far = scaler.transform(np.array([[0.0, 50.0, 0.0]]))[0, 1]
    assert far == pytest.approx(scaled[:, 1].max())


def test_a_feature_constant_in_training_has_no_effect_when_served():
    scaler = DenseScaler.fit(_training_rows())
    assert scaler.transform(np.array([[0.0, 1.0, 1.0]]))[0, 2] == 0.0  # set only when serving: clipped away


def test_bad_training_rows_name_the_problem():
    with pytest.raises(ValueError, match="non-empty"):
        DenseScaler.fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        DenseScaler.fit(np.array([[np.nan, 1.0]]))
