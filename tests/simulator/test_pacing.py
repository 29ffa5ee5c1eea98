import numpy as np
import pytest

from simulator.config import PacingConfig
from simulator.pacing import has_budget, next_pass_rates

CONFIG = PacingConfig(tolerance=0.1, decrease=0.5, increase=2.0, min_pass_rate=0.05)


def test_pass_rates_follow_the_linear_plan():
    budget = np.full(5, 100.0)
    # at 40% of the day the plan is 40 spent (+-10%)
    spend = np.array([80.0, 40.0, 10.0, 100.0, 43.0])
    rates = np.array([0.8, 0.6, 0.3, 1.0, 0.04])
    new = next_pass_rates(rates, spend, budget, 0.4, CONFIG)
    assert new == pytest.approx([0.4, 0.6, 0.6, 0.0, 0.05])  # ahead, on plan, behind, exhausted, floor


def test_rates_recover_to_one_and_budget_gate():
    rates = np.array([0.7])
    for _ in range(3):
        rates = next_pass_rates(rates, np.array([0.0]), np.array([100.0]), 0.5, CONFIG)
    assert rates == pytest.approx([1.0])
    assert has_budget(np.array([99.9, 100.0]), np.array([100.0, 100.0])).tolist() == [True, False]
