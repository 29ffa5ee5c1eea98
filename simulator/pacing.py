"""Budget pacing (paper 4.5): throttle each advertiser so its spend follows a linear daily plan.

A pure step `next_pass_rates(pass_rates, spend_today, budget, day_fraction, config)`: ahead of
plan the pass rate shrinks, behind plan it grows back towards 1, and an exhausted budget stops
the advertiser until midnight. An advertiser takes part in an auction with its pass rate.
"""

from __future__ import annotations

import numpy as np

from simulator.config import PacingConfig


def next_pass_rates(pass_rates: np.ndarray, spend_today: np.ndarray, budget: np.ndarray,
                    day_fraction: float, config: PacingConfig) -> np.ndarray:
    """Pass rates for the next pacing interval given spend so far and the share of the day gone."""
    plan = budget * day_fraction
    is_ahead = spend_today > plan * (1.0 + config.tolerance)
    is_behind = spend_today < plan * (1.0 - config.tolerance)
    rates = np.where(is_ahead, pass_rates * config.decrease,
                     np.where(is_behind, pass_rates * config.increase, pass_rates))
    rates = np.clip(rates, config.min_pass_rate, 1.0)
    return np.where(spend_today >= budget, 0.0, rates)


def has_budget(spend_today: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Advertisers that may still enter auctions today."""
    return spend_today < budget
