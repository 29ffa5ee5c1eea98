import numpy as np
import pytest

from simulator.auction import ecpm, run_auction


def test_ecpm_for_ocpm_and_roas_campaigns():
    values = ecpm(is_roas=np.array([False, True, True]), bid=np.array([10.0, 10.0, 2.0]),
                  target_roas=np.array([np.nan, 4.0, 4.0]), price=np.array([99.0, 20.0, 20.0]),
                  p_conversion=np.array([0.01, 0.01, 0.01]))
    # OCPM: 1000 * bid * p; ROAS: 1000 * min(price / target, max bid) * p
    assert values == pytest.approx([100.0, 50.0, 20.0])


def test_gsp_prices_several_slots_and_reserve():
    group = np.array([0, 0, 0, 0, 1, 1])
    values = np.array([30.0, 50.0, 10.0, 0.5, 8.0, 2.0])
    outcome = run_auction(group, values, slots=np.array([2, 2, 2, 2, 3, 3]), reserve_ecpm=1.0)
    assert outcome.is_winner.tolist() == [True, True, False, False, True, True]
    assert outcome.position.tolist() == [1, 0, -1, -1, 0, 1]
    # each winner pays the next eCPM down (per impression = eCPM / 1000), never below the reserve;
    # the 0.5 bid is below the reserve so it neither wins nor sets a price
    assert outcome.price == pytest.approx([0.010, 0.030, 0.0, 0.0, 0.002, 0.001])
    assert (outcome.price[outcome.is_winner] <= values[outcome.is_winner] / 1000).all()


def test_everyone_below_reserve_and_ties():
    none = run_auction(np.array([0, 0]), np.array([0.1, 0.2]), np.array([1, 1]), reserve_ecpm=1.0)
    assert not none.is_winner.any() and (none.position == -1).all()
    tie = run_auction(np.array([3, 3]), np.array([5.0, 5.0]), np.array([1, 1]), reserve_ecpm=0.0)
    assert tie.is_winner.tolist() == [True, False] and tie.price[0] == pytest.approx(0.005)
