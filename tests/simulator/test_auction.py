import numpy as np
import pytest

from simulator.auction import ecpm, run_auction
from simulator.config import AuctionConfig
from synthetic_data.config_io import ConfigError

RESERVE = 0.5  # dollars per 1,000 impressions; prices come back per impression


def test_ecpm_for_ocpm_and_roas_campaigns():
    values = ecpm(is_roas=np.array([False, True, True]), bid=np.array([10.0, 10.0, 2.0]),
                  target_roas=np.array([np.nan, 4.0, 4.0]), price=np.array([99.0, 20.0, 20.0]),
                  p_conversion=np.array([0.01, 0.01, 0.01]))
    # OCPM: 1000 * bid * p; ROAS: 1000 * min(price / target, max bid) * p
    assert values == pytest.approx([100.0, 50.0, 20.0])


def test_gsp_prices_several_slots_and_reserve():
    group = np.array([0, 0, 0, 0, 1, 1])
    values = np.array([30.0, 50.0, 10.0, 0.5, 8.0, 2.0])
    outcome = run_auction(group, np.arange(6), values, slots=np.array([2, 2, 2, 2, 3, 3]), reserve_ecpm=1.0)
    assert outcome.is_winner.tolist() == [True, True, False, False, True, True]
    assert outcome.position.tolist() == [1, 0, -1, -1, 0, 1]
    # each winner pays the next eCPM down (per impression = eCPM / 1000), never below the reserve;
    # the 0.5 bid is below the reserve so it neither wins nor sets a price
    assert outcome.price == pytest.approx([0.010, 0.030, 0.0, 0.0, 0.002, 0.001])
    assert (outcome.price[outcome.is_winner] <= values[outcome.is_winner] / 1000).all()


def test_a_lone_advertiser_pays_the_reserve_not_its_own_next_item():
    outcome = run_auction(np.array([0, 0]), np.array([7, 7]), np.array([5.0, 4.0]), np.array([2, 2]), RESERVE)
    assert outcome.is_winner.tolist() == [True, False]  # one slot per advertiser: its 4 does not take part
    assert outcome.position.tolist() == [0, -1]
    assert outcome.price == pytest.approx([0.0005, 0.0])  # the reserve, not 4 / 1000


def test_two_advertisers_each_priced_by_the_other():
    # advertiser 1 brings eCPMs 5 and 4, advertiser 2 brings 3; two slots
    outcome = run_auction(np.zeros(3), np.array([1, 1, 2]), np.array([5.0, 4.0, 3.0]), np.full(3, 2), RESERVE)
    assert outcome.position.tolist() == [0, -1, 1]
    # 1 pays 2's eCPM; 2 pays the reserve, since 1's dropped 4 takes no part in pricing either
    assert outcome.price == pytest.approx([0.003, 0.0, 0.0005])


def test_several_slots_per_advertiser_are_still_priced_by_another_advertiser():
    values = np.array([10.0, 8.0, 7.0, 5.0])
    outcome = run_auction(np.zeros(4), np.array([1, 2, 1, 3]), values, np.full(4, 3), RESERVE,
                          max_slots_per_advertiser=2)
    assert outcome.position.tolist() == [0, 1, 2, -1]
    assert outcome.price == pytest.approx([0.008, 0.007, 0.005, 0.0])  # 1 -> 2's 8, 2 -> 1's 7, 1 -> 3's 5
    # advertiser 1's third candidate does not take part: 2 pays the reserve
    crowded = run_auction(np.zeros(4), np.array([1, 1, 2, 1]), np.array([10.0, 9.0, 8.0, 7.0]), np.full(4, 3),
                          RESERVE, max_slots_per_advertiser=2)
    assert crowded.position.tolist() == [0, 1, 2, -1]
    assert crowded.price == pytest.approx([0.008, 0.008, 0.0005, 0.0])
    alone = run_auction(np.array([0, 0]), np.array([7, 7]), np.array([5.0, 4.0]), np.array([2, 2]), RESERVE,
                        max_slots_per_advertiser=2)
    assert alone.position.tolist() == [0, 1] and alone.price == pytest.approx([0.0005, 0.0005])


def test_ties_keep_the_input_order():
    across = run_auction(np.array([3, 3]), np.array([1, 2]), np.array([5.0, 5.0]), np.array([1, 1]), 0.0)
    assert across.is_winner.tolist() == [True, False] and across.price[0] == pytest.approx(0.005)
    # an advertiser's tied candidates: the first enters, the second does not price the rival
    within = run_auction(np.zeros(3), np.array([1, 1, 2]), np.array([5.0, 5.0, 2.0]), np.full(3, 2), RESERVE)
    assert within.position.tolist() == [0, -1, 1]
    assert within.price == pytest.approx([0.002, 0.0, 0.0005])


def test_below_the_reserve_nobody_wins_or_sets_a_price():
    none = run_auction(np.array([0, 0]), np.array([1, 2]), np.array([0.1, 0.2]), np.array([1, 1]), reserve_ecpm=1.0)
    assert not none.is_winner.any() and (none.position == -1).all() and (none.price == 0).all()
    priced = run_auction(np.zeros(2), np.array([1, 2]), np.array([3.0, 0.9]), np.array([2, 2]), reserve_ecpm=1.0)
    assert priced.position.tolist() == [0, -1] and priced.price == pytest.approx([0.001, 0.0])


def test_several_auctions_in_one_call_do_not_mix():
    # unsorted rows of two requests; advertiser 7 bids in both
    group = np.array([1, 0, 1, 0, 0, 1])
    outcome = run_auction(group, np.array([7, 7, 8, 8, 7, 7]), np.array([6.0, 5.0, 2.0, 3.0, 4.0, 1.0]),
                          np.array([1, 2, 1, 2, 2, 1]), RESERVE)
    # request 0: 7 (5) over 8 (3), 7's 4 dropped; request 1, one slot: 7 (6) over 8 (2), 7's 1 dropped
    assert outcome.position.tolist() == [0, 0, -1, 1, -1, -1]
    assert outcome.price == pytest.approx([0.002, 0.003, 0.0, 0.0005, 0.0, 0.0])


def _reference_auction(group, advertiser_id, values, slots, reserve, max_slots):
    """The pricing rule, one auction at a time in plain Python (the oracle for the vectorised version)."""
    position, price = np.full(values.size, -1), np.zeros(values.size)
    for request in np.unique(group):
        rows = sorted(np.flatnonzero((group == request) & (values >= reserve)), key=lambda row: (-values[row], row))
        entered, participants = {}, []
        for row in rows:
            if entered.get(advertiser_id[row], 0) < max_slots:
                entered[advertiser_id[row]] = entered.get(advertiser_id[row], 0) + 1
                participants.append(row)
        for rank, row in enumerate(participants[:slots[row]]):
            rivals = [values[other] for other in participants[rank + 1:] if advertiser_id[other] != advertiser_id[row]]
            position[row], price[row] = rank, max([reserve, *rivals[:1]]) / 1000
    return position, price


@pytest.mark.parametrize("max_slots", [1, 2, 3])
def test_matches_the_one_auction_at_a_time_rule_on_random_markets(max_slots):
    rng = np.random.default_rng(max_slots)
    n = 2000
    group = rng.integers(0, 200, n)
    advertiser_id = rng.integers(0, 4, n)
    values = rng.integers(0, 8, n).astype(np.float64)  # few distinct eCPMs: many ties
    slots = rng.integers(1, 5, 200)[group]
    outcome = run_auction(group, advertiser_id, values, slots, 2.0, max_slots)
    position, price = _reference_auction(group, advertiser_id, values, slots, 2.0, max_slots)
    assert outcome.position.tolist() == position.tolist()
    assert outcome.price == pytest.approx(price)
    assert (outcome.is_winner == (position >= 0)).all()


def test_max_slots_per_advertiser_is_validated():
    with pytest.raises(ConfigError, match="auction.max_slots_per_advertiser"):
        AuctionConfig(max_slots_per_advertiser=0)
    with pytest.raises(ValueError, match="max_slots_per_advertiser"):
        run_auction(np.zeros(1), np.zeros(1), np.ones(1), np.ones(1), 0.0, max_slots_per_advertiser=0)
