"""Vectorised weighted sampling within groups: "an advertiser selling product line p", many at once."""

from __future__ import annotations

import numpy as np


class GroupedSampler:
    """Draws, for each query group, a member with probability proportional to its weight.

    Built once from (group, member, weight) rows; `sample(groups, rng)` draws one member per query
    with one searchsorted over the global cumulative weights (no Python loop over queries).
    """

    def __init__(self, groups: np.ndarray, members: np.ndarray, weights: np.ndarray, n_groups: int):
        groups = np.asarray(groups, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        if np.any(weights < 0):
            raise ValueError("GroupedSampler: weights must be >= 0")
        order = np.argsort(groups, kind="stable")
        self.members = np.asarray(members)[order]
        sorted_groups = groups[order]
        self.cumulative = np.cumsum(weights[order])
        bounds = np.searchsorted(sorted_groups, np.arange(n_groups + 1), side="left")
        self.start, self.stop = bounds[:-1], bounds[1:]
        padded = np.concatenate([[0.0], self.cumulative])
        self.low, self.high = padded[self.start], padded[self.stop]
        self.has_members = self.high > self.low
        # Equal weights: index = start + floor(u * count), no search needed.
        self.is_uniform = bool(weights.size == 0 or np.all(weights == weights[0]))

    def probabilities(self, n_members: int) -> np.ndarray:
        """(n_groups, n_members) probability that `sample` draws each member for each group; a group
        without members is a row of zeros. Members must be ints in [0, n_members)."""
        n_groups = len(self.start)
        weights = np.diff(np.concatenate([[0.0], self.cumulative]))
        group = np.repeat(np.arange(n_groups), self.stop - self.start)
        matrix = np.zeros((n_groups, n_members))
        np.add.at(matrix, (group, self.members.astype(np.int64)), weights)
        totals = matrix.sum(axis=1, keepdims=True)
        return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One member per entry of `groups`; every queried group must have positive weight."""
        groups = np.asarray(groups, dtype=np.int64)
        if groups.size and not self.has_members[groups].all():
            empty = np.unique(groups[~self.has_members[groups]])[:5]
            raise ValueError(f"GroupedSampler: groups {empty.tolist()} have no members with weight > 0")
        if self.is_uniform:
            start, count = self.start[groups], self.stop[groups] - self.start[groups]
            return self.members[start + (rng.random(groups.size) * count).astype(np.int64)]
        low, high = self.low[groups], self.high[groups]
        target = low + rng.random(groups.size) * (high - low)
        index = np.searchsorted(self.cumulative, target, side="right")
        index = np.minimum(np.maximum(index, self.start[groups]), self.stop[groups] - 1)
        return self.members[index]


def recency_weights(ages: np.ndarray, half_life: float) -> np.ndarray:
    """Per row of a (rows, memory) age buffer, the probability `recency_pick` picks each slot
    (2^(-age/half_life), normalised); a row without any slot is all zeros."""
    weights = np.exp2(-ages / half_life)
    totals = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)


def recency_pick(ages: np.ndarray, half_life: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a (rows, memory) age buffer, pick a slot with weight 2^(-age/half_life).

    Empty slots have age = inf (weight 0). Returns (slot per row, whether the row had any slot).
    """
    weights = np.exp2(-ages / half_life)
    cumulative = np.cumsum(weights, axis=1)
    totals = cumulative[:, -1]
    target = rng.random(len(ages)) * totals
    slot = np.minimum((cumulative <= target[:, None]).sum(axis=1), ages.shape[1] - 1)
    return slot, totals > 0
