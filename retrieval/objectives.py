"""Training positives for the three two-tower objectives compared in the paper (4.5.1).

- impressions: every logged impression is a positive (the `IMPRESSIONS` table when given); without
  one, engagement events with an item stand in as "impression-like" positives (weight 1).
- clicks: clicks weighted by dwell, w = min_w + (1 - min_w) * log1p(min(dwell, cap)) / log1p(cap).
  Without impressions, engagement events are the clicks and dwell is proxied by the seconds until
  the user's next event; a click with no later event within `cap` (the end of a session) counts
  as a full-dwell click.
- conversions: attributed or matched conversion events that name an item (weight 1).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from retrieval.config import TrainingConfig
from synthetic_data.schema import CONVERSION_KINDS, EVENTS, IMPRESSIONS, validate

POSITIVES_COLUMNS = ("user_id", "ts", "item_id", "weight")


def click_weight(dwell_seconds: pl.Expr, config: TrainingConfig) -> pl.Expr:
    """Dwell-based weight of a click, in [min_click_weight, 1] (log-shaped, capped)."""
    capped = pl.min_horizontal(dwell_seconds.fill_null(config.dwell_cap_seconds).clip(0.0),
                               pl.lit(config.dwell_cap_seconds))
    share = capped.log1p() / pl.lit(config.dwell_cap_seconds).log1p()
    return config.min_click_weight + (1.0 - config.min_click_weight) * share


def training_positives(events: pl.DataFrame, config: TrainingConfig, before: datetime,
                       user_ids: pl.Series, impressions: pl.DataFrame | None = None) -> pl.DataFrame:
    """Positives (user_id, ts, item_id, weight) of `config.objective` for `user_ids`, before `before`."""
    validate(events, EVENTS, "events")
    window = (pl.col("ts") < before) & pl.col("user_id").is_in(user_ids.implode())
    if config.objective == "conversions":
        positives = events.filter(window & pl.col("kind").is_in(CONVERSION_KINDS)
                                  & pl.col("item_id").is_not_null()).with_columns(weight=pl.lit(1.0))
    elif impressions is not None:
        validate(impressions, IMPRESSIONS, "impressions")
        logged = impressions.filter(window)
        if config.objective == "impressions":
            positives = logged.with_columns(weight=pl.lit(1.0))
        else:
            positives = logged.filter(pl.col("is_click")).with_columns(
                weight=click_weight(pl.col("dwell_seconds").cast(pl.Float64), config))
    else:
        # Dwell proxy: time to the user's next event of any kind before `before` (no peeking ahead).
        with_gap = events.filter(pl.col("ts") < before).sort("user_id", "ts", "event_id").with_columns(
            dwell=(pl.col("ts").shift(-1).over("user_id") - pl.col("ts")).dt.total_microseconds() / 1e6
        )
        engaged = with_gap.filter(window & (pl.col("kind") == "engagement")
                                  & pl.col("item_id").is_not_null())
        weight = pl.lit(1.0) if config.objective == "impressions" else click_weight(pl.col("dwell"), config)
        positives = engaged.with_columns(weight=weight)
    return positives.select(
        pl.col("user_id").cast(pl.Int64), "ts", pl.col("item_id").cast(pl.Int32),
        pl.col("weight").cast(pl.Float32),
    ).sort("ts", "user_id", "item_id")
