import numpy as np
import polars as pl
import pytest
from scipy import stats

from simulator.calibration import SyntheticMarket, aa_p_values, false_positive_rate, synthetic_arm

CONVERSION_METRICS = ["roas", "revenue_per_user", "conversions_per_user", "cvr"]


def test_synthetic_market_looks_like_the_tiny_worlds_one_day_simulation():
    """Shares measured on the tiny world (600 users, 1 day): 77% active, 38% clicking, 12.7% converting."""
    arm = synthetic_arm(SyntheticMarket(), 20000, np.random.default_rng(0))
    assert np.mean(arm["requests"] > 0) == pytest.approx(0.77, abs=0.02)
    assert np.mean(arm["clicks"] > 0) == pytest.approx(0.38, abs=0.03)
    assert np.mean(arm["conversions"] > 0) == pytest.approx(0.127, abs=0.015)
    assert (arm["click_conversions"] <= arm["clicks"]).all() and (arm["click_conversions"] <= arm["conversions"]).all()
    assert ((arm["conversion_value"] > 0) == (arm["conversions"] > 0)).all()


def test_false_positive_rate_has_a_clopper_pearson_interval():
    p_values = pl.DataFrame({"metric": ["roas"] * 40, "p_value": [0.01, 0.04] + [0.5] * 38,
                             "nonzero_users": [10] * 40, "is_underpowered": [True] * 40})
    row = false_positive_rate(p_values).row(0, named=True)
    assert (row["tests"], row["rejections"], row["rate"]) == (40, 2, 0.05)
    # exact binomial interval: beta quantiles of 2 successes in 40
    assert row["rate_ci_low"] == pytest.approx(stats.beta.ppf(0.025, 2, 39))  # 0.0061
    assert row["rate_ci_high"] == pytest.approx(stats.beta.ppf(0.975, 3, 38))  # 0.1692


def _conversion_rate(p_values: pl.DataFrame) -> dict:
    return false_positive_rate(p_values.filter(pl.col("metric").is_in(CONVERSION_METRICS)),
                               by="is_underpowered").rows_by_key("is_underpowered", named=True, unique=True)


def test_delta_method_over_rejects_in_small_arms_which_it_labels_underpowered():
    few = _conversion_rate(aa_p_values(40, 300, np.random.default_rng(1)))  # about 5 converters per arm
    assert list(few) == [True] and few[True]["rate_ci_low"] > 0.05  # measured 8.9% [7.4%, 10.7%]
    many = _conversion_rate(aa_p_values(1500, 300, np.random.default_rng(2)))  # about 190 converters per arm
    assert list(many) == [False] and many[False]["rate"] <= 0.06  # measured 3.8%
