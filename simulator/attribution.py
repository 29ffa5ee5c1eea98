"""Delayed click-through and view-through conversions and their attribution windows (paper 4.5).

A clicked ad converts with the true p_conversion, a seen but unclicked one with the true
p_view_conversion; the conversion arrives after an exponential delay and is
attributed to the ad only if it arrives within the click (or view) window. Unattributed
conversions still happen - the advertiser just cannot credit them to the ad.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from simulator.config import FeedbackConfig
from simulator.random_streams import exponentials, normals, uniforms

SECONDS_PER_DAY = 86400.0


def is_attributed(delay_seconds: np.ndarray, is_click_through: np.ndarray, config: FeedbackConfig) -> np.ndarray:
    """Whether each conversion arrived within its window (click window after a click, else view window)."""
    window = np.where(is_click_through, config.click_window_days, config.view_window_days) * SECONDS_PER_DAY
    return np.asarray(delay_seconds) <= window


def draw_conversions(impressions: pl.DataFrame, config: FeedbackConfig, seed: int) -> pl.DataFrame:
    """The conversions caused by seen impressions, with arrival time, value and attribution.

    `impressions` needs request_id, item_id, ts, is_click, p_conversion, p_view_conversion and
    price (plus any
    columns to carry along, e.g. user_id, advertiser_id, source); keys make the draws CRN.
    """
    request_id = impressions["request_id"].to_numpy()
    item_id = impressions["item_id"].to_numpy()
    is_click = impressions["is_click"].to_numpy()
    p_conversion = impressions["p_conversion"].to_numpy()
    u_click = uniforms(seed, "conversion", request_id, item_id)
    u_view = uniforms(seed, "view_conversion", request_id, item_id)
    converts = np.where(is_click, u_click < p_conversion, u_view < impressions["p_view_conversion"].to_numpy())
    mean_delay = np.where(is_click, config.click_delay_mean_hours, config.view_delay_mean_hours) * 3600.0
    delay = exponentials(seed, "delay", mean_delay, request_id, item_id)
    value = impressions["price"].to_numpy() * np.exp(config.value_log_sd * normals(seed, "value", request_id, item_id))
    return (impressions.with_columns(
                pl.Series("is_click_through", is_click), pl.Series("delay_seconds", delay),
                pl.Series("value", value), pl.Series("_converts", converts))
            .filter(pl.col("_converts"))
            .with_columns(
                (pl.col("ts") + pl.duration(microseconds=(pl.col("delay_seconds") * 1e6).cast(pl.Int64)))
                .alias("arrival_ts"),
                pl.Series("is_attributed", is_attributed(delay[converts], is_click[converts], config)))
            .drop("_converts"))
