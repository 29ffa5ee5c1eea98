"""Power of an A/B on a ratio metric such as RoAS: the minimum detectable effect (MDE) at 80% power.

A two-sided level-alpha z-test of a log ratio with standard error se detects a true log change of
(z_{1-alpha/2} + z_{power}) * se with probability `power` (the normal approximation the delta
method already makes; Kohavi, Tang & Xu 2020, *Trustworthy Online Controlled Experiments*, ch. 17),
so the relative MDE is exp((z_{1-alpha/2} + z_{power}) * se) - 1. The planned MDE takes se from
the control arm's per-user variance before any treatment arm runs; the achieved MDE takes it from
a finished comparison's interval.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from simulator.stats import cuped_theta, log_ratio_influence

POWER = 0.8  # probability of detecting an effect of the MDE's size


def mde_multiplier(alpha: float = 0.05, power: float = POWER) -> float:
    """z_{1-alpha/2} + z_{power}: standard errors between no change and a change detected with
    probability `power` by a two-sided level-alpha test (2.8016 at alpha 0.05, power 0.8)."""
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def relative_mde(log_standard_error: float, alpha: float = 0.05, power: float = POWER) -> float:
    """Relative MDE of a comparison whose log ratio has this standard error: exp(multiplier * se) - 1
    (se 0.02 -> +5.77%); inf for an infinite se, NaN for NaN."""
    return float(np.expm1(mde_multiplier(alpha, power) * log_standard_error))


def per_user_log_ratio_variance(numerator: np.ndarray, denominator: np.ndarray,
                                covariate: np.ndarray | None = None) -> float:
    """Variance over users [n] of the delta-method influence of log(sum(numerator) / sum(denominator)),
    after CUPED on `covariate` when given; divided by n it is var(log ratio). NaN when either sum is 0."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if not (numerator.sum() > 0 and denominator.sum() > 0) or numerator.size < 2:
        return float("nan")
    influence = log_ratio_influence(numerator, denominator)
    if covariate is not None:
        covariate = np.asarray(covariate, np.float64)
        influence = influence - cuped_theta(influence, covariate) * covariate
    return float(np.var(influence, ddof=1))


def planned_log_standard_error(per_user_variance: float, control_users: int, treatment_users: int,
                               is_paired: bool) -> float:
    """Standard error of the log-ratio difference a design will have, from the control's per-user variance.

    The treatment's variance is taken equal to the control's (true under no effect). Split design:
    sqrt(v / n_c + v / n_t). Paired design (the same n users in both arms): sqrt(2 v / n), which
    takes the arms' per-user outcomes as uncorrelated; common random numbers correlate them
    positively, so this is an upper bound and the planned MDE errs large. Raises ValueError for a
    paired design with unequal arms.
    """
    if is_paired and control_users != treatment_users:
        raise ValueError(f"a paired design replays the same users in every arm, got {control_users} and "
                         f"{treatment_users}")
    return math.sqrt(per_user_variance / control_users + per_user_variance / treatment_users)


def log_standard_error_from_interval(ci_low: float, ci_high: float, alpha: float = 0.05) -> float:
    """Normal-equivalent standard error of a log change given its 1 - alpha interval on the relative
    scale (-1 = -100%): (log(1 + ci_high) - log(1 + ci_low)) / (2 z_{1-alpha/2}).

    Exact for the delta method's interval (symmetric on the log scale); for a bootstrap percentile
    interval it is the replicates' central spread in standard errors. inf for an unbounded interval.
    """
    with np.errstate(divide="ignore"):
        width = np.log1p(ci_high) - np.log1p(ci_low)
    return float(width / (2 * stats.norm.ppf(1 - alpha / 2)))


def achieved_mde(ci_low: float, ci_high: float, alpha: float = 0.05, power: float = POWER) -> float:
    """Relative MDE a finished comparison had, from its 1 - alpha interval (see log_standard_error_from_interval)."""
    return relative_mde(log_standard_error_from_interval(ci_low, ci_high, alpha), alpha, power)


def achieved_mde_percent(ci_low: float, ci_high: float, alpha: float = 0.05, power: float = POWER) -> float:
    """achieved_mde for an interval given in percent (Table 5's and the dose-response's), in percent; inf when a
    bound is unbounded or undefined."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return float("inf")
    return achieved_mde(ci_low / 100, ci_high / 100, alpha, power) * 100
