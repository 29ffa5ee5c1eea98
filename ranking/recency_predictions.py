"""A non-LLM predictions table: each user's most recent advertisers before each anchor date.

It validates the LLM-feature machinery before (or beside) the LLM's own predictions; its rows say
`source = "recent_advertisers"` so no output can mistake it for an LLM.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from synthetic_data.schema import PREDICTIONS, conform

SOURCE = "recent_advertisers"


def recent_advertiser_predictions(events: pl.DataFrame, advertisers: pl.DataFrame,
                                  anchor_dates: list[date], list_length: int) -> pl.DataFrame:
    """Up to `list_length` distinct advertisers per (user, anchor), by the latest event up to the anchor day."""
    if list_length < 1:
        raise ValueError(f"list_length must be >= 1, got {list_length}")
    anchors = pl.DataFrame({"anchor_date": sorted(set(anchor_dates))}, schema={"anchor_date": pl.Date})
    touched = (events.filter(pl.col("advertiser_id").is_not_null())
               .select("user_id", "advertiser_id", day=pl.col("ts").dt.date(), ts="ts"))
    latest = (touched.join(anchors, how="cross").filter(pl.col("day") <= pl.col("anchor_date"))
              .group_by("user_id", "anchor_date", "advertiser_id").agg(pl.col("ts").max()))
    ranked = (latest.with_columns(rank=pl.col("ts").rank("ordinal", descending=True)
                                  .over("user_id", "anchor_date"))
              .filter(pl.col("rank") <= list_length)
              .join(advertisers.select("advertiser_id", advertiser_name="name"), on="advertiser_id", how="left"))
    return conform(ranked.select("user_id", "anchor_date", "rank", "advertiser_id", "advertiser_name",
                                 source=pl.lit(SOURCE)).sort("user_id", "anchor_date", "rank"),
                   PREDICTIONS, "recent-advertiser predictions")
