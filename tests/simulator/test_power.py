import numpy as np
import pytest

from simulator.power import (achieved_mde, log_standard_error_from_interval, mde_multiplier,
                             per_user_log_ratio_variance, planned_log_standard_error, relative_mde)
from simulator.stats import RatioMetric, compare

ROAS = RatioMetric("roas", "value", "spend", "pre")


@pytest.mark.parametrize("alpha,power,multiplier", [(0.05, 0.8, 2.8015852), (0.1, 0.9, 2.9264052)])
def test_mde_multiplier_is_the_two_normal_quantiles(alpha, power, multiplier):
    assert mde_multiplier(alpha, power) == pytest.approx(multiplier, rel=1e-7)  # 1.959964 + 0.841621 at 5%, 80%


def test_relative_mde_is_exp_of_the_multiplier_times_the_standard_error_minus_one():
    assert relative_mde(0.02) == pytest.approx(np.exp(2.8015852 * 0.02) - 1, rel=1e-7)  # +5.763%
    assert relative_mde(0.1, alpha=0.1, power=0.9) == pytest.approx(0.3399610, rel=1e-6)
    assert relative_mde(0.0) == 0.0 and relative_mde(np.inf) == np.inf and np.isnan(relative_mde(np.nan))


def test_planned_standard_error_adds_both_arms_variances():
    assert planned_log_standard_error(2.0, 100, 400, is_paired=False) == pytest.approx(np.sqrt(0.025))
    # paired: the same 100 users, arms taken as uncorrelated: sqrt(2 * 2.0 / 100)
    assert planned_log_standard_error(2.0, 100, 100, is_paired=True) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="paired"):
        planned_log_standard_error(2.0, 100, 99, is_paired=True)


def test_per_user_variance_is_the_delta_influence_variance_after_cuped():
    # log(sum y / sum x) with x = 1: influence (y - mean) / mean = [-0.5, 0.5]; its variance (ddof 1) is 0.5
    assert per_user_log_ratio_variance(np.array([1.0, 3.0]), np.ones(2)) == pytest.approx(0.5)
    # a covariate that tracks the influence exactly leaves nothing
    assert per_user_log_ratio_variance(np.array([1.0, 3.0, 2.0]), np.ones(3), np.array([0.0, 4.0, 2.0])) == \
        pytest.approx(0.0, abs=1e-12)
    assert np.isnan(per_user_log_ratio_variance(np.zeros(5), np.ones(5)))  # no conversions: not estimable


def test_standard_error_from_an_interval_inverts_the_delta_interval():
    z = 1.959964
    low, high = np.expm1(0.1 - z * 0.05), np.expm1(0.1 + z * 0.05)
    assert log_standard_error_from_interval(low, high) == pytest.approx(0.05, rel=1e-6)
    assert achieved_mde(low, high) == pytest.approx(np.expm1(2.8015852 * 0.05), rel=1e-6)
    assert achieved_mde(-0.5, np.inf) == np.inf and achieved_mde(-1.0, 0.5) == np.inf  # unbounded intervals
    assert np.isnan(achieved_mde(np.nan, np.nan))


def _arm(rng, n, lift=1.0):
    spend = rng.gamma(2.0, 1.0, n)
    value = np.where(rng.random(n) < 0.2, lift * spend * rng.lognormal(0, 0.8, n), 0.0)
    return {"value": value, "spend": spend, "pre": np.zeros(n)}


def test_a_true_effect_of_the_planned_mde_is_detected_with_80_percent_power():
    """The planned MDE from a pilot's per-user variance: a true lift of that size is significant in about 80%
    of experiments, and each experiment's achieved MDE is close to the planned one."""
    rng = np.random.default_rng(0)
    pilot = _arm(rng, 200_000)
    users = 2000
    variance = per_user_log_ratio_variance(pilot["value"], pilot["spend"])
    planned = relative_mde(planned_log_standard_error(variance, users, users, is_paired=False))
    detected, achieved = [], []
    for _ in range(400):
        result = compare(_arm(rng, users), _arm(rng, users, lift=1 + planned), ROAS)
        detected.append(result.p_value < 0.05)
        achieved.append(achieved_mde(result.ci_low, result.ci_high))
    assert 0.73 <= np.mean(detected) <= 0.87, np.mean(detected)  # 80% +- 3.5 binomial standard errors
    assert np.median(achieved) == pytest.approx(planned, rel=0.05)


def test_achieved_mde_in_percent_matches_the_fractional_one_and_is_infinite_when_unbounded():
    from simulator.power import achieved_mde, achieved_mde_percent

    assert achieved_mde_percent(-11.39, 27.28) == pytest.approx(achieved_mde(-0.1139, 0.2728) * 100)
    assert achieved_mde_percent(-5.0, float("inf")) == float("inf")
    assert achieved_mde_percent(float("nan"), 3.0) == float("inf")
