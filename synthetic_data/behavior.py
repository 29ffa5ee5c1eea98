"""~90 days of user behaviour from the latent state: searches, URLs, engagement and conversions.

A loop over days, vectorised over users (STYLE: a simulation step is a pure function of the
previous state). Daily counts are Poisson with rate x activity (x commercial intent for offsite
activity and conversions). Browsing goes to a favourite advertiser with probability = loyalty,
otherwise to a popularity-weighted seller in the current interest. A conversion's advertiser comes
from the mixture in `BehaviorConfig.conversion_mixture` (repeat / semantic / popular / noise),
reading each user's memory of past conversions and offsite browses as of the start of the day;
a component with an empty memory falls back to `popular`, and the component actually used is
recorded in `conversions_truth`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from synthetic_data.catalog import Catalog
from synthetic_data.config import WorldConfig
from synthetic_data.population import Population
from synthetic_data.sampling import recency_pick
from synthetic_data.schema import CONVERSION_MECHANISMS, EVENT_KINDS

KIND = {kind: code for code, kind in enumerate(EVENT_KINDS)}
MECHANISM = {name: code for code, name in enumerate(CONVERSION_MECHANISMS)}
INTENT_SCALED = ("offsite_search", "offsite_url", "attributed_conversion", "matched_conversion")
N_QUERY_TEMPLATES = 6  # see world._event_text


@dataclass
class Memory:
    """Fixed-size per-user ring buffers of recent (advertiser, product line, day) records."""

    advertiser: np.ndarray
    product_line: np.ndarray
    day: np.ndarray
    pointer: np.ndarray

    @classmethod
    def empty(cls, n_users: int, size: int) -> "Memory":
        return cls(np.full((n_users, size), -1, np.int32), np.full((n_users, size), -1, np.int32),
                   np.full((n_users, size), -np.inf), np.zeros(n_users, np.int64))

    def ages(self, users: np.ndarray, day: int) -> np.ndarray:
        return day - self.day[users]

    def push(self, users: np.ndarray, advertiser: np.ndarray, product_line: np.ndarray, day: int) -> None:
        """Append records (already in time order within each user); keeps the newest `size`."""
        if users.size == 0:
            return
        size = self.day.shape[1]
        order = np.argsort(users, kind="stable")
        users, advertiser, product_line = users[order], advertiser[order], product_line[order]
        starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
        counts = np.diff(np.r_[starts, users.size])
        rank = np.arange(users.size) - np.repeat(starts, counts)
        keep_from = np.repeat(np.maximum(counts - size, 0), counts)
        keep = rank >= keep_from
        users, rank = users[keep], (rank - keep_from)[keep]
        slot = (self.pointer[users] + rank) % size
        self.advertiser[users, slot] = advertiser[keep]
        self.product_line[users, slot] = product_line[keep]
        self.day[users, slot] = day
        np.add.at(self.pointer, users, 1)


def _interest_leaf(pop: Population, users: np.ndarray, epoch: int, rng: np.random.Generator) -> np.ndarray:
    cumulative = np.cumsum(pop.interest_weights[users], axis=1)
    target = rng.random(users.size) * cumulative[:, -1]
    slot = np.minimum((cumulative <= target[:, None]).sum(axis=1), cumulative.shape[1] - 1)
    return pop.interest_leaves[epoch, users, slot]


def _seller_in_leaf(catalog: Catalog, leaf: np.ndarray, rng: np.random.Generator):
    advertiser = catalog.advertiser_for_leaf.sample(leaf, rng)
    line = catalog.product_line_of_advertiser_in_leaf.sample(
        advertiser.astype(np.int64) * catalog.n_leaves + leaf, rng)
    return advertiser, line


def _browse(catalog: Catalog, pop: Population, users: np.ndarray, epoch: int, rng: np.random.Generator):
    """Advertiser and product line of a browse: a favourite (prob = loyalty) or a seller in an interest."""
    leaf = _interest_leaf(pop, users, epoch, rng)
    advertiser, line = _seller_in_leaf(catalog, leaf, rng)
    loyal = rng.random(users.size) < pop.loyalty[users]
    favorite = pop.favorites[users[loyal], rng.integers(0, pop.favorites.shape[1], loyal.sum())]
    advertiser[loyal] = favorite
    line[loyal] = catalog.product_line_of_advertiser.sample(favorite, rng)
    return advertiser, line


def _conversion_advertisers(config: WorldConfig, catalog: Catalog, pop: Population, users: np.ndarray,
                            day: int, conversions: Memory, browses: Memory, rng: np.random.Generator):
    """Advertiser, product line and mechanism of each conversion (the documented mixture)."""
    bc = config.behavior
    n = users.size
    mechanism = rng.choice(len(CONVERSION_MECHANISMS), n,
                           p=[bc.conversion_mixture[m] for m in CONVERSION_MECHANISMS])
    advertiser = np.full(n, -1, np.int64)
    line = np.full(n, -1, np.int64)

    rows = np.flatnonzero(mechanism == MECHANISM["repeat"])
    slot, has = recency_pick(conversions.ages(users[rows], day), bc.repeat_half_life_days, rng)
    rows, slot = rows[has], slot[has]
    advertiser[rows] = conversions.advertiser[users[rows], slot]
    line[rows] = conversions.product_line[users[rows], slot]

    rows = np.flatnonzero(mechanism == MECHANISM["semantic"])
    slot, has = recency_pick(browses.ages(users[rows], day), bc.browse_half_life_days, rng)
    rows, slot = rows[has], slot[has]
    browsed_line = browses.product_line[users[rows], slot]
    browsed_advertiser = browses.advertiser[users[rows], slot]
    same = (rng.random(rows.size) < bc.semantic_same_advertiser_probability) & (browsed_advertiser >= 0)
    other = catalog.advertiser_for_product_line.sample(browsed_line, rng)
    advertiser[rows] = np.where(same, browsed_advertiser, other)
    line[rows] = browsed_line

    rows = np.flatnonzero(mechanism == MECHANISM["noise"])
    advertiser[rows] = rng.integers(0, len(catalog.popularity), rows.size)
    line[rows] = catalog.product_line_of_advertiser.sample(advertiser[rows], rng)

    # `popular`, and the fallback of repeat/semantic users with an empty memory.
    rows = np.flatnonzero(advertiser < 0)
    mechanism[rows] = MECHANISM["popular"]
    leaf = _interest_leaf(pop, users[rows], day // config.users.drift_period_days, rng)
    advertiser[rows], line[rows] = _seller_in_leaf(catalog, leaf, rng)
    return advertiser, line, mechanism


def simulate_behavior(config: WorldConfig, catalog: Catalog, pop: Population,
                      rng: np.random.Generator, on_day: Callable[[], None] | None = None,
                      on_day_start: Callable[[int, Memory, Memory], None] | None = None,
                      n_days: int | None = None) -> pl.DataFrame:
    """All events of one user chunk as a raw frame (local user index, day, second, ids, codes), over
    the world's days or its first `n_days` (the same draws: a day reads only the days before it).

    `on_day_start(day, conversions, browses)` sees the memories the day's conversions will read
    (synthetic_data/next_conversion.py reads them); it must not change them, and it draws nothing.
    """
    bc = config.behavior
    n = pop.user_ids.size
    rates = np.array([bc.daily_rates[k] for k in EVENT_KINDS])
    scaled = np.array([k in INTENT_SCALED for k in EVENT_KINDS])
    user_rates = rates[None, :] * pop.activity[:, None] * np.where(scaled[None, :], pop.intent[:, None], 1.0)
    conversions = Memory.empty(n, bc.memory_size)
    browses = Memory.empty(n, bc.memory_size)
    item_leaf_of_line = catalog.pl_leaf
    conversion_types = list(bc.conversion_type_probs)
    type_probs = np.array(list(bc.conversion_type_probs.values()))
    parts = []
    for day in range(config.n_days if n_days is None else n_days):
        epoch = day // config.users.drift_period_days
        if on_day_start is not None:
            on_day_start(day, conversions, browses)
        counts = rng.poisson(user_rates)
        by_kind = {kind: np.repeat(np.arange(n), counts[:, code]) for kind, code in KIND.items()}
        columns = []

        for kind in ("onsite_search", "offsite_search"):
            users = by_kind[kind]
            leaf = _interest_leaf(pop, users, epoch, rng)
            advertiser, line = _seller_in_leaf(catalog, leaf, rng)
            mentions = rng.random(users.size) < bc.search_brand_mention_probability
            item = catalog.item_for_offer.sample(advertiser.astype(np.int64) * catalog.n_product_lines + line, rng)
            columns.append(dict(kind=KIND[kind], user=users, line=line,
                                advertiser=np.where(mentions, advertiser, -1),
                                item=np.where(mentions, item, -1), brand_from_item=mentions,
                                category=leaf, template=rng.integers(0, N_QUERY_TEMPLATES, users.size)))
        for kind in ("offsite_url", "engagement"):
            users = by_kind[kind]
            advertiser, line = _browse(catalog, pop, users, epoch, rng)
            item = catalog.item_for_offer.sample(advertiser.astype(np.int64) * catalog.n_product_lines + line, rng)
            columns.append(dict(kind=KIND[kind], user=users, line=line, advertiser=advertiser, item=item,
                                brand_from_item=np.ones(users.size, bool), category=item_leaf_of_line[line]))
        for kind in ("attributed_conversion", "matched_conversion"):
            users = by_kind[kind]
            advertiser, line, mechanism = _conversion_advertisers(
                config, catalog, pop, users, day, conversions, browses, rng)
            item = catalog.item_for_offer.sample(advertiser * catalog.n_product_lines + line, rng)
            columns.append(dict(kind=KIND[kind], user=users, line=line, advertiser=advertiser, item=item,
                                brand_from_item=np.ones(users.size, bool), category=item_leaf_of_line[line],
                                mechanism=mechanism,
                                conversion_type=rng.choice(len(conversion_types), users.size, p=type_probs)))

        day_frame = _day_frame(columns, day, rng)
        parts.append(day_frame)
        # Memories see today's records from tomorrow on (records pushed in time order).
        conv = day_frame.filter(pl.col("kind").is_in([KIND["attributed_conversion"], KIND["matched_conversion"]])
                                ).sort("user", "second")
        conversions.push(conv["user"].to_numpy(), conv["advertiser"].to_numpy(), conv["line"].to_numpy(), day)
        offsite = day_frame.filter(pl.col("kind").is_in([KIND["offsite_url"], KIND["offsite_search"]])
                                   ).sort("user", "second")
        browses.push(offsite["user"].to_numpy(), offsite["advertiser"].to_numpy(), offsite["line"].to_numpy(), day)
        if on_day is not None:
            on_day()
    return pl.concat(parts)


def _day_frame(columns: list[dict], day: int, rng: np.random.Generator) -> pl.DataFrame:
    frames = []
    for c in columns:
        size = c["user"].size
        frames.append(pl.DataFrame({
            "user": c["user"].astype(np.int64),
            "kind": np.full(size, c["kind"], np.int8),
            "line": c["line"].astype(np.int32),
            "advertiser": c["advertiser"].astype(np.int32),
            "item": c["item"].astype(np.int32),
            "brand_from_item": c["brand_from_item"],
            "category": c["category"].astype(np.int32),
            "template": c.get("template", np.zeros(size, np.int64)).astype(np.int8),
            "mechanism": c.get("mechanism", np.full(size, -1)).astype(np.int8),
            "conversion_type": c.get("conversion_type", np.full(size, -1)).astype(np.int8),
        }))
    frame = pl.concat(frames)
    return frame.with_columns(
        pl.lit(day, pl.Int16).alias("day"),
        pl.Series("second", rng.integers(0, 86_400, frame.height), dtype=pl.Int32),
    )
