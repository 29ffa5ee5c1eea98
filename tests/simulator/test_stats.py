import numpy as np
import pytest

from simulator.report import srm_line
from simulator.stats import RatioMetric, compare, log_ratio_influence, sample_ratio_mismatch

ROAS = RatioMetric("roas", "value", "spend", "pre")
PER_USER = RatioMetric("value_per_user", "value", None, "pre")


def _arm(rng, n, lift=1.0):
    """Skewed per-user data: most users convert nothing; a pre-period covariate predicts value."""
    pre = rng.gamma(0.5, 2.0, n)
    spend = rng.gamma(2.0, 1.0, n)
    converts = rng.random(n) < 0.2
    value = np.where(converts, lift * (1 + pre) * rng.lognormal(0, 0.5, n), 0.0)
    return {"value": value, "spend": spend, "pre": pre}


@pytest.mark.parametrize("alpha,z", [(0.05, 1.95996398), (0.2, 1.28155157)])
def test_point_estimate_and_delta_variance_are_exact(alpha, z):
    control = {"value": np.array([1.0, 2.0, 3.0, 6.0]), "spend": np.ones(4), "pre": np.zeros(4)}
    treatment = {"value": np.array([2.0, 4.0, 6.0, 12.0]), "spend": np.ones(4), "pre": np.zeros(4)}
    result = compare(control, treatment, PER_USER, alpha=alpha)
    assert result.control == pytest.approx(3.0) and result.treatment == pytest.approx(6.0)
    assert result.relative_change == pytest.approx(1.0)
    # var(log mean) = var(y) / (n * mean^2) per arm; both arms have the same relative spread
    se = np.sqrt(2 * np.var([1, 2, 3, 6], ddof=1) / (4 * 9.0))
    assert result.ci_high == pytest.approx(np.exp(np.log(2) + z * se) - 1, rel=1e-6)
    assert result.ci_low == pytest.approx(np.exp(np.log(2) - z * se) - 1, rel=1e-6)
    assert result.p_value == pytest.approx(0.173414, rel=1e-5)  # erfc(log 2 / (0.50918 * sqrt 2))
    influence = log_ratio_influence(np.array([1.0, 3.0]), np.array([1.0, 1.0]))
    assert influence == pytest.approx([-0.5, 0.5])


@pytest.mark.parametrize("method,repeats", [("delta", 400), ("bootstrap", 120)])
def test_aa_false_positive_rate_is_about_alpha(method, repeats):
    rng = np.random.default_rng(1)
    p_values, covered = [], []
    for _ in range(repeats):
        result = compare(_arm(rng, 300), _arm(rng, 300), ROAS, method=method, bootstrap_samples=200, rng=rng)
        p_values.append(result.p_value)
        covered.append(result.ci_low <= 0 <= result.ci_high)
    rate = np.mean(np.array(p_values) < 0.05)
    assert 0.01 <= rate <= 0.10, rate
    assert np.mean(covered) >= 0.90


def test_real_lift_is_detected_in_both_methods():
    rng = np.random.default_rng(2)
    control, treatment = _arm(rng, 3000), _arm(rng, 3000, lift=1.3)
    for method in ("delta", "bootstrap"):
        result = compare(control, treatment, ROAS, method=method, rng=rng)
        assert result.p_value < 0.01 and result.ci_low < 0.3 < result.ci_high


def test_cuped_narrows_the_interval_without_moving_the_truth():
    rng = np.random.default_rng(3)

    def arm(n):  # value tracks the pre-period closely, as a user's habits do
        pre = rng.gamma(2.0, 1.0, n)
        return {"value": pre * rng.lognormal(0, 0.3, n), "pre": pre}

    widths, plain_widths, changes = [], [], []
    for _ in range(20):
        control, treatment = arm(1000), arm(1000)
        adjusted = compare(control, treatment, PER_USER, cuped=True)
        plain = compare(control, treatment, PER_USER)
        widths.append(adjusted.ci_high - adjusted.ci_low)
        plain_widths.append(plain.ci_high - plain.ci_low)
        changes.append(adjusted.relative_change)
    assert np.mean(widths) < 0.9 * np.mean(plain_widths)
    standard_error = np.mean(widths) / (2 * 1.96) / np.sqrt(len(changes))
    assert abs(np.mean(changes)) < 3 * standard_error  # A/A arms: the adjusted change stays centred on 0


def test_paired_design_uses_per_user_differences():
    rng = np.random.default_rng(4)
    base = _arm(rng, 500)
    treatment = {**base, "value": base["value"] * 1.05}  # same users, a uniform 5% lift
    paired = compare(base, treatment, PER_USER, paired=True)
    split = compare(base, treatment, PER_USER)
    assert paired.relative_change == pytest.approx(0.05)
    assert paired.p_value < 1e-6 < split.p_value


def test_empty_metric_gives_nan_not_a_crash():
    arm = {"value": np.zeros(5), "spend": np.ones(5), "pre": np.zeros(5)}
    assert np.isnan(compare(arm, arm, ROAS).p_value)


def _converters(count, users=60):
    value = np.zeros(users)
    value[:count] = 50.0
    return {"value": value, "spend": np.ones(users), "pre": np.zeros(users)}


def test_bootstrap_keeps_resamples_without_control_converters_and_reports_the_bound_unbounded():
    """60 users per arm, 3 vs 6 converters (issue #13.5): about 2000 * (e^-3 + e^-6) = 104 resamples have
    no converter in an arm; dropping them once quoted an upper bound of +715%."""
    result = compare(_converters(3), _converters(6), ROAS, method="bootstrap", bootstrap_samples=2000,
                     rng=np.random.default_rng(0))
    assert result.relative_change == pytest.approx(1.0)
    assert result.ci_high == np.inf and -1 < result.ci_low < 0
    assert 70 < result.undefined_resamples < 140
    assert result.nonzero_users == 3 and result.is_underpowered


@pytest.mark.parametrize("converters,users,is_underpowered", [(29, 200, True), (30, 200, False), (30, 199, True)])
def test_comparison_is_underpowered_below_200_users_or_30_converters_in_the_smaller_arm(converters, users,
                                                                                        is_underpowered):
    for method in ("delta", "bootstrap"):
        result = compare(_converters(converters, users), _converters(80, 400), ROAS, method=method,
                         bootstrap_samples=100)
        assert (result.arm_users, result.nonzero_users) == (users, converters)
        assert result.is_underpowered == is_underpowered


@pytest.mark.parametrize("users,p_value,is_mismatch", [
    ((5000, 5000), 1.0, False),
    ((5100, 4900), 0.0455003, False),  # chi-square 4 on 1 df: p < 0.05 but not below the SRM threshold
    ((5200, 4800), 6.33425e-05, True),  # chi-square 16
])
def test_sample_ratio_mismatch_is_a_chi_square_test_flagged_below_0_001(users, p_value, is_mismatch):
    check = sample_ratio_mismatch(users, [1, 1])
    assert check.p_value == pytest.approx(p_value, rel=1e-5) and check.is_mismatch == is_mismatch
    assert check.expected_shares == (0.5, 0.5)
    assert ("Sample-ratio mismatch" in srm_line(check)) == is_mismatch


def test_sample_ratio_mismatch_takes_unequal_design_shares():
    assert sample_ratio_mismatch([2000, 1000, 1000], [2, 1, 1]).p_value == pytest.approx(1.0)
    assert sample_ratio_mismatch([1000, 1000, 1000], [2, 1, 1]).is_mismatch
