"""Confidence intervals and p-values shared by every stage that reports them (the LLM evaluation, the
real-data results, Table 5, the A/B tests).

A share of n labels is a binomial proportion: Wilson's score interval (Wilson 1927). The difference
of two methods' shares on the same labels is a difference of paired proportions: Tango's score
interval (Tango 1998, Statistics in Medicine 17:891), recommended for paired binomial data by
Fagerland, Lydersen & Laake (2014). Both keep their coverage at 0 and at n hits, where a bootstrap
of the hits collapses to a single point. Both assume independent labels: when one user has labels at
several anchors, the paired difference's interval is a bootstrap that resamples users instead
(a cluster bootstrap: Davison & Hinkley 1997, section 3.8).

A bootstrap's percentile interval keeps every replicate: an infinite one stays in its tail (the
bound is then unbounded), an undefined one counts against both bounds and both tails, never dropped.
Holm's step-down adjustment holds the family-wise error rate of several tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


def proportion_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of successes / trials, e.g. Recall@K = hits / labels; NaNs for no trials.

    0 hits of 50 give [0, 0.071] (a bootstrap gives [0, 0]).
    """
    if trials == 0:
        return float("nan"), float("nan")
    interval = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def _tango_score(difference: float, only_method: int, only_reference: int, pairs: int) -> float:
    """Tango's score statistic Z of a paired difference, returned as Z / sqrt(1 + Z^2): monotone in Z
    and finite where Z's variance vanishes (at -1, +1, and at the estimate when no pair is discordant
    or every pair is)."""
    b, c, n = only_method, only_reference, pairs
    # maximum-likelihood probability of the (miss, hit) cell given the difference (Tango 1998)
    linear, constant = -b - c + (2 * n - b + c) * difference, -c * difference * (1 - difference)
    only_reference_probability = (np.sqrt(max(linear**2 - 8 * n * constant, 0.0)) - linear) / (4 * n)
    variance = max(n * (2 * only_reference_probability + difference * (1 - difference)), 0.0)
    excess = b - c - n * difference
    return 0.0 if excess == 0 else excess / np.sqrt(variance + excess**2)


def paired_difference_interval(hits: np.ndarray, reference_hits: np.ndarray, confidence: float = 0.95
                               ) -> tuple[float, float]:
    """Tango's score interval of mean(hits) - mean(reference_hits), two 0/1 arrays over the same labels.

    It depends on the discordant labels only (hit by one method, not the other); with none of 50 it
    gives [-0.071, 0.071], not [0, 0]: up to ~7% of labels could still differ in either direction.
    NaNs for no labels.
    """
    hits, reference_hits = np.asarray(hits, dtype=bool), np.asarray(reference_hits, dtype=bool)
    pairs = len(hits)
    if pairs == 0:
        return float("nan"), float("nan")
    only_method, only_reference = int((hits & ~reference_hits).sum()), int((~hits & reference_hits).sum())
    estimate = (only_method - only_reference) / pairs
    z = stats.norm.ppf(0.5 + confidence / 2)
    level = z / np.sqrt(1 + z**2)  # |Z| = z on _tango_score's scale
    counts = (only_method, only_reference, pairs)
    low = -1.0 if estimate == -1 else optimize.brentq(lambda d: _tango_score(d, *counts) - level, -1.0, estimate)
    high = 1.0 if estimate == 1 else optimize.brentq(lambda d: _tango_score(d, *counts) + level, estimate, 1.0)
    return float(low), float(high)


def clustered_paired_difference_interval(hits: np.ndarray, reference_hits: np.ndarray, clusters: np.ndarray,
                                         confidence: float = 0.95, n_resamples: int = 4000, seed: int = 0
                                         ) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(hits) - mean(reference_hits), two 0/1 arrays over the same labels,
    that resamples whole clusters (`clusters`: one id per label, e.g. the user of labels at several anchors,
    which are not independent); each resample's difference is its clusters' summed differences over their
    summed labels (scipy.stats.bootstrap, paired). Seeded; NaNs for no labels. Without a discordant label it
    collapses to [0, 0], where Tango's interval (`paired_difference_interval`) keeps its width."""
    hits, reference_hits = np.asarray(hits, dtype=np.int64), np.asarray(reference_hits, dtype=np.int64)
    if hits.size == 0:
        return float("nan"), float("nan")
    _, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    differences = np.bincount(cluster, weights=hits - reference_hits)
    labels = np.bincount(cluster).astype(np.float64)
    result = stats.bootstrap((differences, labels), lambda d, n, axis=-1: d.sum(axis) / n.sum(axis), paired=True,
                             vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile interval and two-sided p-value of a statistic whose null value is 0."""

    ci_low: float
    ci_high: float
    p_value: float
    undefined_resamples: int


def bootstrap_interval(replicates: np.ndarray, alpha: float) -> BootstrapInterval:
    """Percentile interval and two-sided p-value of "no change" from bootstrap replicates [B], keeping
    every replicate: +-inf ones stay in the tails so an unbounded side is reported as inf, and
    undefined (NaN) ones count against both bounds and both tails rather than being dropped."""
    replicates = np.asarray(replicates, dtype=np.float64)
    is_undefined = np.isnan(replicates)
    low = np.quantile(np.where(is_undefined, -np.inf, replicates), alpha / 2, method="lower")
    high = np.quantile(np.where(is_undefined, np.inf, replicates), 1 - alpha / 2, method="higher")
    far_side = min(int(((replicates <= 0) | is_undefined).sum()), int(((replicates >= 0) | is_undefined).sum()))
    p_value = min(1.0, 2 * (far_side + 1) / (replicates.size + 1))  # (k + 1) / (B + 1): never 0
    return BootstrapInterval(float(low), float(high), p_value, int((~np.isfinite(replicates)).sum()))


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, which hold the family-wise error rate; NaN entries
    (untestable comparisons) stay NaN and are not counted in the family."""
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p_values.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p_values))
    order = tested[np.argsort(p_values[tested], kind="stable")]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((order.size - np.arange(order.size)) * p_values[order]))
    return adjusted
