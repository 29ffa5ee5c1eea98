"""The ads auction (paper 4.5): eCPM from bids and predicted rates, several slots, GSP prices, reserve.

OCPM campaigns bid per conversion; ROAS campaigns bid the item's price over their target RoAS,
capped by their maximum bid. Either way eCPM = 1,000 x value per conversion x predicted
conversions per impression (ctcvr + vtcvr). Winners are billed per impression (oCPM), each at
the next eCPM down (generalised second price), never below the reserve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def run_auction(group: np.ndarray, ecpm_values: np.ndarray, slots: np.ndarray, reserve_ecpm: float) -> AuctionOutcome:
    """Run one auction per `group` (e.g. request index) with `slots[row]` slots (same within a group).

    Candidates below the reserve do not take part. Ties keep the input order.
    """
    group = np.asarray(group)
    ecpm_values = np.asarray(ecpm_values, dtype=np.float64)
    n = group.size
    is_winner = np.zeros(n, dtype=bool)
    position = np.full(n, -1, dtype=np.int64)
    price = np.zeros(n, dtype=np.float64)
    participants = np.flatnonzero(ecpm_values >= reserve_ecpm)
    if participants.size == 0:
        return AuctionOutcome(is_winner, position, price)
    order = participants[np.lexsort((participants, -ecpm_values[participants], group[participants]))]
    sorted_group = group[order]
    is_first = np.r_[True, sorted_group[1:] != sorted_group[:-1]]
    starts = np.flatnonzero(is_first)
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    has_next = np.r_[sorted_group[1:] == sorted_group[:-1], False]
    next_ecpm = np.where(has_next, np.r_[ecpm_values[order][1:], 0.0], 0.0)
    wins = rank < np.asarray(slots)[order]
    winners = order[wins]
    is_winner[winners] = True
    position[winners] = rank[wins]
    price[winners] = np.maximum(next_ecpm[wins], reserve_ecpm) / 1000.0
    return AuctionOutcome(is_winner, position, price)
