"""Labels and splits exactly as the paper's section 3.2 and 4.1.

For an anchor date x: the label is the first conversion in days [x+1, x+window] whose advertiser
is active with active spend and whose conversion type is high-priority; users without one get no
row. Users are split 0.9/0.1 train/eval at random (no user on both sides). V0: users whose
conversion history up to x is long (matched + attributed >= v0_min_history, or each, per
`v0_rule`). V1 (serving-aligned, paper 3.2.1): users with a conversion with an active advertiser
within the last `v1_lookback_days` up to x.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from synthetic_data import schema
from synthetic_data.config import LabelConfig
from synthetic_data.schema import CONVERSION_KINDS


def anchor_dates(start_date: str, config: LabelConfig) -> list[date]:
    start = date.fromisoformat(start_date)
    return [start + timedelta(days=d) for d in config.anchor_days]


def _conversions(events: pl.DataFrame, advertisers: pl.DataFrame) -> pl.DataFrame:
    active = advertisers.select("advertiser_id", "is_active", "has_active_spend")
    return (events.filter(pl.col("kind").is_in(CONVERSION_KINDS))
            .select("user_id", "ts", "kind", "advertiser_id", "conversion_type", "is_high_priority")
            .join(active, on="advertiser_id", how="left")
            .with_columns(pl.col("ts").dt.date().alias("date"),
                          (pl.col("is_active").fill_null(False) & pl.col("has_active_spend").fill_null(False))
                          .alias("is_active_spending")))


def history_flags(conversions: pl.DataFrame, anchor: date, config: LabelConfig) -> pl.DataFrame:
    """Per user with any conversion up to `anchor`: in_v0 and in_v1 at that anchor."""
    lookback_start = anchor - timedelta(days=config.v1_lookback_days - 1)
    counts = (conversions.filter(pl.col("date") <= anchor).group_by("user_id").agg(
        (pl.col("kind") == "attributed_conversion").sum().alias("n_attributed"),
        (pl.col("kind") == "matched_conversion").sum().alias("n_matched"),
        ((pl.col("date") >= lookback_start) & pl.col("is_active")).any().alias("in_v1")))
    if config.v0_rule == "each":
        in_v0 = (pl.col("n_attributed") >= config.v0_min_history) & (pl.col("n_matched") >= config.v0_min_history)
    else:
        in_v0 = (pl.col("n_attributed") + pl.col("n_matched")) >= config.v0_min_history
    return counts.select("user_id", in_v0.alias("in_v0"), "in_v1")


def build_labels(events: pl.DataFrame, advertisers: pl.DataFrame, anchors: list[date],
                 config: LabelConfig) -> pl.DataFrame:
    """One row per (user, anchor) that has a valid label in the window (LABELS schema)."""
    conversions = _conversions(events, advertisers)
    eligible = conversions.filter(pl.col("is_active_spending") & pl.col("is_high_priority"))
    frames = []
    for anchor in anchors:
        window_end = anchor + timedelta(days=config.window_days)
        first = (eligible.filter((pl.col("date") > anchor) & (pl.col("date") <= window_end))
                 .sort("user_id", "ts", "advertiser_id")
                 .group_by("user_id", maintain_order=True).first()
                 .select("user_id", pl.lit(anchor).alias("anchor_date"), "advertiser_id", "ts",
                         "conversion_type"))
        flags = history_flags(conversions, anchor, config)
        frames.append(first.join(flags, on="user_id", how="left").with_columns(
            pl.col("in_v0").fill_null(False), pl.col("in_v1").fill_null(False)))
    labels = pl.concat(frames).sort("anchor_date", "user_id")
    return schema.conform(labels, schema.LABELS, "labels")


def build_splits(user_ids: np.ndarray, events: pl.DataFrame, advertisers: pl.DataFrame,
                 eval_anchor: date, config: LabelConfig, rng: np.random.Generator) -> pl.DataFrame:
    """Random user-level train/eval split; V0/V1 membership at the evaluation anchor (SPLITS)."""
    n = len(user_ids)
    n_eval = int(round(config.eval_share * n))
    is_eval = np.zeros(n, bool)
    is_eval[rng.permutation(n)[:n_eval]] = True
    flags = history_flags(_conversions(events, advertisers), eval_anchor, config)
    splits = (pl.DataFrame({"user_id": np.asarray(user_ids, np.int64),
                            "split": np.where(is_eval, "eval", "train")})
              .join(flags, on="user_id", how="left")
              .with_columns(pl.col("in_v0").fill_null(False), pl.col("in_v1").fill_null(False)))
    return schema.conform(splits, schema.SPLITS, "splits")
