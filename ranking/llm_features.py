"""LLM-derived ranking features (paper 3.6.2) and the random-list control of the lift experiment.

For each impression the user's latest predicted list published before the impression's day gives:
whether the candidate's advertiser is in it, its reciprocal rank, the share of listed advertisers
selling in the candidate's category, and whether a predicted interest names the candidate's category.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from synthetic_data.schema import PREDICTED_INTERESTS, PREDICTIONS, conform, validate

LLM_FEATURES = ("has_prediction", "is_predicted_advertiser", "predicted_reciprocal_rank",
                "predicted_category_share")
INTEREST_FEATURE = "interest_overlap"
RANDOM_SOURCE = "random_control"


def _latest_lists(rows: pl.DataFrame, lists: pl.DataFrame) -> pl.DataFrame:
    """Attach each row's latest (user, anchor_date) list usable on the row's date (anchor < date)."""
    lists = lists.with_columns(available=pl.col("anchor_date") + pl.duration(days=1)).sort("available")
    # Both sides are sorted on the as-of key; polars cannot verify that within `by` groups.
    return rows.sort("date").join_asof(lists, left_on="date", right_on="available", by="user_id",
                                       strategy="backward", check_sortedness=False)


def llm_features(rows: pl.DataFrame, predictions: pl.DataFrame, advertisers: pl.DataFrame,
                 interests: pl.DataFrame | None = None,
                 categories: pl.DataFrame | None = None) -> tuple[pl.DataFrame, dict]:
    """Feature columns aligned with `rows` (user_id, date, advertiser_id, category_id, parent_id).

    Returns the features and counts of what the predictions could not contribute (rows in lists
    whose advertiser is null, i.e. names the model produced that matched no advertiser).
    """
    validate(predictions, PREDICTIONS, "predictions")
    unresolved = int(predictions["advertiser_id"].null_count())
    listed = (predictions.drop_nulls("advertiser_id")
              .group_by("user_id", "anchor_date", "advertiser_id").agg(pl.col("rank").min()))
    lists = predictions.group_by("user_id", "anchor_date").agg(list_length=pl.len())
    frame = _latest_lists(rows.with_row_index("row"), lists)
    frame = frame.join(listed, on=["user_id", "anchor_date", "advertiser_id"], how="left")
    shares = (listed.join(advertisers.select("advertiser_id", pl.col("category_id").alias("listed_category")),
                          on="advertiser_id")
              .group_by("user_id", "anchor_date", "listed_category").agg(category_hits=pl.len()))
    frame = frame.join(shares, left_on=["user_id", "anchor_date", "category_id"],
                       right_on=["user_id", "anchor_date", "listed_category"], how="left")
    columns = [
        pl.col("list_length").is_not_null().cast(pl.Float32).alias("has_prediction"),
        pl.col("rank").is_not_null().cast(pl.Float32).alias("is_predicted_advertiser"),
        (1.0 / pl.col("rank")).fill_null(0.0).cast(pl.Float32).alias("predicted_reciprocal_rank"),
        (pl.col("category_hits") / pl.col("list_length")).fill_null(0.0).cast(pl.Float32)
        .alias("predicted_category_share"),
    ]
    if interests is not None:
        if categories is None:
            raise ValueError("interest features need the categories table to match interests to categories")
        frame = _with_interest_overlap(frame, interests, categories)
        columns.append(pl.col(INTEREST_FEATURE))
    features = frame.sort("row").select(columns)
    return features, {"unresolved_prediction_rows": unresolved}


def _with_interest_overlap(frame: pl.DataFrame, interests: pl.DataFrame,
                           categories: pl.DataFrame) -> pl.DataFrame:
    """Adds 1 where a predicted interest (case-insensitive) names the row's leaf category or its parent."""
    validate(interests, PREDICTED_INTERESTS, "predicted_interests")
    names = categories.select("category_id", name=pl.col("name").str.to_lowercase().str.strip_chars())
    matched = (interests.with_columns(name=pl.col("interest").str.to_lowercase().str.strip_chars())
               .join(names, on="name").select("user_id", "anchor_date", "category_id").unique())
    keys = ["user_id", "anchor_date"]
    frame = frame.join(matched.with_columns(leaf_hit=pl.lit(True)), on=keys + ["category_id"], how="left")
    frame = frame.join(matched.with_columns(parent_hit=pl.lit(True)), left_on=keys + ["parent_id"],
                       right_on=keys + ["category_id"], how="left")
    overlap = pl.col("leaf_hit").fill_null(False) | pl.col("parent_hit").fill_null(False)
    return frame.with_columns(overlap.cast(pl.Float32).alias(INTEREST_FEATURE))


def random_prediction_lists(predictions: pl.DataFrame, advertiser_ids: np.ndarray, seed: int) -> pl.DataFrame:
    """The control: each (user, anchor) list replaced by distinct uniform advertisers, same length."""
    validate(predictions, PREDICTIONS, "predictions")
    lists = predictions.group_by("user_id", "anchor_date").agg(length=pl.len()).sort("user_id", "anchor_date")
    lengths = lists["length"].to_numpy().astype(np.int64)
    max_length = int(lengths.max()) if len(lengths) else 0
    if max_length > len(advertiser_ids):
        raise ValueError(f"a predicted list has {max_length} advertisers but only "
                         f"{len(advertiser_ids)} exist to draw the random control from")
    rng = np.random.default_rng(seed)
    drawn = []
    for start in range(0, len(lists), 8192):  # chunks bound the (lists x advertisers) key matrix
        keys = rng.random((min(8192, len(lists) - start), len(advertiser_ids)))
        drawn.append(np.argsort(keys, axis=1)[:, :max_length])
    order = np.concatenate(drawn) if drawn else np.zeros((0, 0), dtype=np.int64)
    list_index = np.repeat(np.arange(len(lists)), lengths)
    rank = np.arange(len(list_index)) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    chosen = np.asarray(advertiser_ids)[order[list_index, rank - 1]]
    return conform(pl.DataFrame({
        "user_id": lists["user_id"].to_numpy()[list_index],
        "anchor_date": lists["anchor_date"].gather(list_index),
        "rank": rank, "advertiser_id": chosen, "advertiser_name": [None] * len(chosen),
        "source": RANDOM_SOURCE,
    }, schema_overrides={"advertiser_name": pl.String}), PREDICTIONS, "random predictions")


def random_interest_lists(interests: pl.DataFrame, vocabulary: list[str], seed: int) -> pl.DataFrame:
    """The control for predicted interests: each interest replaced by a uniform category name."""
    validate(interests, PREDICTED_INTERESTS, "predicted_interests")
    rng = np.random.default_rng(seed)
    return interests.with_columns(interest=pl.Series(np.asarray(vocabulary)[
        rng.integers(0, len(vocabulary), interests.height)]))
