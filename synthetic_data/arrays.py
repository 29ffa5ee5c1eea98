"""Grouped-row arithmetic on numpy arrays, shared by every stage's vectorised hot paths (no package may
import another's internals, so these live beside the data contracts)."""

from __future__ import annotations

import numpy as np


def offsets_within(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., counts[i] - 1 for each group i, concatenated: [sum(counts)] (counts [3, 2] -> 0 1 2 0 1)."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def ragged_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """starts[i], ..., starts[i] + counts[i] - 1 for each group i, concatenated: the rows of ragged slices
    (starts [5, 0], counts [2, 3] -> 5 6 0 1 2)."""
    return offsets_within(counts) + np.repeat(np.asarray(starts, dtype=np.int64), counts)


def rank_within_runs(*keys: np.ndarray) -> np.ndarray:
    """Position of each row within its run of rows with equal `keys` (rows with equal keys adjacent)."""
    if keys[0].size == 0:
        return np.zeros(0, dtype=np.int64)
    is_start = np.ones(keys[0].size, dtype=bool)
    is_start[1:] = np.any([key[1:] != key[:-1] for key in keys], axis=0)
    starts = np.flatnonzero(is_start)
    return np.arange(is_start.size) - starts[np.cumsum(is_start) - 1]


def first_rows(*keys: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row (in input order) with the same `keys` (the last key sorts
    first, as np.lexsort's)."""
    order = np.lexsort(keys)  # stable: each group's rows keep their input order
    is_start = rank_within_runs(*(key[order] for key in keys)) == 0
    first = np.empty(order.size, dtype=np.int64)
    first[order] = order[np.flatnonzero(is_start)][np.cumsum(is_start) - 1]
    return first


def window_counts(sorted_keys: np.ndarray, base: np.ndarray, first: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Keys in [base + first, base + end) per row, from sorted `sorted_keys`: events of a pair in a day
    window when keys are pair * day range + day and `base` is pair * day range."""
    return np.searchsorted(sorted_keys, base + end) - np.searchsorted(sorted_keys, base + first)
