"""Ad requests of a simulated day: sessions on Home Feed, Related Pins and Search (paper 4.5.1).

Sessions per user-day are Poisson(sessions_per_user_day * true activity); each session picks a
surface and makes 1 + Poisson(extra) requests. Search requests carry a query category and
Related Pins requests a viewed Pin, both drawn from the user's true interests. Every draw is
keyed by (user, day, session), so a user's traffic does not depend on the arm (CRN).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
from scipy import stats

from simulator.config import TrafficConfig
from simulator.protocols import REQUESTS
from simulator.random_streams import uniforms
from synthetic_data.arrays import offsets_within
from synthetic_data import schema
from synthetic_data.schema import World

MAX_USER_ID = 1 << 28  # request ids pack (day, user, sequence) into 63 bits
MAX_REQUESTS_PER_USER_DAY = 1 << 16


@dataclass(frozen=True)
class TrafficTables:
    """World facts traffic needs: activity, current interests and items per category, as arrays."""

    user_ids: np.ndarray  # sorted
    activity: np.ndarray
    interest_user_ids: np.ndarray  # interest rows sorted by user (latest drift epoch only)
    interest_categories: np.ndarray
    interest_cumulative: np.ndarray  # user position + cumulative weight share, strictly increasing per user
    item_ids_by_category: np.ndarray
    category_ids: np.ndarray  # sorted categories that have items
    category_starts: np.ndarray
    category_counts: np.ndarray


def traffic_tables(world: World) -> TrafficTables:
    """Extract the arrays traffic needs from the world (reads the simulator-only truth tables)."""
    users = world.users_truth.select("user_id", "activity").sort("user_id")
    user_ids = users["user_id"].to_numpy()
    if user_ids.size and user_ids.max() >= MAX_USER_ID:
        raise ValueError(f"user ids must be < {MAX_USER_ID} for request ids to be unique; renumber users")
    interests = (world.interests_truth
                 .filter(pl.col("epoch") == pl.col("epoch").max().over("user_id"))
                 .filter(pl.col("weight") > 0)
                 .sort("user_id", "category_id"))
    user_position = np.searchsorted(user_ids, interests["user_id"].to_numpy())
    share = (interests.with_columns((pl.col("weight").cast(pl.Float64).cum_sum().over("user_id")
                                     / pl.col("weight").cast(pl.Float64).sum().over("user_id")).alias("s"))["s"]
             .to_numpy())
    items = world.items.select("item_id", "category_id").sort("category_id", "item_id")
    categories, starts, counts = np.unique(items["category_id"].to_numpy(), return_index=True, return_counts=True)
    return TrafficTables(
        user_ids=user_ids, activity=users["activity"].to_numpy(),
        interest_user_ids=interests["user_id"].to_numpy(),
        interest_categories=interests["category_id"].to_numpy(),
        interest_cumulative=user_position + share,
        item_ids_by_category=items["item_id"].to_numpy(),
        category_ids=categories, category_starts=starts, category_counts=counts,
    )


def day_start(start: date, day_index: int) -> datetime:
    return datetime.combine(start + timedelta(days=day_index), datetime.min.time(), tzinfo=timezone.utc)


def day_requests(tables: TrafficTables, user_ids: np.ndarray, start: date, day_index: int,
                 config: TrafficConfig, seed: int) -> pl.DataFrame:
    """Every ad request of `user_ids` on simulated day `day_index` (REQUESTS, sorted by time)."""
    user_ids = np.sort(np.asarray(user_ids, dtype=np.int64))
    if not np.isin(user_ids, tables.user_ids).all():
        raise ValueError("traffic asked for users the world does not have (check the arm's user list)")
    position = np.searchsorted(tables.user_ids, user_ids)
    day_key = np.int64(day_index)
    rate = config.sessions_per_user_day * tables.activity[position]
    sessions = poisson_quantile(uniforms(seed, "sessions", user_ids, day_key), rate)
    session_user = np.repeat(user_ids, sessions)
    session_index = offsets_within(sessions)
    session_second = uniforms(seed, "session_time", session_user, day_key, session_index) * 86400.0

    surfaces = list(config.surface_mix)
    surface_cut = np.cumsum([config.surface_mix[s] for s in surfaces])
    surface_code = np.minimum(np.searchsorted(surface_cut, uniforms(seed, "surface", session_user, day_key,
                                                                   session_index)), len(surfaces) - 1)
    extra_mean = np.array([config.extra_requests_per_session[s] for s in surfaces])[surface_code]
    n_requests = 1 + poisson_quantile(uniforms(seed, "extra_requests", session_user, day_key, session_index),
                                      extra_mean)

    request_user = np.repeat(session_user, n_requests)
    request_session = np.repeat(session_index, n_requests)
    step = offsets_within(n_requests)
    second = np.minimum(np.repeat(session_second, n_requests) + step * config.seconds_between_requests, 86399.0)
    surface = np.array(surfaces)[np.repeat(surface_code, n_requests)]
    order = np.lexsort((step, request_session, request_user))  # sequence number per user-day
    sequence = np.empty_like(order)
    first_of_user = np.r_[0, np.flatnonzero(np.diff(request_user[order])) + 1]
    counts = np.diff(np.r_[first_of_user, order.size])
    sequence[order] = np.arange(order.size) - np.repeat(first_of_user, counts)
    if sequence.size and sequence.max() >= MAX_REQUESTS_PER_USER_DAY:
        raise ValueError("more than 65,536 requests for one user-day; lower traffic.sessions_per_user_day")
    request_id = ((day_key + 1) << 44) | (request_user << 16) | sequence

    category = _interest_category(tables, request_user, uniforms(seed, "query", request_id))
    is_search = surface == "search"
    is_related = surface == "related_pins"
    context_item = _item_in_category(tables, category, uniforms(seed, "context", request_id))
    ts = np.datetime64(day_start(start, day_index).replace(tzinfo=None), "us") + (second * 1e6).astype("timedelta64[us]")
    frame = pl.DataFrame({
        "request_id": request_id,
        "user_id": request_user,
        "ts": ts,
        "day": np.full(request_id.size, np.datetime64(start + timedelta(days=day_index), "D")),
        "surface": surface,
        "query_category_id": np.where(is_search, category, -1),
        "context_item_id": np.where(is_related, context_item, -1),
    }).with_columns(
        pl.col("ts").dt.replace_time_zone("UTC"),
        pl.when(pl.col("query_category_id") >= 0).then(pl.col("query_category_id")),
        pl.when(pl.col("context_item_id") >= 0).then(pl.col("context_item_id")),
    )
    return schema.conform(frame, REQUESTS, "requests").sort("ts", "request_id")


def poisson_quantile(u: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Inverse Poisson CDF at `u` in [0, 1) (keyed uniforms in, counts out); scipy.stats.poisson.ppf,
    whose value at u = 0 is -1 by convention, so counts are floored at 0."""
    return np.maximum(stats.poisson.ppf(u, mean), 0).astype(np.int64)


def _interest_category(tables: TrafficTables, user_ids: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A category drawn from each user's interest weights (a user without interests gets -1)."""
    user_position = np.searchsorted(tables.user_ids, user_ids)
    row = np.searchsorted(tables.interest_cumulative, user_position + u)
    row = np.minimum(row, max(tables.interest_categories.size - 1, 0))
    if tables.interest_categories.size == 0:
        return np.full(user_ids.size, -1)
    has_interest = tables.interest_user_ids[row] == user_ids
    return np.where(has_interest, tables.interest_categories[row], -1)


def _item_in_category(tables: TrafficTables, categories: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A uniformly drawn item of each category (-1 for a category without items)."""
    index = np.minimum(np.searchsorted(tables.category_ids, categories), max(tables.category_ids.size - 1, 0))
    if tables.category_ids.size == 0:
        return np.full(categories.size, -1)
    has_items = tables.category_ids[index] == categories
    row = tables.category_starts[index] + np.floor(u * tables.category_counts[index]).astype(np.int64)
    return np.where(has_items, tables.item_ids_by_category[row], -1)
