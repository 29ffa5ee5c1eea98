"""The world's next-conversion distribution: equal to the sampler it describes, on the world's own memories."""

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from synthetic_data import schema
from synthetic_data.behavior import _conversion_advertisers, simulate_behavior
from synthetic_data.next_conversion import conversion_distribution, next_conversion_probabilities
from synthetic_data.presets import preset
from synthetic_data.sampling import GroupedSampler
from synthetic_data.world import chunk_population, generate_world, world_catalog


def test_grouped_sampler_probabilities_are_its_weights():
    sampler = GroupedSampler(np.array([0, 0, 2, 2, 2]), np.array([3, 1, 0, 1, 1]),
                             np.array([1.0, 3.0, 2.0, 1.0, 1.0]), n_groups=3)
    expected = np.array([[0, 0.75, 0, 0.25], [0, 0, 0, 0], [0.5, 0.5, 0, 0]])
    assert np.allclose(sampler.probabilities(4), expected)


def test_distribution_equals_the_sampler_it_describes():
    """Draw the behaviour model's own conversion sampler many times from mid-world memories: each
    advertiser's share matches the closed form within sampling error."""
    config = preset("tiny", ["users.n_users=40"])
    catalog = world_catalog(config)
    pop, rng = chunk_population(config, catalog, 0)
    captured = {}

    def capture(day, conversions, browses):
        if day == 40:
            captured["memories"] = (conversions, browses)

    simulate_behavior(config, catalog, pop, rng, on_day_start=capture, n_days=41)
    conversions, browses = captured["memories"]
    users = np.arange(12)
    assert np.isfinite(conversions.ages(users, 40)).any() and np.isfinite(browses.ages(users, 40)).any()
    expected = conversion_distribution(config, catalog, pop, users, 40, conversions, browses)
    assert np.allclose(expected.sum(axis=1), 1)

    draws = 20_000
    repeated = np.repeat(users, draws)
    advertiser, _, _ = _conversion_advertisers(config, catalog, pop, repeated, 40, conversions, browses,
                                               np.random.default_rng(1))
    observed = np.zeros_like(expected)
    np.add.at(observed, (np.repeat(np.arange(users.size), draws), advertiser), 1.0 / draws)
    tolerance = 5 * np.sqrt(expected * (1 - expected) / draws) + 1e-3
    assert (np.abs(observed - expected) <= tolerance).all()


@pytest.fixture(scope="module")
def repeat_world():
    """A world whose conversions only repeat past ones (or fall back to popular while memory is empty)."""
    return generate_world(preset("tiny", ["users.n_users=300", "behavior.conversion_mixture="
                                          "{repeat=1.0, semantic=0.0, popular=0.0, noise=0.0}"]),
                          progress=False)


def test_probabilities_read_the_world_memories_as_of_the_anchor(repeat_world):
    """With repeat only, each key's probabilities equal the recency weights of the user's last
    `memory_size` conversions up to the anchor day in the written world, aged from the day after it."""
    config = preset("tiny", ["users.n_users=300", "behavior.conversion_mixture="
                             "{repeat=1.0, semantic=0.0, popular=0.0, noise=0.0}"])
    # labels on the day after the anchor: a memory read a day late would hold them
    keys = (repeat_world.labels.filter(pl.col("ts").dt.date() == pl.col("anchor_date") + timedelta(days=1))
            .select("user_id", "anchor_date").head(60))
    probabilities = next_conversion_probabilities(config, keys, progress=False)
    conversions = (repeat_world.events.filter(pl.col("kind").is_in(schema.CONVERSION_KINDS))
                   .select("user_id", "ts", "advertiser_id"))
    half_life, size = config.behavior.repeat_half_life_days, config.behavior.memory_size
    checked = 0
    for row, (user, anchor) in enumerate(keys.iter_rows()):
        past = (conversions.filter((pl.col("user_id") == user) & (pl.col("ts").dt.date() <= anchor))
                .sort("ts").tail(size))
        if past.height == 0:
            continue
        ages = np.array([(anchor - ts.date()).days + 1 for ts in past["ts"].to_list()])
        expected = np.zeros(probabilities.shape[1])
        np.add.at(expected, past["advertiser_id"].to_numpy(), np.exp2(-ages / half_life))
        assert np.allclose(probabilities[row], expected / expected.sum())
        checked += 1
    assert checked >= 15


def test_keys_outside_the_world_are_refused(repeat_world):
    config = preset("tiny", ["users.n_users=300"])
    last = repeat_world.events["ts"].max().date()
    with pytest.raises(ValueError, match="user_id \\[300\\] not in the world"):
        next_conversion_probabilities(config, pl.DataFrame({"user_id": [300], "anchor_date": [last]}))
    with pytest.raises(ValueError, match="anchor_date \\+ 1 day"):
        next_conversion_probabilities(config, pl.DataFrame({"user_id": [0], "anchor_date": [last]}))
    assert next_conversion_probabilities(
        config, pl.DataFrame({"user_id": [0], "anchor_date": [last - timedelta(days=1)]}), progress=False).shape[0] == 1


def test_scoring_in_blocks_changes_nothing(repeat_world, monkeypatch):
    from synthetic_data import next_conversion

    config = preset("tiny", ["users.n_users=300"])
    keys = repeat_world.labels.select("user_id", "anchor_date")
    whole = next_conversion_probabilities(config, keys, progress=False)
    monkeypatch.setattr(next_conversion, "USERS_PER_BLOCK", 7)
    assert keys.height > 7 and np.array_equal(next_conversion_probabilities(config, keys, progress=False), whole)
