"""A/B statistics (paper 4.5.2, Table 6): relative change, 95% interval and p-value per metric.

Every metric is a ratio of per-user sums (RoAS = conversion value / spend; per-user metrics
divide by the user count), analysed on the log scale: the delta method linearises log(ratio)
per user, the bootstrap resamples users with Poisson(1) weights. CUPED (Deng et al. 2013)
removes the part of the linearised metric explained by a pre-period covariate. Split designs
compare independent user sets; paired designs (every arm replays the same users with common
random numbers) compare per-user differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import erf, sqrt

import numpy as np


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
    ci_low: float
    ci_high: float
    p_value: float


def _normal_two_sided_p(z: float) -> float:
    return 2.0 * (1.0 - 0.5 * (1.0 + erf(abs(z) / sqrt(2.0))))


def _normal_quantile(probability: float) -> float:
    """Inverse standard normal CDF by bisection (exact enough for interval multipliers)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        middle = (low + high) / 2
        if 0.5 * (1.0 + erf(middle / sqrt(2.0))) < probability:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def log_ratio_influence(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Per-user influence of log(sum(numerator)/sum(denominator)); its variance / n is var(log ratio)."""
    return (numerator - numerator.mean()) / numerator.mean() - (denominator - denominator.mean()) / denominator.mean()


def _cuped_theta(influence: np.ndarray, covariate: np.ndarray) -> float:
    centred = covariate - covariate.mean()
    variance = float(centred @ centred)
    return float((influence - influence.mean()) @ centred / variance) if variance > 0 else 0.0


def compare(control: dict[str, np.ndarray], treatment: dict[str, np.ndarray], metric: RatioMetric, *,
            paired: bool = False, method: str = "delta", cuped: bool = False, alpha: float = 0.05,
            bootstrap_samples: int = 1000, rng: np.random.Generator | None = None) -> Comparison:
    """Compare one metric between arms given per-user columns (paired: same users, same order)."""
    def parts(arm):
        y = np.asarray(arm[metric.numerator], dtype=np.float64)
        x = np.ones_like(y) if metric.denominator is None else np.asarray(arm[metric.denominator], dtype=np.float64)
        return y, x, np.asarray(arm[metric.covariate], dtype=np.float64)

    (y_c, x_c, z_c), (y_t, x_t, z_t) = parts(control), parts(treatment)
    if paired and y_c.size != y_t.size:
        raise ValueError("a paired comparison needs the same users in both arms")
    value_c, value_t = _ratio(y_c, x_c), _ratio(y_t, x_t)
    if not (value_c > 0 and value_t > 0):
        return Comparison(metric.name, value_c, value_t, float("nan"), float("nan"), float("nan"), float("nan"))
    influence_c, influence_t = log_ratio_influence(y_c, x_c), log_ratio_influence(y_t, x_t)
    difference = np.log(value_t) - np.log(value_c)
    theta = 0.0
    if cuped and paired:
        theta = _cuped_theta(influence_t - influence_c, z_c)
    elif cuped:
        theta = _cuped_theta(np.r_[influence_c, influence_t], np.r_[z_c, z_t])
        difference -= theta * (z_t.mean() - z_c.mean())
    if method == "delta":
        if paired:
            variance = np.var(influence_t - influence_c - theta * z_c, ddof=1) / y_c.size
        else:
            z_mean = np.r_[z_c, z_t].mean()
            variance = (np.var(influence_c - theta * (z_c - z_mean), ddof=1) / y_c.size
                        + np.var(influence_t - theta * (z_t - z_mean), ddof=1) / y_t.size)
        se = sqrt(max(variance, 0.0))
        half = _normal_quantile(1 - alpha / 2) * se
        low, high = difference - half, difference + half
        p_value = _normal_two_sided_p(difference / se) if se > 0 else (1.0 if difference == 0 else 0.0)
    elif method == "bootstrap":
        replicates = _bootstrap_differences(y_c, x_c, z_c, y_t, x_t, z_t, theta, paired, bootstrap_samples,
                                            rng or np.random.default_rng(0))
        low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
        tail = min((replicates <= 0).mean(), (replicates >= 0).mean())
        p_value = float(min(1.0, max(2 * tail, 1.0 / bootstrap_samples)))
    else:
        raise ValueError(f"method must be 'delta' or 'bootstrap', got {method!r}")
    return Comparison(metric.name, value_c, value_t, float(np.expm1(difference)), float(np.expm1(low)),
                      float(np.expm1(high)), float(p_value))


def _ratio(y: np.ndarray, x: np.ndarray) -> float:
    total = x.sum()
    return float(y.sum() / total) if total > 0 else float("nan")


def _bootstrap_differences(y_c, x_c, z_c, y_t, x_t, z_t, theta, paired, samples, rng, chunk: int = 100) -> np.ndarray:
    """log-ratio differences over Poisson(1)-weighted user resamples (shared weights when paired)."""
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
    replicates = np.concatenate(out)
    return replicates[np.isfinite(replicates)]
