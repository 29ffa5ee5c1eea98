"""The world's true response to an ad impression: p(click), p(conversion | click), view-through, dwell.

Every mechanism is a documented knob of `ResponseConfig`; the rates come from the world's hidden
state (interests, loyalty, intent, popularity) and the user's observable history (past conversions
and offsite browsing), with position bias per surface. Used by the logged-impressions generator
and by the simulator's auction (DESIGN: position-biased clicks, dwell, delayed conversions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

import numpy as np
import polars as pl

from synthetic_data.arrays import window_counts
from synthetic_data.config_io import require
from synthetic_data.schema import CONVERSION_KINDS, SURFACES, World

# Event days are shifted by this offset inside the composite (pair, day) keys so that they stay
# non-negative; it also bounds the number of days a world can span.
_DAY_OFFSET = 1 << 15
_DAY_RANGE = 1 << 16


@dataclass(frozen=True)
class ResponseConfig:
    """Knobs of the true response model; each term adds to a logit (documented per field)."""

    # Position bias: a slot at position p (0 = top) is examined with probability (1 + p)^-decay.
    position_decay: dict[str, float] = field(default_factory=lambda: {
        "home_feed": 0.7, "related_pins": 0.6, "search": 0.9})
    # Click logit of an examined ad with no affinity, per surface (search carries more intent).
    click_base_logit: dict[str, float] = field(default_factory=lambda: {
        "home_feed": -4.6, "related_pins": -4.4, "search": -4.0})
    click_interest_weight: float = 4.0  # x the user's current latent weight on the item's leaf
    click_favorite_weight: float = 1.0  # x brand_loyalty when the advertiser is a favourite
    click_popularity_weight: float = 0.2  # x log(popularity * n_advertisers)
    # Conversion after a click: logit terms.
    conversion_base_logit: float = -5.0
    conversion_interest_weight: float = 3.0  # x latent interest weight on the item's leaf
    conversion_favorite_weight: float = 2.0  # x brand_loyalty when the advertiser is a favourite
    conversion_repeat_weight: float = 1.0  # the user converted with this advertiser before
    conversion_browse_weight: float = 1.0  # the user browsed this advertiser offsite recently
    browse_window_days: int = 14  # "recently" for the browse term
    conversion_popularity_weight: float = 0.3  # x log(popularity * n_advertisers)
    conversion_intent_weight: float = 1.0  # x log(commercial_intent)
    # View-through conversion without a click: the same conversion logit shifted by this offset.
    view_through_logit_offset: float = -3.5
    # Dwell after a click: log-normal; its log-mean grows with interest.
    dwell_log_mean: float = 2.5  # ~12 s for an uninterested click
    dwell_interest_weight: float = 1.5
    dwell_log_sd: float = 0.8

    def __post_init__(self):
        for name in ("position_decay", "click_base_logit"):
            table = getattr(self, name)
            require(set(table) == set(SURFACES), f"response.{name}",
                    f"needs exactly one value per surface {list(SURFACES)}, got {sorted(table)}")
        for surface, decay in self.position_decay.items():
            require(decay >= 0, f"response.position_decay.{surface}", f"must be >= 0, got {decay}")
        require(self.browse_window_days >= 1, "response.browse_window_days", "must be >= 1")
        require(self.dwell_log_sd >= 0, "response.dwell_log_sd", "must be >= 0")
        require(self.view_through_logit_offset <= 0, "response.view_through_logit_offset",
                "must be <= 0 (a view converts less often than a click)")


class TrueRates(NamedTuple):
    """True per-impression rates (arrays aligned with the request)."""

    p_click: np.ndarray  # probability of a click on the impression (position bias included)
    p_conversion: np.ndarray  # probability of a conversion after a click
    p_view_conversion: np.ndarray  # probability of a view-through conversion without a click
    dwell_log_mean: np.ndarray  # log-mean of the dwell seconds after a click


@dataclass(frozen=True)
class ResponseState:
    """The hidden and observable state the response model reads, as sorted lookup arrays."""

    config: ResponseConfig
    start_date: date
    drift_period_days: int
    user_ids: np.ndarray  # sorted int64
    commercial_intent: np.ndarray  # per user index
    brand_loyalty: np.ndarray  # per user index
    item_ids: np.ndarray  # sorted int32
    item_advertiser: np.ndarray  # per item index
    item_category: np.ndarray  # per item index
    log_popularity: np.ndarray  # log(popularity * n_advertisers), indexed by advertiser_id
    n_epochs: int
    category_stride: int
    interest_keys: np.ndarray  # sorted (user_index * n_epochs + epoch) * stride + category_id
    interest_weights: np.ndarray
    advertiser_stride: int
    favorite_keys: np.ndarray  # sorted user_index * stride + advertiser_id
    conversion_keys: np.ndarray  # sorted (user_index * stride + advertiser_id) * day range + day
    browse_keys: np.ndarray  # same, for offsite URL / search events naming an advertiser


def _index_of(sorted_ids: np.ndarray, ids: np.ndarray, name: str) -> np.ndarray:
    ids = np.asarray(ids)
    index = np.searchsorted(sorted_ids, ids)
    index = np.minimum(index, len(sorted_ids) - 1)
    unknown = sorted_ids[index] != ids
    if unknown.any():
        raise KeyError(f"{int(unknown.sum())} {name}(s) not in the world, e.g. {ids[unknown][:3].tolist()}")
    return index


def _is_member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    index = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[index] == keys


def count_in_window(sorted_keys: np.ndarray, pair_keys: np.ndarray, first_day: np.ndarray,
                    end_day: np.ndarray) -> np.ndarray:
    """Events of each pair with day in [first_day, end_day), from sorted pair*day-range+day keys."""
    return window_counts(sorted_keys, pair_keys.astype(np.int64) * _DAY_RANGE + _DAY_OFFSET, first_day, end_day)


def day_index(ts: pl.Series | pl.Expr, start_date: date) -> pl.Expr | pl.Series:
    """Whole days since the world's start date (day 0 is the start date)."""
    return (ts.dt.date() - pl.lit(start_date)).dt.total_days()


def build_response_state(world: World, start_date: date, drift_period_days: int,
                         config: ResponseConfig | None = None) -> ResponseState:
    """Index the world's users, items, hidden state and event history for vectorised lookups."""
    config = config or ResponseConfig()
    users = world.users_truth.sort("user_id")
    user_ids = users["user_id"].to_numpy()
    items = world.items.sort("item_id")
    n_advertisers = world.advertisers.height
    advertiser_stride = int(world.advertisers["advertiser_id"].max()) + 1
    log_popularity = np.zeros(advertiser_stride)
    truth = world.advertisers_truth
    log_popularity[truth["advertiser_id"].to_numpy()] = np.log(
        np.maximum(truth["popularity"].to_numpy() * n_advertisers, 1e-12))

    interests = world.interests_truth
    n_epochs = int(interests["epoch"].max()) + 1 if interests.height else 1
    category_stride = int(world.categories["category_id"].max()) + 1
    user_index = pl.DataFrame({"user_id": user_ids, "user_index": np.arange(len(user_ids))})
    interests = interests.join(user_index, on="user_id").with_columns(
        key=(pl.col("user_index").cast(pl.Int64) * n_epochs + pl.col("epoch")) * category_stride
        + pl.col("category_id")).sort("key")

    favorites = users.select("user_id", "favorite_advertisers").explode("favorite_advertisers").drop_nulls()
    favorites = favorites.join(user_index, on="user_id").select(
        pl.col("user_index").cast(pl.Int64) * advertiser_stride + pl.col("favorite_advertisers")).to_series()

    events = world.events.filter(pl.col("advertiser_id").is_not_null()).join(user_index, on="user_id")
    events = events.with_columns(
        key=(pl.col("user_index").cast(pl.Int64) * advertiser_stride + pl.col("advertiser_id")) * _DAY_RANGE
        + _DAY_OFFSET + day_index(pl.col("ts"), start_date))
    conversions = events.filter(pl.col("kind").is_in(list(CONVERSION_KINDS)))["key"]
    browses = events.filter(pl.col("kind").is_in(["offsite_url", "offsite_search"]))["key"]

    return ResponseState(
        config=config,
        start_date=start_date,
        drift_period_days=drift_period_days,
        user_ids=user_ids,
        commercial_intent=users["commercial_intent"].to_numpy(),
        brand_loyalty=users["brand_loyalty"].to_numpy(),
        item_ids=items["item_id"].to_numpy(),
        item_advertiser=items["advertiser_id"].to_numpy(),
        item_category=items["category_id"].to_numpy(),
        log_popularity=log_popularity,
        n_epochs=n_epochs,
        category_stride=category_stride,
        interest_keys=interests["key"].to_numpy(),
        interest_weights=interests["weight"].to_numpy().astype(np.float64),
        advertiser_stride=advertiser_stride,
        favorite_keys=np.sort(favorites.to_numpy()),
        conversion_keys=np.sort(conversions.to_numpy()),
        browse_keys=np.sort(browses.to_numpy()),
    )


def _surface_values(table: dict[str, float], surface) -> np.ndarray | float:
    if isinstance(surface, str):
        return table[surface]
    codes = np.asarray(surface)
    return np.array([table[s] for s in SURFACES])[codes]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def true_rates(state: ResponseState, user_ids, item_ids, surface, position, day) -> TrueRates:
    """The true rates of showing each item to each user at (surface, position) on world day `day`.

    `surface` is a surface name or an array of indices into `schema.SURFACES`; `day` is an int or
    an array of day indices since the world's start date.
    """
    config = state.config
    user_index = _index_of(state.user_ids, user_ids, "user_id")
    item_index = _index_of(state.item_ids, item_ids, "item_id")
    advertiser = state.item_advertiser[item_index].astype(np.int64)
    category = state.item_category[item_index].astype(np.int64)
    day = np.broadcast_to(np.asarray(day, dtype=np.int64), user_index.shape)
    position = np.asarray(position, dtype=np.float64)

    epoch = np.clip(day // state.drift_period_days, 0, state.n_epochs - 1)
    interest_key = (user_index * state.n_epochs + epoch) * state.category_stride + category
    interest = np.zeros(len(user_index))
    has_interest = _is_member(state.interest_keys, interest_key)
    interest[has_interest] = state.interest_weights[np.searchsorted(state.interest_keys, interest_key[has_interest])]

    pair = user_index * state.advertiser_stride + advertiser
    loyal = np.where(_is_member(state.favorite_keys, pair), state.brand_loyalty[user_index], 0.0)
    has_converted = count_in_window(state.conversion_keys, pair, np.full_like(day, -_DAY_OFFSET), day) > 0
    has_browsed = count_in_window(state.browse_keys, pair, day - config.browse_window_days, day) > 0
    popularity = state.log_popularity[advertiser]

    examine = (1.0 + position) ** -_surface_values(config.position_decay, surface)
    click_logit = (_surface_values(config.click_base_logit, surface) + config.click_interest_weight * interest
                   + config.click_favorite_weight * loyal + config.click_popularity_weight * popularity)
    conversion_logit = (config.conversion_base_logit + config.conversion_interest_weight * interest
                        + config.conversion_favorite_weight * loyal
                        + config.conversion_repeat_weight * has_converted
                        + config.conversion_browse_weight * has_browsed
                        + config.conversion_popularity_weight * popularity
                        + config.conversion_intent_weight
                        * np.log(np.maximum(state.commercial_intent[user_index], 1e-12)))
    return TrueRates(
        p_click=examine * _sigmoid(click_logit),
        p_conversion=_sigmoid(conversion_logit),
        p_view_conversion=_sigmoid(conversion_logit + config.view_through_logit_offset),
        dwell_log_mean=config.dwell_log_mean + config.dwell_interest_weight * interest,
    )
