from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from simulator.attribution import SECONDS_PER_DAY, draw_conversions, is_attributed
from simulator.config import FeedbackConfig

CONFIG = FeedbackConfig(click_window_days=7.0, view_window_days=1.0)


def test_windows_on_hand_made_cases():
    day = SECONDS_PER_DAY
    delay = np.array([0.5 * day, 6.99 * day, 7.01 * day, 0.99 * day, 1.01 * day, 3 * day])
    is_click = np.array([True, True, True, False, False, False])
    assert is_attributed(delay, is_click, CONFIG).tolist() == [True, True, False, True, False, False]


def test_drawn_conversions_are_attributed_within_their_windows_only():
    n = 20000
    impressions = pl.DataFrame({
        "request_id": np.arange(n, dtype=np.int64), "item_id": np.full(n, 3, np.int32),
        "ts": [datetime(2026, 3, 1, tzinfo=timezone.utc)] * n,
        "is_click": np.arange(n) % 2 == 0, "p_conversion": np.full(n, 0.5),
        "p_view_conversion": np.full(n, 0.2), "price": np.full(n, 10.0)})
    conversions = draw_conversions(impressions, CONFIG, seed=1)
    delay_days = conversions["delay_seconds"].to_numpy() / SECONDS_PER_DAY
    window = np.where(conversions["is_click_through"].to_numpy(), 7.0, 1.0)
    assert (conversions["is_attributed"].to_numpy() == (delay_days <= window)).all()
    arrival = (conversions["arrival_ts"] - conversions["ts"]).dt.total_microseconds().to_numpy() / 1e6
    assert arrival == pytest.approx(conversions["delay_seconds"].to_numpy(), abs=1e-3)
    clicks = conversions.filter(pl.col("is_click_through")).height
    views = conversions.height - clicks
    assert clicks / (n / 2) == pytest.approx(0.5, abs=0.02) and views / (n / 2) == pytest.approx(0.2, abs=0.02)
    # with a 24 h mean click delay, P(delay > 7 days) = exp(-7) and view P(> 1 day) = exp(-2)
    attributed_views = conversions.filter(~pl.col("is_click_through"))["is_attributed"].mean()
    assert attributed_views == pytest.approx(1 - np.exp(-2), abs=0.03)
    # same keys, same draws (common random numbers)
    assert draw_conversions(impressions, CONFIG, seed=1).equals(conversions)
