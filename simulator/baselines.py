"""A model-free reference stack: lets the market run, be tested and be benchmarked without trained models.

A category-aware popularity generator, an advertiser-filter generator over any PREDICTIONS
table (the LLM generator's shape, without the two-tower), a logistic scorer over the user's
observable history with the advertiser, and history-based advertiser predictions. Only
observable tables are read (events, items), never `*_truth`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from synthetic_data import schema
from synthetic_data.schema import World


def _item_popularity(world: World) -> pl.DataFrame:
    engaged = world.events.filter(pl.col("item_id").is_not_null()).group_by("item_id").len("engagements")
    return (world.items.select("item_id", "advertiser_id", "category_id")
            .join(engaged, on="item_id", how="left")
            .with_columns(pl.col("engagements").fill_null(0).cast(pl.Float64).add(1.0).log().alias("score")))


class PopularityGenerator:
    """Top-k observed-popular items of the request's category (search, related pins) or overall."""

    def __init__(self, world: World, k: int = 30, source: str = "main"):
        self.source = source
        popularity = _item_popularity(world)
        context = world.items.select(pl.col("item_id").alias("context_item_id"),
                                     pl.col("category_id").alias("context_category"))
        per_category = (popularity.sort("score", descending=True)
                        .group_by("category_id", maintain_order=True).head(k))
        overall = popularity.sort("score", descending=True).head(k).with_columns(pl.lit(-1, pl.Int32).alias("category_id"))
        self.top_ = pl.concat([per_category, overall.select(per_category.columns)]).rename({"category_id": "key"})
        self.context_ = context

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame:
        keyed = (requests.select("request_id", "query_category_id", "context_item_id")
                 .join(self.context_, on="context_item_id", how="left")
                 .select("request_id", pl.coalesce("query_category_id", "context_category", pl.lit(-1)).cast(pl.Int32)
                         .alias("key")))
        out = keyed.join(self.top_, on="key").with_columns(pl.lit(self.source).alias("source"))
        return schema.conform(out.select(list(schema.CANDIDATES)), schema.CANDIDATES, self.source)


class AdvertiserFilterGenerator:
    """The LLM generator's shape: items of each user's predicted advertisers (score = 1 / rank)."""

    def __init__(self, world: World, predictions: pl.DataFrame, items_per_advertiser: int = 5, source: str = "llm"):
        self.source = source
        self.top_items_ = (_item_popularity(world).sort("score", descending=True)
                           .group_by("advertiser_id", maintain_order=True).head(items_per_advertiser))
        self.initial_table_ = self.table_ = self._table(predictions)

    def _table(self, predictions: pl.DataFrame) -> pl.DataFrame:
        latest = predictions.filter(pl.col("anchor_date") == pl.col("anchor_date").max().over("user_id"))
        return (latest.select("user_id", "advertiser_id", "rank").join(self.top_items_, on="advertiser_id")
                .with_columns((1.0 / pl.col("rank")).alias("score")))

    def update_predictions(self, predictions: pl.DataFrame) -> None:
        """Serve `predictions` (e.g. last night's re-inference) to their users from now on."""
        fresh = self._table(predictions)
        kept = self.table_.join(fresh.select("user_id").unique(), on="user_id", how="anti")
        self.table_ = pl.concat([kept, fresh.select(kept.columns)])

    def reset_predictions(self) -> None:
        """Back to the predictions it was built with (each simulated market starts from them)."""
        self.table_ = self.initial_table_

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame:
        out = (requests.select("request_id", "user_id").join(self.table_, on="user_id")
               .with_columns(pl.lit(self.source).alias("source")))
        return schema.conform(out.select(list(schema.CANDIDATES)), schema.CANDIDATES, self.source)


class HistoryScorer:
    """Uncalibrated heuristic: ctcvr = sigmoid(bias + weights . log(1 + user's past engagements/conversions with the advertiser))."""

    def __init__(self, world: World, bias: float = -5.0, weights: tuple[float, float] = (0.6, 1.2)):
        history = world.events.filter(pl.col("advertiser_id").is_not_null())
        self.affinity_ = history.group_by("user_id", "advertiser_id").agg(
            (pl.col("kind") == "engagement").sum().cast(pl.Float64).alias("engagements"),
            pl.col("kind").is_in(list(schema.CONVERSION_KINDS)).sum().cast(pl.Float64).alias("conversions"))
        self.bias, self.weights = bias, weights

    def score(self, candidates: pl.DataFrame) -> pl.DataFrame:
        joined = candidates.select("user_id", "advertiser_id").join(
            self.affinity_, on=["user_id", "advertiser_id"], how="left", maintain_order="left").fill_null(0.0)
        logit = (self.bias + self.weights[0] * np.log1p(joined["engagements"].to_numpy())
                 + self.weights[1] * np.log1p(joined["conversions"].to_numpy()))
        ctcvr = 1.0 / (1.0 + np.exp(-logit))
        return pl.DataFrame({"ctcvr": ctcvr, "vtcvr": 0.1 * ctcvr})


def history_predictions(events: pl.DataFrame, k: int = 5, user_ids: np.ndarray | None = None) -> pl.DataFrame:
    """A PREDICTIONS table anchored at the last event's day: each user's most-converted advertisers
    (a history baseline for the LLM; optionally only for `user_ids`)."""
    conversions = events.filter(pl.col("kind").is_in(list(schema.CONVERSION_KINDS)))
    if user_ids is not None:
        conversions = conversions.filter(pl.col("user_id").is_in(np.asarray(user_ids).tolist()))
    top = (conversions.group_by("user_id", "advertiser_id").len()
           .sort(["user_id", "len", "advertiser_id"], descending=[False, True, False])
           .group_by("user_id", maintain_order=True).head(k)
           .with_columns(pl.int_range(1, pl.len() + 1).over("user_id").alias("rank")))
    anchor = events["ts"].max().date()
    return schema.conform(top.select(
        "user_id", pl.lit(anchor).alias("anchor_date"), "rank", "advertiser_id",
        pl.lit("").alias("advertiser_name"), pl.lit("history").alias("source")), schema.PREDICTIONS, "predictions")
