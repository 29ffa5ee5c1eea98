"""A/B statistics (paper 4.5.2, Table 6): relative change, 95% interval and p-value per metric.

Every metric is a ratio of per-user sums (RoAS = conversion value / spend; per-user metrics
divide by the user count), analysed on the log scale: the delta method linearises log(ratio)
per user, the bootstrap resamples users with Poisson(1) weights. CUPED (Deng et al. 2013)
removes the part of the linearised metric explained by a pre-period covariate. Split designs
compare independent user sets; paired designs (every arm replays the same users with common
random numbers) compare per-user differences. A bootstrap resample in which an arm's metric is
zero or undefined keeps its infinite or undefined log difference, so an unbounded interval is
reported as unbounded. The sample-ratio-mismatch test (Fabijan et al. 2019) checks that the arms
received the users the design assigns; Holm's step-down adjustment corrects the secondary metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import sqrt

import numpy as np
from scipy import stats

from synthetic_data.intervals import bootstrap_interval

# A comparison is underpowered when its smaller arm has fewer users than MIN_ARM_USERS, or fewer
# users with a nonzero numerator (converters, for RoAS) than MIN_NONZERO_USERS. Below them some
# metric's synthetic A/A false-positive rate at alpha = 0.05 exceeds 7%, for the delta method and
# the bootstrap alike (RoAS with 9-18 converters: 7.8-8.2%; with 4: 13.2% delta, 9.0% bootstrap);
# the comparisons that pass both reject 5.3-5.7% at 200-300 users per arm
# (benchmarks/bench_aa_calibration.py; the table is in docs/results.md, A/A calibration).
MIN_ARM_USERS = 200
MIN_NONZERO_USERS = 30
SRM_ALPHA = 0.001  # the usual sample-ratio-mismatch threshold: flag at p < 0.001


@dataclass(frozen=True)
class RatioMetric:
    """sum(numerator) / sum(denominator) over users (denominator None = per user)."""

    name: str
    numerator: str
    denominator: str | None
    covariate: str  # pre-period column used by CUPED


@dataclass(frozen=True)
class Comparison:
    """Treatment versus control on one metric."""

    metric: str
    control: float
    treatment: float
    relative_change: float
    ci_low: float  # -1.0 = -100%; ci_high = inf when the interval is unbounded above
    ci_high: float
    p_value: float
    undefined_resamples: int = 0  # bootstrap replicates whose change is infinite or undefined
    arm_users: int = 0  # users in the smaller arm
    nonzero_users: int = 0  # users with a nonzero numerator in the smaller arm (converters, for RoAS)
    is_underpowered: bool = False  # too few users or converters (is_underpowered): the test over-rejects


@dataclass(frozen=True)
class SampleRatioCheck:
    """Users each arm received against the design's expected shares (sample-ratio mismatch)."""

    design: str  # split: chi-square test; paired: every arm must replay the same users
    users: tuple[int, ...]
    expected_shares: tuple[float, ...]
    p_value: float  # NaN for the paired design, where no share is random
    is_mismatch: bool


def sample_ratio_mismatch(users: Sequence[int], expected_shares: Sequence[float],
                          threshold: float = SRM_ALPHA) -> SampleRatioCheck:
    """Chi-square goodness-of-fit test of users per arm against the design's shares (any scale),
    flagged as a mismatch at p < threshold (Fabijan et al. 2019); scipy.stats.chisquare."""
    observed = np.asarray(users, dtype=np.float64)
    shares = np.asarray(expected_shares, dtype=np.float64) / np.sum(expected_shares)
    p_value = float(stats.chisquare(observed, observed.sum() * shares).pvalue)
    return SampleRatioCheck("split", tuple(int(u) for u in users), tuple(float(s) for s in shares), p_value,
                            p_value < threshold)


def is_underpowered(arm_users: int, nonzero_users: int) -> bool:
    """True when the smaller arm is too small for a calibrated test (MIN_ARM_USERS, MIN_NONZERO_USERS)."""
    return arm_users < MIN_ARM_USERS or nonzero_users < MIN_NONZERO_USERS


def log_ratio_influence(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Per-user influence of log(sum(numerator)/sum(denominator)); its variance / n is var(log ratio)."""
    return (numerator - numerator.mean()) / numerator.mean() - (denominator - denominator.mean()) / denominator.mean()


def cuped_theta(influence: np.ndarray, covariate: np.ndarray) -> float:
    """CUPED's coefficient: the least-squares slope of the per-user influence on the pre-period covariate
    (0 for a constant covariate); subtracting theta * covariate leaves the mean and cuts the variance."""
    centred = covariate - covariate.mean()
    variance = float(centred @ centred)
    return float((influence - influence.mean()) @ centred / variance) if variance > 0 else 0.0


def compare(control: dict[str, np.ndarray], treatment: dict[str, np.ndarray], metric: RatioMetric, *,
            paired: bool = False, method: str = "delta", cuped: bool = False, alpha: float = 0.05,
            bootstrap_samples: int = 1000, rng: np.random.Generator | None = None) -> Comparison:
    """Compare one metric between arms given per-user columns (paired: same users, same order).

    Returns the relative change of sum(numerator)/sum(denominator) with its 1 - alpha interval
    (ci_high = inf when a bootstrap interval is unbounded) and two-sided p-value; NaN when either
    arm's metric is zero. Raises ValueError for an unknown method or unequal paired arms.
    """
    if method not in ("delta", "bootstrap"):
        raise ValueError(f"method must be 'delta' or 'bootstrap', got {method!r}")

    def parts(arm):
        y = np.asarray(arm[metric.numerator], dtype=np.float64)
        x = np.ones_like(y) if metric.denominator is None else np.asarray(arm[metric.denominator], dtype=np.float64)
        return y, x, np.asarray(arm[metric.covariate], dtype=np.float64)

    (y_c, x_c, z_c), (y_t, x_t, z_t) = parts(control), parts(treatment)
    if paired and y_c.size != y_t.size:
        raise ValueError("a paired comparison needs the same users in both arms")
    value_c, value_t = _ratio(y_c, x_c), _ratio(y_t, x_t)
    arm_users, nonzero_users = min(y_c.size, y_t.size), int(min(np.count_nonzero(y_c), np.count_nonzero(y_t)))
    power = {"arm_users": arm_users, "nonzero_users": nonzero_users,
             "is_underpowered": is_underpowered(arm_users, nonzero_users)}
    if not (value_c > 0 and value_t > 0):
        return Comparison(metric.name, value_c, value_t, *(float("nan"),) * 4, **power)
    influence_c, influence_t = log_ratio_influence(y_c, x_c), log_ratio_influence(y_t, x_t)
    difference = np.log(value_t) - np.log(value_c)
    theta = 0.0
    if cuped and paired:
        theta = cuped_theta(influence_t - influence_c, z_c)
    elif cuped:
        theta = cuped_theta(np.r_[influence_c, influence_t], np.r_[z_c, z_t])
        difference -= theta * (z_t.mean() - z_c.mean())
    if method == "delta":
        if paired:
            variance = np.var(influence_t - influence_c - theta * z_c, ddof=1) / y_c.size
        else:
            z_mean = np.r_[z_c, z_t].mean()
            variance = (np.var(influence_c - theta * (z_c - z_mean), ddof=1) / y_c.size
                        + np.var(influence_t - theta * (z_t - z_mean), ddof=1) / y_t.size)
        se = sqrt(max(variance, 0.0))
        half = stats.norm.ppf(1 - alpha / 2) * se
        low, high = difference - half, difference + half
        p_value = 2 * stats.norm.sf(abs(difference) / se) if se > 0 else (1.0 if difference == 0 else 0.0)
        undefined = 0
    else:
        replicates = _bootstrap_differences(y_c, x_c, z_c, y_t, x_t, z_t, theta, paired, bootstrap_samples,
                                            rng or np.random.default_rng(0))
        interval = bootstrap_interval(replicates, alpha)
        low, high, p_value = interval.ci_low, interval.ci_high, interval.p_value
        undefined = interval.undefined_resamples
    return Comparison(metric.name, value_c, value_t, float(np.expm1(difference)), float(np.expm1(low)),
                      float(np.expm1(high)), float(p_value), undefined, **power)


def _ratio(y: np.ndarray, x: np.ndarray) -> float:
    total = x.sum()
    return float(y.sum() / total) if total > 0 else float("nan")


def _bootstrap_differences(y_c, x_c, z_c, y_t, x_t, z_t, theta, paired, samples, rng, chunk: int = 100) -> np.ndarray:
    """log-ratio differences over Poisson(1)-weighted user resamples (shared weights when paired);
    +inf where a resample has no control numerator, -inf no treatment numerator, NaN where neither
    has one or an arm's ratio is 0/0."""
    out = []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        weights_c = rng.poisson(1.0, (size, y_c.size)).astype(np.float64)
        weights_t = weights_c if paired else rng.poisson(1.0, (size, y_t.size)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_c = np.log(weights_c @ y_c) - np.log(weights_c @ x_c)
            log_t = np.log(weights_t @ y_t) - np.log(weights_t @ x_t)
            shift = theta * ((weights_t @ z_t) / weights_t.sum(1) - (weights_c @ z_c) / weights_c.sum(1))
            out.append(log_t - log_c - (0.0 if paired else shift))
    return np.concatenate(out)
