"""The world's own distribution of a user's next conversion advertiser: what a predictor of the labels aims at.

`behavior._conversion_advertisers` draws a conversion's advertiser from a mixture (repeat / semantic /
popular / noise) over the user's memories as of the start of the day and hidden interests. This module
computes that mixture's probability of every advertiser exactly, for (user, anchor date) keys on the day
after the anchor, by re-simulating the users' chunks with the world's own seeded streams up to that day.
It reads hidden state, so it is a control (the oracle's `next_conversion` ranking, docs/oracle.md),
never a method. As a ceiling of Recall it is approximate: a label is the first *eligible* conversion in
the window, which may fall days later, after new browses or an ineligible conversion have changed the
memories, or in the next drift epoch of the user's interests.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from synthetic_data.behavior import Memory, simulate_behavior
from synthetic_data.catalog import Catalog
from synthetic_data.config import WorldConfig
from synthetic_data.population import Population
from synthetic_data.sampling import recency_weights
from synthetic_data.world import chunk_population, world_catalog

USERS_PER_BLOCK = 2048  # users scored at once: bounds the (users, memory, advertisers) arrays (~40 MB on the demo)


def conversion_distribution(config: WorldConfig, catalog: Catalog, pop: Population, users: np.ndarray, day: int,
                            conversions: Memory, browses: Memory) -> np.ndarray:
    """(len(users), n_advertisers) probability that a conversion of each chunk-local user on `day` goes to
    each advertiser, with the memories as of the start of that day: the mixture of
    `behavior._conversion_advertisers` in closed form (rows sum to 1)."""
    bc = config.behavior
    n_advertisers = len(catalog.popularity)
    leaf_sellers = catalog.advertiser_for_leaf.probabilities(n_advertisers)  # (leaves, advertisers)
    epoch = day // config.users.drift_period_days
    popular = np.einsum("uk,uka->ua", pop.interest_weights[users], leaf_sellers[pop.interest_leaves[epoch, users]])

    rows = np.arange(users.size)[:, None]
    repeat = np.zeros((users.size, n_advertisers))
    repeat_slots = recency_weights(conversions.ages(users, day), bc.repeat_half_life_days)
    np.add.at(repeat, (rows, np.maximum(conversions.advertiser[users], 0)), repeat_slots)

    browse_slots = recency_weights(browses.ages(users, day), bc.browse_half_life_days)
    browsed = browses.advertiser[users]
    same = bc.semantic_same_advertiser_probability * (browsed >= 0)  # a search without a brand has no advertiser
    line_sellers = catalog.advertiser_for_product_line.probabilities(n_advertisers)  # (lines, advertisers)
    browsed_lines = np.maximum(browses.product_line[users], 0)  # an empty slot's -1 has weight 0
    semantic = np.einsum("us,usa->ua", browse_slots * (1 - same), line_sellers[browsed_lines])
    np.add.at(semantic, (rows, np.maximum(browsed, 0)), browse_slots * same)

    # a component whose memory is empty falls back to `popular` (an empty slot has weight 0)
    has_repeat = repeat_slots.sum(axis=1, keepdims=True) > 0
    has_semantic = browse_slots.sum(axis=1, keepdims=True) > 0
    mixture = bc.conversion_mixture
    return (mixture["repeat"] * np.where(has_repeat, repeat, popular)
            + mixture["semantic"] * np.where(has_semantic, semantic, popular)
            + mixture["popular"] * popular + mixture["noise"] / n_advertisers)


def next_conversion_probabilities(config: WorldConfig, keys: pl.DataFrame, progress: bool = True) -> np.ndarray:
    """(keys.height, n_advertisers) probability of each advertiser (column = advertiser_id) for a conversion of
    each (user_id, anchor_date) row of `keys` on the day after its anchor, from the world `config` generates.

    Re-simulates only the chunks holding the keys' users, up to the last day asked for (the demo world:
    seconds). Raises ValueError for a user outside the world or an anchor whose next day lies outside its days.
    """
    user_ids = keys["user_id"].to_numpy().astype(np.int64)
    start = date.fromisoformat(config.start_date)
    days = ((keys["anchor_date"] - start).dt.total_days() + 1).to_numpy().astype(np.int64)
    if user_ids.size and not ((user_ids >= 0) & (user_ids < config.users.n_users)).all():
        bad = np.unique(user_ids[(user_ids < 0) | (user_ids >= config.users.n_users)])[:5].tolist()
        raise ValueError(f"keys: user_id {bad} not in the world (ids 0..{config.users.n_users - 1}); "
                         "pass keys of the world whose config this is")
    if days.size and not ((days >= 0) & (days < config.n_days)).all():
        raise ValueError(f"keys: every anchor_date + 1 day must lie in the world's {config.n_days} days from {start}; "
                         f"got days {days.min()} to {days.max()} (pass label anchors of this world)")
    catalog = world_catalog(config)
    out = np.zeros((user_ids.size, len(catalog.popularity)))
    chunk_of = user_ids // config.user_chunk_size
    chunks = np.unique(chunk_of)
    with tqdm(total=int(sum(days[chunk_of == c].max() + 1 for c in chunks)), unit="day", disable=not progress,
              desc="re-simulating memories for the next-conversion truth") as bar:
        for index in chunks:
            rows_of_chunk = np.flatnonzero(chunk_of == index)
            pop, rng = chunk_population(config, catalog, int(index))
            local = user_ids[rows_of_chunk] - index * config.user_chunk_size

            def capture(day: int, conversions: Memory, browses: Memory, rows_of_chunk=rows_of_chunk,
                        local=local, pop=pop) -> None:
                at_day = np.flatnonzero(days[rows_of_chunk] == day)
                for begin in range(0, at_day.size, USERS_PER_BLOCK):
                    block = at_day[begin:begin + USERS_PER_BLOCK]
                    out[rows_of_chunk[block]] = conversion_distribution(
                        config, catalog, pop, local[block], day, conversions, browses)

            simulate_behavior(config, catalog, pop, rng, on_day=bar.update, on_day_start=capture,
                              n_days=int(days[rows_of_chunk].max()) + 1)
    return out
