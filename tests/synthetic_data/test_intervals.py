"""Tests of synthetic_data/intervals.py: Wilson and Tango score intervals against their formulas, a
published example and the edges (0 or all hits, no discordant label) where a bootstrap collapses."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic_data.intervals import (bootstrap_interval, clustered_paired_difference_interval, holm_adjust,
                                     paired_difference_interval, proportion_interval)

Z2 = 1.959963984540054**2  # the 97.5% normal quantile, squared


def _wilson(hits: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) by its formula: centre (p + z²/2n) / (1 + z²/n),
    half-width z √(p(1-p)/n + z²/4n²) / (1 + z²/n)."""
    share = hits / n
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def test_proportion_interval_is_wilsons_and_keeps_its_width_at_zero_and_all_hits():
    assert proportion_interval(0, 50) == pytest.approx((0.0, 0.0713), abs=1e-4)  # a bootstrap gave [0, 0]
    assert proportion_interval(50, 50) == pytest.approx((0.9287, 1.0), abs=1e-4)  # and [1, 1]
    assert proportion_interval(30, 100) == pytest.approx(_wilson(30, 100))
    assert all(np.isnan(proportion_interval(0, 0)))


def _pairs(both: int, only_method: int, only_reference: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    hits = np.array([1] * both + [1] * only_method + [0] * only_reference + [0] * neither)
    reference = np.array([1] * both + [0] * only_method + [1] * only_reference + [0] * neither)
    return hits, reference


def test_paired_difference_interval_is_tangos_score_interval():
    # Fagerland, Lydersen & Laake (2014, Stat Med 33:2850): airway hyper-responsiveness of 21 children
    # before and after stem cell transplantation; Tango's asymptotic score interval -0.517 to -0.026.
    assert paired_difference_interval(*_pairs(1, 1, 7, 12)) == pytest.approx((-0.517, -0.026), abs=5e-4)


def test_paired_difference_interval_keeps_its_width_without_discordant_labels():
    """0 of 50 labels discordant: the difference is 0, but up to z²/(n + z²) = 7.1% of labels could
    still differ either way (the Wilson bound of 0/50), so the interval is ±0.071, not [0, 0]."""
    for both in (0, 25, 50):
        assert paired_difference_interval(*_pairs(both, 0, 0, 50 - both)) == pytest.approx(
            (-Z2 / (50 + Z2), Z2 / (50 + Z2)))
    # every label hit by the method only: the difference is 1, its lower bound (n - z²) / (n + z²)
    assert paired_difference_interval(*_pairs(0, 50, 0, 0)) == pytest.approx(((50 - Z2) / (50 + Z2), 1.0))
    assert paired_difference_interval(*_pairs(0, 0, 50, 0)) == pytest.approx((-1.0, -(50 - Z2) / (50 + Z2)))
    assert all(np.isnan(paired_difference_interval(np.array([]), np.array([]))))


def test_the_clustered_interval_widens_with_the_labels_a_user_repeats():
    """One label per user: close to Tango's interval. Each user's outcome copied to 4 anchors (perfectly
    correlated labels): the resampled users carry the same information as before, so the interval keeps its
    width, where Tango's on the copies (treating them as independent) halves."""
    hits, reference = _pairs(30, 70, 40, 260)
    users = np.arange(hits.size)
    single = clustered_paired_difference_interval(hits, reference, users)
    tango = paired_difference_interval(hits, reference)
    assert single == pytest.approx(tango, abs=0.01)
    copies = clustered_paired_difference_interval(np.repeat(hits, 4), np.repeat(reference, 4), np.repeat(users, 4))
    naive = paired_difference_interval(np.repeat(hits, 4), np.repeat(reference, 4))
    width = single[1] - single[0]
    assert copies[1] - copies[0] == pytest.approx(width, rel=0.1)
    assert naive[1] - naive[0] == pytest.approx(width / 2, rel=0.1)
    assert clustered_paired_difference_interval(hits, reference, users) == single  # seeded
    assert all(np.isnan(clustered_paired_difference_interval(np.array([]), np.array([]), np.array([]))))


def test_bootstrap_interval_counts_infinite_and_undefined_replicates_exactly():
    unbounded = bootstrap_interval(np.array([-0.2] + [0.1] * 18 + [np.inf]), alpha=0.1)
    assert (unbounded.ci_low, unbounded.ci_high, unbounded.undefined_resamples) == (-0.2, np.inf, 1)
    assert unbounded.p_value == pytest.approx(2 * 2 / 21)  # 1 of 20 replicates <= 0: 2 (1 + 1) / (20 + 1)
    undefined = bootstrap_interval(np.array([np.nan] + [0.1] * 39), alpha=0.1)
    # an undefined replicate counts against both bounds and both tails: 1 of 40 <= 0, p = 2 (1 + 1) / 41
    assert (undefined.ci_low, undefined.ci_high, undefined.undefined_resamples) == (0.1, 0.1, 1)
    assert undefined.p_value == pytest.approx(4 / 41)
    assert bootstrap_interval(np.array([np.nan] * 2 + [0.1] * 38), alpha=0.1).ci_low == -np.inf


def test_holm_adjustment_is_step_down_and_skips_untestable_comparisons():
    adjusted = holm_adjust(np.array([0.01, 0.04, 0.03, np.nan]))
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[3])
    assert holm_adjust(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])
