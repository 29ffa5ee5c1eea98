import numpy as np

from synthetic_data.arrays import first_rows, offsets_within, ragged_ranges, rank_within_runs


def test_ragged_ranges_and_offsets_concatenate_each_groups_rows():
    assert offsets_within(np.array([3, 0, 2])).tolist() == [0, 1, 2, 0, 1]
    assert ragged_ranges(np.array([5, 9, 0]), np.array([2, 0, 3])).tolist() == [5, 6, 0, 1, 2]
    assert ragged_ranges(np.zeros(0, np.int64), np.zeros(0, np.int64)).size == 0


def test_rank_within_runs_and_first_rows_group_equal_keys():
    assert rank_within_runs(np.array([1, 1, 2, 2, 2, 1]), np.array([0, 0, 0, 1, 1, 1])).tolist() == [0, 1, 0, 0, 1, 0]
    user, day = np.array([7, 3, 7, 3, 7]), np.array([1, 1, 2, 1, 1])
    assert first_rows(day, user).tolist() == [0, 1, 2, 1, 0]  # the earliest row of each (user, day)
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 4, size=(2, 200))
    first = first_rows(*keys)
    pairs = list(zip(*keys.tolist()))
    assert first.tolist() == [pairs.index(pair) for pair in pairs]
