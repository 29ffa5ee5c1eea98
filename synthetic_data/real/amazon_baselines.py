"""Exact next-brand baselines on an adapted world: popularity and most-recent brand (issue 4).

`most_recent_no_fill` lists only the user's own past brands (llm_predictor.baselines' `most_recent`
fills the rest of the list with popular ones), so its Recall@20 is
(up to the 20-brand cap) the share of next purchases from a brand the user bought before.

Both read only conversion events dated up to each request's anchor date, so on the Amazon world
the test history is the leave-one-out history; both are deterministic (ties: smaller id first).
"""

from __future__ import annotations

import polars as pl

from synthetic_data import schema


def conversions_until_anchor(events: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
    """Each request's user's conversions with an advertiser, dated on or before its anchor date."""
    return (
        requests.select("user_id", "anchor_date").unique()
        .join(
            events.filter(pl.col("kind").is_in(schema.CONVERSION_KINDS)
                          & pl.col("advertiser_id").is_not_null())
            .select("user_id", "ts", "advertiser_id"),
            on="user_id", how="inner",
        )
        .filter(pl.col("ts").dt.date() <= pl.col("anchor_date"))
    )


def _as_predictions(ranked: pl.DataFrame, advertisers: pl.DataFrame, source: str) -> pl.DataFrame:
    return schema.conform(
        ranked.join(advertisers.select("advertiser_id", pl.col("name").alias("advertiser_name")),
                    on="advertiser_id", how="left")
        .select("user_id", "anchor_date", "rank", "advertiser_id", "advertiser_name",
                pl.lit(source).alias("source"))
        .sort("user_id", "anchor_date", "rank"),
        schema.PREDICTIONS, source,
    )


def popularity_predictions(events: pl.DataFrame, requests: pl.DataFrame,
                           advertisers: pl.DataFrame, k: int = 20) -> pl.DataFrame:
    """The k advertisers with the most conversions (all users) dated up to each anchor date."""
    anchors = requests.select("anchor_date").unique()
    counts = (
        anchors.join(
            events.filter(pl.col("kind").is_in(schema.CONVERSION_KINDS)
                          & pl.col("advertiser_id").is_not_null())
            .select(pl.col("ts").dt.date().alias("day"), "advertiser_id"),
            how="cross",
        )
        .filter(pl.col("day") <= pl.col("anchor_date"))
        .group_by("anchor_date", "advertiser_id").len()
        .sort(["anchor_date", "len", "advertiser_id"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("anchor_date").alias("rank"))
        .filter(pl.col("rank") <= k)
    )
    ranked = requests.select("user_id", "anchor_date").unique().join(counts, on="anchor_date")
    return _as_predictions(ranked, advertisers, "popularity")


def most_recent_predictions(events: pl.DataFrame, requests: pl.DataFrame,
                            advertisers: pl.DataFrame, k: int = 20) -> pl.DataFrame:
    """The user's own past advertisers, most recent conversion first, up to k (no filling)."""
    history = conversions_until_anchor(events, requests)
    ranked = (
        history.group_by("user_id", "anchor_date", "advertiser_id").agg(pl.col("ts").max())
        .sort(["user_id", "anchor_date", "ts", "advertiser_id"],
              descending=[False, False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_id", "anchor_date").alias("rank"))
        .filter(pl.col("rank") <= k)
    )
    return _as_predictions(ranked, advertisers, "most_recent_no_fill")
