"""LLM-derived features: as-of list selection, rank, category share, interest overlap, random control."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from ranking.llm_features import (INTEREST_FEATURE, RANDOM_SOURCE, PredictedLists, llm_features,
                                   random_interest_lists, random_prediction_lists)
from synthetic_data.schema import PREDICTED_INTERESTS, PREDICTIONS, conform, validate

ADVERTISERS = pl.DataFrame({"advertiser_id": [1, 2, 3, 4], "category_id": [11, 11, 12, 13]},
                           schema={"advertiser_id": pl.Int32, "category_id": pl.Int32})
CATEGORIES = pl.DataFrame({"category_id": [1, 11, 12, 13], "parent_id": [None, 1, 1, 1],
                           "name": ["Home", "Lamps", "Rugs", "Vases"]},
                          schema={"category_id": pl.Int32, "parent_id": pl.Int32, "name": pl.String})


def predictions_table(rows: list[tuple[int, date, int, int | None]], source: str = "hand") -> pl.DataFrame:
    return conform(pl.DataFrame({
        "user_id": [r[0] for r in rows], "anchor_date": [r[1] for r in rows], "rank": [r[2] for r in rows],
        "advertiser_id": [r[3] for r in rows], "advertiser_name": [f"name {r[3]}" for r in rows],
        "source": source}, schema_overrides={"advertiser_id": pl.Int32}), PREDICTIONS)


PREDICTIONS_TABLE = predictions_table([
    (7, date(2026, 1, 10), 1, 3), (7, date(2026, 1, 10), 2, 1), (7, date(2026, 1, 10), 3, None),
    (7, date(2026, 1, 20), 1, 2), (7, date(2026, 1, 20), 2, 4),
])


def rows_table(rows: list[tuple[int, date, int, int]]) -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": [r[0] for r in rows], "date": [r[1] for r in rows], "advertiser_id": [r[2] for r in rows],
        "category_id": [r[3] for r in rows], "parent_id": [1] * len(rows)},
        schema={"user_id": pl.Int64, "date": pl.Date, "advertiser_id": pl.Int32, "category_id": pl.Int32,
                "parent_id": pl.Int32})


def test_latest_list_published_before_the_day_gives_rank_and_category_share():
    rows = rows_table([
        (7, date(2026, 1, 10), 3, 12),  # the anchor day itself: its list is not yet available
        (7, date(2026, 1, 11), 3, 12),  # first list: rank 1, 1 of 3 listed advertisers sells rugs
        (7, date(2026, 1, 15), 1, 11),  # first list: rank 2
        (7, date(2026, 1, 21), 1, 11),  # second list: advertiser 1 no longer in it; 2 sells lamps
        (8, date(2026, 1, 21), 2, 11),  # a user without predictions
    ])
    features, counts = llm_features(rows, PREDICTIONS_TABLE, ADVERTISERS)
    assert features["has_prediction"].to_list() == [0, 1, 1, 1, 0]
    assert features["is_predicted_advertiser"].to_list() == [0, 1, 1, 0, 0]
    assert features["predicted_reciprocal_rank"].to_list() == pytest.approx([0, 1, 0.5, 0, 0])
    assert features["predicted_category_share"].to_list() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 2, 0])
    assert counts == {"unresolved_prediction_rows": 1}  # the null advertiser is counted, not dropped


def test_interest_overlap_matches_leaf_or_parent_names_case_insensitively():
    interests = conform(pl.DataFrame({
        "user_id": [7, 7, 9], "anchor_date": [date(2026, 1, 10)] * 3, "rank": [1, 2, 1],
        "interest": ["rugs ", "garden", "HOME"]}), PREDICTED_INTERESTS)
    predictions = predictions_table([(7, date(2026, 1, 10), 1, 3), (9, date(2026, 1, 10), 1, 1)])
    rows = rows_table([(7, date(2026, 1, 12), 1, 12), (7, date(2026, 1, 12), 1, 11), (9, date(2026, 1, 12), 4, 13)])
    features, _ = llm_features(rows, predictions, ADVERTISERS, interests, CATEGORIES)
    assert features["interest_overlap"].to_list() == [1, 0, 1]  # rugs leaf; lamps no; home is the parent


def test_interest_overlap_matches_spellings_of_a_category_name():
    categories = CATEGORIES.with_columns(name=pl.Series(["Home & Garden", "Lamps", "Rugs", "Vases"]))
    interests = conform(pl.DataFrame({"user_id": [7], "anchor_date": [date(2026, 1, 10)], "rank": [1],
                                      "interest": ["home and garden"]}), PREDICTED_INTERESTS)
    predictions = predictions_table([(7, date(2026, 1, 10), 1, 3)])
    features, _ = llm_features(rows_table([(7, date(2026, 1, 12), 1, 12)]), predictions, ADVERTISERS, interests,
                               categories)
    assert features["interest_overlap"].to_list() == [1]  # the parent's name, spelt with 'and'


def test_random_control_keeps_list_lengths_and_draws_distinct_advertisers():
    advertiser_ids = np.arange(1, 41, dtype=np.int32)
    control = random_prediction_lists(PREDICTIONS_TABLE, advertiser_ids, seed=3)
    validate(control, PREDICTIONS, "control")
    assert (control["source"] == RANDOM_SOURCE).all()
    lengths = control.group_by("user_id", "anchor_date").agg(pl.len(), pl.col("advertiser_id").n_unique().alias("distinct"))
    assert sorted(lengths["len"].to_list()) == [2, 3]
    assert (lengths["len"] == lengths["distinct"]).all()
    assert control.sort("anchor_date", "rank")["rank"].to_list() == [1, 2, 3, 1, 2]
    assert control.equals(random_prediction_lists(PREDICTIONS_TABLE, advertiser_ids, seed=3))
    assert not control.equals(random_prediction_lists(PREDICTIONS_TABLE, advertiser_ids, seed=4))
    with pytest.raises(ValueError, match="only 2 exist"):
        random_prediction_lists(PREDICTIONS_TABLE, advertiser_ids[:2], seed=0)


def test_random_interests_keep_rows_and_use_the_vocabulary():
    interests = conform(pl.DataFrame({"user_id": [7, 7], "anchor_date": [date(2026, 1, 10)] * 2,
                                      "rank": [1, 2], "interest": ["rugs", "lamps"]}), PREDICTED_INTERESTS)
    control = random_interest_lists(interests, ["a", "b", "c"], seed=0)
    assert control.height == 2 and set(control["interest"]) <= {"a", "b", "c"}


def _reference_features(rows: pl.DataFrame, predictions: pl.DataFrame, advertisers: pl.DataFrame,
                        interests: pl.DataFrame, categories: pl.DataFrame) -> pl.DataFrame:
    """The original polars formulation (as-of join + re-aggregation per call): the test oracle."""
    listed = (predictions.drop_nulls("advertiser_id")
              .group_by("user_id", "anchor_date", "advertiser_id").agg(pl.col("rank").min()))
    lists = (predictions.group_by("user_id", "anchor_date").agg(list_length=pl.len())
             .with_columns(available=pl.col("anchor_date") + pl.duration(days=1)).sort("available"))
    frame = (rows.with_row_index("row").sort("date")
             .join_asof(lists, left_on="date", right_on="available", by="user_id", strategy="backward",
                        check_sortedness=False)
             .join(listed, on=["user_id", "anchor_date", "advertiser_id"], how="left"))
    shares = (listed.join(advertisers.select("advertiser_id", pl.col("category_id").alias("listed_category")),
                          on="advertiser_id")
              .group_by("user_id", "anchor_date", "listed_category").agg(category_hits=pl.len()))
    frame = frame.join(shares, left_on=["user_id", "anchor_date", "category_id"],
                       right_on=["user_id", "anchor_date", "listed_category"], how="left")
    names = categories.select("category_id", name=pl.col("name").str.to_lowercase().str.strip_chars())
    matched = (interests.with_columns(name=pl.col("interest").str.to_lowercase().str.strip_chars())
               .join(names, on="name").select("user_id", "anchor_date", "category_id").unique())
    keys = ["user_id", "anchor_date"]
    frame = frame.join(matched.with_columns(leaf_hit=pl.lit(True)), on=keys + ["category_id"], how="left")
    frame = frame.join(matched.with_columns(parent_hit=pl.lit(True)), left_on=keys + ["parent_id"],
                       right_on=keys + ["category_id"], how="left")
    return frame.sort("row").select(
        pl.col("list_length").is_not_null().cast(pl.Float32).alias("has_prediction"),
        pl.col("rank").is_not_null().cast(pl.Float32).alias("is_predicted_advertiser"),
        (1.0 / pl.col("rank")).fill_null(0.0).cast(pl.Float32).alias("predicted_reciprocal_rank"),
        (pl.col("category_hits") / pl.col("list_length")).fill_null(0.0).cast(pl.Float32)
        .alias("predicted_category_share"),
        (pl.col("leaf_hit").fill_null(False) | pl.col("parent_hit").fill_null(False)).cast(pl.Float32)
        .alias(INTEREST_FEATURE))


def test_indexed_lists_equal_the_reference_and_grow_incrementally(tiny_world, tiny_impressions, tiny_predictions):
    world = tiny_world
    # unresolved names and a repeated advertiser (its best rank counts) as a model may produce them
    predictions = tiny_predictions.with_columns(
        pl.when(pl.col("rank") == 4).then(None).otherwise(pl.col("advertiser_id")).alias("advertiser_id"))
    predictions = pl.concat([predictions, predictions.filter(pl.col("rank") == 1).with_columns(rank=pl.lit(7, pl.Int32))])
    rng = np.random.default_rng(0)
    lists = predictions.select("user_id", "anchor_date").unique().sort("user_id", "anchor_date")
    names = world.categories["name"].to_numpy()
    interests = conform(lists.with_columns(
        rank=pl.lit(1), interest=pl.Series(names[rng.integers(0, len(names), lists.height)]).str.to_uppercase()),
        PREDICTED_INTERESTS)
    rows = (tiny_impressions.gather_every(8).select("user_id", pl.col("ts").dt.date().alias("date"), "item_id")
            .join(world.items.select("item_id", "advertiser_id", "category_id"), on="item_id", how="left",
                  maintain_order="left")
            .join(world.categories.select("category_id", "parent_id"), on="category_id", how="left",
                  maintain_order="left")
            .select("user_id", "date", "advertiser_id", "category_id", pl.col("parent_id").fill_null(-1)))
    expected = _reference_features(rows, predictions, world.advertisers, interests, world.categories)
    assert expected["is_predicted_advertiser"].sum() > 0 and expected["interest_overlap"].sum() > 0

    features, counts = llm_features(rows, predictions, world.advertisers, interests, world.categories)
    assert features.equals(expected)
    assert counts == {"unresolved_prediction_rows": predictions["advertiser_id"].null_count()}

    first_anchor = predictions["anchor_date"].min()
    grown = (PredictedLists.build(predictions.filter(pl.col("anchor_date") == first_anchor), world.advertisers,
                                  interests, world.categories)
             .with_predictions(predictions.filter(pl.col("anchor_date") > first_anchor)))
    assert grown.features(rows).equals(expected)
    with pytest.raises(ValueError, match="already served"):
        grown.with_predictions(predictions.head(1))
