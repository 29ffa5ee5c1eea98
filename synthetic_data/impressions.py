"""Logged ad impressions: a logging policy fills ad slots, outcomes come from the true response model.

A cheap source of ranking training data (paper 3.6.2, 4.4.1) before and beside the simulator:
each request gets `slots_per_request` ads chosen by an epsilon-mixture of a history-based policy
and uniform exploration (its propensity is logged), then clicks, dwell, click-through (ctcvr)
and view-through (vtcvr) conversions are sampled within their attribution windows.
Slots are drawn independently (an item can fill two slots of one request, rarely), which keeps
the logged propensity exact; outcomes are sampled independently of the world's event log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from synthetic_data.config_io import require
from synthetic_data.response import ResponseConfig, ResponseState, day_index, true_rates
from synthetic_data.schema import IMPRESSIONS, IMPRESSIONS_TRUTH, SURFACES, World, conform


@dataclass(frozen=True)
class ImpressionConfig:
    """Logging policy, traffic volume and attribution windows of the logged impressions."""

    seed: int = 11
    n_days: int = 30  # the last n_days of the world are logged (history before them feeds the policy)
    requests_per_user_day: float = 1.0  # Poisson mean of ad requests, times the user's activity
    slots_per_request: int = 4  # ads per request, at positions 0..slots-1
    surface_probs: dict[str, float] = field(default_factory=lambda: {
        "home_feed": 0.5, "related_pins": 0.3, "search": 0.2})
    exploration: float = 0.2  # share of slots filled uniformly over all items
    history_smoothing: float = 0.5  # pseudo-count per leaf category in the policy's user profile
    click_window_days: float = 7.0  # click-through attribution window
    view_window_days: float = 1.0  # view-through attribution window
    conversion_delay_mean_days: float = 1.0  # exponential delay from impression to conversion

    def __post_init__(self):
        require(self.n_days >= 1, "impressions.n_days", "must be >= 1")
        require(self.requests_per_user_day > 0, "impressions.requests_per_user_day", "must be > 0")
        require(self.slots_per_request >= 1, "impressions.slots_per_request", "must be >= 1")
        require(set(self.surface_probs) <= set(SURFACES), "impressions.surface_probs",
                f"keys must be surfaces {list(SURFACES)}")
        require(abs(sum(self.surface_probs.values()) - 1) < 1e-6 and min(self.surface_probs.values()) >= 0,
                "impressions.surface_probs", "must be non-negative and sum to 1")
        require(0 < self.exploration <= 1, "impressions.exploration",
                "must be in (0, 1] so that every item has a positive propensity")
        require(self.history_smoothing > 0, "impressions.history_smoothing", "must be > 0")
        require(self.click_window_days > 0 and self.view_window_days > 0, "impressions.*_window_days",
                "attribution windows must be > 0")
        require(self.conversion_delay_mean_days > 0, "impressions.conversion_delay_mean_days", "must be > 0")


def _policy_profiles(world: World, user_ids: np.ndarray, leaf_ids: np.ndarray, before_day: int,
                     start_date: date, smoothing: float) -> np.ndarray:
    """Each user's category distribution (rows sum to 1) from observable events before `before_day`."""
    counts = (world.events.filter(pl.col("category_id").is_in(leaf_ids.tolist())
                                  & (day_index(pl.col("ts"), start_date) < before_day))
              .group_by("user_id", "category_id").len())
    profile = np.full((len(user_ids), len(leaf_ids)), smoothing)
    rows = np.searchsorted(user_ids, counts["user_id"].to_numpy())
    columns = np.searchsorted(leaf_ids, counts["category_id"].to_numpy())
    profile[rows, columns] += counts["len"].to_numpy()
    return profile / profile.sum(axis=1, keepdims=True)


def generate_impressions(world: World, state: ResponseState,
                         config: ImpressionConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Log `config.n_days` days of ad impressions; returns (IMPRESSIONS, IMPRESSIONS_TRUTH) frames."""
    rng = np.random.default_rng(config.seed)
    last_day = int(world.events.select(day_index(pl.col("ts").max(), state.start_date)).item())
    first_day = last_day - config.n_days + 1
    require(first_day >= 1, "impressions.n_days",
            f"the world has {last_day + 1} days; log fewer days so that some history precedes them")

    items = world.items.sort("item_id")
    # The policy samples a leaf category, then an item of it; only leaves that have items count.
    leaf_ids = np.unique(items["category_id"].to_numpy())
    order = np.argsort(items["category_id"].to_numpy(), kind="stable")
    item_by_leaf = items["item_id"].to_numpy()[order]
    leaf_start = np.searchsorted(items["category_id"].to_numpy()[order], leaf_ids)
    leaf_size = np.diff(np.append(leaf_start, len(order)))

    users = world.users_truth.sort("user_id")
    user_ids = users["user_id"].to_numpy()
    profile = _policy_profiles(world, user_ids, leaf_ids, first_day, state.start_date,
                               config.history_smoothing)

    # Requests: Poisson per user-day, scaled by activity.
    n_users = len(user_ids)
    counts = rng.poisson(config.requests_per_user_day * np.repeat(users["activity"].to_numpy(), config.n_days))
    request_user = np.repeat(np.repeat(np.arange(n_users), config.n_days), counts)
    request_day = np.repeat(np.tile(np.arange(first_day, last_day + 1), n_users), counts)
    surface_names = list(config.surface_probs)
    surface_codes = np.array([SURFACES.index(s) for s in surface_names])
    request_surface = surface_codes[rng.choice(len(surface_names), size=len(request_user),
                                               p=list(config.surface_probs.values()))]
    request_second = rng.integers(0, 86_400, size=len(request_user))
    order = np.lexsort((request_second, request_day))
    request_user, request_day = request_user[order], request_day[order]
    request_surface, request_second = request_surface[order], request_second[order]

    # Slots: exploration picks uniformly among items; otherwise leaf ~ profile, item ~ uniform in leaf.
    slots = config.slots_per_request
    user = np.repeat(request_user, slots)
    n_rows = len(user)
    cumulative = np.cumsum(profile, axis=1)
    cumulative[:, -1] = 1.0
    flat = (cumulative + np.arange(n_users)[:, None]).ravel()
    leaf = np.searchsorted(flat, user + rng.random(n_rows) * (1 - 1e-12), side="right") - user * len(leaf_ids)
    leaf = np.minimum(leaf, len(leaf_ids) - 1)
    within = (rng.random(n_rows) * leaf_size[leaf]).astype(np.int64)
    policy_item = item_by_leaf[leaf_start[leaf] + within]
    is_explore = rng.random(n_rows) < config.exploration
    item_id = np.where(is_explore, items["item_id"].to_numpy()[rng.integers(0, items.height, n_rows)], policy_item)

    item_index = np.searchsorted(items["item_id"].to_numpy(), item_id)
    item_leaf = np.searchsorted(leaf_ids, items["category_id"].to_numpy()[item_index])
    propensity = ((1 - config.exploration) * profile[user, item_leaf] / leaf_size[item_leaf]
                  + config.exploration / items.height)

    position = np.tile(np.arange(slots), len(request_user))
    surface = np.repeat(request_surface, slots)
    day = np.repeat(request_day, slots)
    rates = true_rates(state, user_ids[user], item_id, surface, position, day)

    is_click = rng.random(n_rows) < rates.p_click
    dwell = np.where(is_click, rng.lognormal(rates.dwell_log_mean, state.config.dwell_log_sd), 0.0)
    delay = rng.exponential(config.conversion_delay_mean_days, n_rows)
    is_ctcvr = is_click & (rng.random(n_rows) < rates.p_conversion) & (delay <= config.click_window_days)
    is_vtcvr = ~is_click & (rng.random(n_rows) < rates.p_view_conversion) & (delay <= config.view_window_days)

    request_ts = (np.datetime64(state.start_date, "us")
                  + (request_day * 86_400 + request_second).astype("timedelta64[s]"))
    request_id = np.repeat(np.arange(len(request_user), dtype=np.int64), slots)
    impressions = conform(pl.DataFrame({
        "request_id": request_id,
        "user_id": user_ids[user],
        "ts": pl.Series(np.repeat(request_ts, slots)).dt.replace_time_zone("UTC"),
        "surface": np.array(SURFACES)[surface],
        "position": position,
        "item_id": item_id,
        "advertiser_id": items["advertiser_id"].to_numpy()[item_index],
        "category_id": items["category_id"].to_numpy()[item_index],
        "is_click": is_click,
        "dwell_seconds": dwell,
        "is_ctcvr": is_ctcvr,
        "is_vtcvr": is_vtcvr,
        "propensity": propensity,
    }), IMPRESSIONS, "impressions")
    truth = conform(pl.DataFrame({
        "request_id": request_id,
        "position": position,
        "p_click": rates.p_click,
        "p_conversion": rates.p_conversion,
        "p_view_conversion": rates.p_view_conversion,
    }), IMPRESSIONS_TRUTH, "impressions_truth")
    return impressions, truth


def impression_summary(impressions: pl.DataFrame) -> dict:
    """Volumes and observed rates of a logged-impressions table (for stage summaries)."""
    return impressions.select(
        pl.len().alias("impressions"), pl.col("request_id").n_unique().alias("requests"),
        pl.col("user_id").n_unique().alias("users"), pl.col("is_click").mean().alias("ctr"),
        pl.col("is_ctcvr").mean().alias("ctcvr_rate"), pl.col("is_vtcvr").mean().alias("vtcvr_rate"),
    ).to_dicts()[0]


@dataclass(frozen=True)
class LoggingRunConfig:
    """`adsim rank impressions`: the logging policy and the true response model it samples from."""

    impressions: ImpressionConfig = field(default_factory=ImpressionConfig)
    response: ResponseConfig = field(default_factory=ResponseConfig)


def world_clock(world_dir: Path) -> tuple[date, int]:
    """The world's start date and interest-drift period, from the world stage's recorded config."""
    record_path = Path(world_dir) / "stage.json"
    if not record_path.exists():
        raise FileNotFoundError(f"{record_path} not found: the impressions need the world's start date and "
                                f"drift period; generate the world with `adsim world --out <run>`")
    config = json.loads(record_path.read_text())["config"]
    return date.fromisoformat(config["start_date"]), int(config["users"]["drift_period_days"])
