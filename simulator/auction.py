"""The ads auction (paper 4.5): eCPM from bids and predicted rates, several slots, GSP prices, reserve.

OCPM campaigns bid per conversion; ROAS campaigns bid the item's price over their target RoAS,
capped by their maximum bid. Either way eCPM = 1,000 x value per conversion x predicted
conversions per impression (ctcvr + vtcvr). Each advertiser enters an auction with its best
`max_slots_per_advertiser` candidates (blending lets it bring several). Winners are billed per
impression (oCPM) at the eCPM of the next-ranked participant of *another* advertiser
(generalised second price), never below the reserve: no advertiser sets its own price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic_data.arrays import rank_within_runs


def ecpm(is_roas: np.ndarray, bid: np.ndarray, target_roas: np.ndarray, price: np.ndarray,
         p_conversion: np.ndarray) -> np.ndarray:
    """Expected cost per 1,000 impressions of each candidate (dollars)."""
    roas_value = np.minimum(price / np.where(is_roas, target_roas, 1.0), bid)
    value_per_conversion = np.where(is_roas, roas_value, bid)
    return 1000.0 * value_per_conversion * p_conversion


@dataclass(frozen=True)
class AuctionOutcome:
    """Per candidate row: whether it won a slot, which (0 = top; -1 = lost) and its GSP price."""

    is_winner: np.ndarray
    position: np.ndarray
    price: np.ndarray  # dollars per impression; 0 for losers


def run_auction(group: np.ndarray, advertiser_id: np.ndarray, ecpm_values: np.ndarray, slots: np.ndarray,
                reserve_ecpm: float, max_slots_per_advertiser: int = 1) -> AuctionOutcome:
    """Run one GSP auction per `group` (e.g. request index) with `slots[row]` slots (same within a group).

    All arrays have one entry per candidate row; eCPMs and the reserve are dollars per 1,000
    impressions. Candidates below the reserve do not take part, nor do an advertiser's candidates
    beyond its best `max_slots_per_advertiser`. A winner pays max(reserve, eCPM of the next-ranked
    participant of another advertiser) / 1,000 per impression, so an advertiser never prices itself.
    Ties keep the input order. Raises ValueError if `max_slots_per_advertiser` < 1.
    """
    if max_slots_per_advertiser < 1:
        raise ValueError(f"max_slots_per_advertiser must be >= 1, got {max_slots_per_advertiser}")
    group, advertiser_id = np.asarray(group), np.asarray(advertiser_id)
    ecpm_values = np.asarray(ecpm_values, dtype=np.float64)
    n = group.size
    is_winner = np.zeros(n, dtype=bool)
    position = np.full(n, -1, dtype=np.int64)
    price = np.zeros(n, dtype=np.float64)
    above_reserve = np.flatnonzero(ecpm_values >= reserve_ecpm)
    # each advertiser keeps its best candidates per auction; the others are dropped before ranking
    # (np.lexsort is stable: ties keep the rows' order)
    by_advertiser = above_reserve[np.lexsort((-ecpm_values[above_reserve], advertiser_id[above_reserve],
                                              group[above_reserve]))]
    own_rank = rank_within_runs(group[by_advertiser], advertiser_id[by_advertiser])
    participants = by_advertiser[own_rank < max_slots_per_advertiser]
    if participants.size == 0:
        return AuctionOutcome(is_winner, position, price)
    order = participants[np.lexsort((participants, -ecpm_values[participants], group[participants]))]
    sorted_group, sorted_advertiser, sorted_ecpm = group[order], advertiser_id[order], ecpm_values[order]
    rank = rank_within_runs(sorted_group)
    # the next participant of another advertiser is the first row after this row's run of the same
    # advertiser (runs are longer than one row only when max_slots_per_advertiser > 1)
    is_run_start = rank_within_runs(sorted_group, sorted_advertiser) == 0
    run_starts = np.r_[np.flatnonzero(is_run_start), order.size]
    next_other = run_starts[np.cumsum(is_run_start)]
    clipped = np.minimum(next_other, order.size - 1)
    has_next_other = (next_other < order.size) & (sorted_group[clipped] == sorted_group)
    next_other_ecpm = np.where(has_next_other, sorted_ecpm[clipped], 0.0)
    wins = rank < np.asarray(slots)[order]
    winners = order[wins]
    is_winner[winners] = True
    position[winners] = rank[wins]
    price[winners] = np.maximum(next_other_ecpm[wins], reserve_ecpm) / 1000.0
    return AuctionOutcome(is_winner, position, price)
