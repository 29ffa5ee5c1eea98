"""Batch scoring: one calibrated probability per candidate and task, stable across save and load."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from ranking.config import DCNConfig, TrainConfig
from ranking.scoring import Ranker, load_ranker
from ranking.train import fit_dcn


def test_ranker_scores_batches_like_the_model_and_survives_a_round_trip(tiny_tables, tiny_predictions, tmp_path):
    builder, splits, tables = tiny_tables
    train = tables["train"].rows(np.arange(20_000))
    dcn = fit_dcn(train, tables["validation"], builder.vocab_sizes_, ("ctcvr", "vtcvr"), DCNConfig(),
                  TrainConfig(epochs=1), seed=0)
    ranker = Ranker(builder=builder, models=[dcn], predictions=tiny_predictions)
    candidates = splits["test"].select("request_id", "user_id", "ts", "surface", "position", "item_id")
    scores = ranker.score(candidates)
    assert scores.columns == ["request_id", "item_id", "p_ctcvr", "p_vtcvr"]
    assert scores.height == candidates.height
    expected = dcn.probabilities(tables["test"])
    np.testing.assert_allclose(scores["p_ctcvr"].to_numpy(), expected["ctcvr"], rtol=1e-6)
    assert ((scores["p_vtcvr"] > 0) & (scores["p_vtcvr"] < 1)).all()

    loaded = load_ranker(ranker.save(tmp_path / "ranker.pt"))
    assert loaded.score(candidates.head(1000)).equals(scores.head(1000))
    top_slot = ranker.score(candidates.head(1000).drop("position"))
    at_zero = ranker.score(candidates.head(1000).with_columns(position=pl.lit(0, dtype=pl.Int16)))
    assert top_slot.equals(at_zero)


def test_fresh_predictions_reach_the_llm_features_until_reset(tiny_tables, tiny_predictions):
    builder, splits, tables = tiny_tables
    dcn = fit_dcn(tables["train"].rows(np.arange(20_000)), tables["validation"], builder.vocab_sizes_,
                  ("ctcvr",), DCNConfig(), TrainConfig(epochs=1), seed=0)
    ranker = Ranker(builder=builder, models=[dcn], predictions=tiny_predictions)
    candidates = splits["test"].select("request_id", "user_id", "ts", "surface", "position", "item_id")
    before = ranker.score(candidates)
    # a nightly refresh the day before the test split: every user's list moves one advertiser down
    anchor = candidates["ts"].min().date() - timedelta(days=1)
    assert anchor not in tiny_predictions["anchor_date"].to_list()
    latest = tiny_predictions.filter(pl.col("anchor_date") == pl.col("anchor_date").max())
    fresh = latest.with_columns(anchor_date=pl.lit(anchor), advertiser_id=pl.col("advertiser_id").shift(1))
    ranker.update_predictions(fresh)
    refreshed = ranker.score(candidates)
    combined = Ranker(builder=builder, models=[dcn], predictions=pl.concat([tiny_predictions, fresh]))
    assert refreshed.equals(combined.score(candidates))
    assert not refreshed.equals(before)
    ranker.reset_predictions()
    assert ranker.score(candidates).equals(before)



def test_serve_from_adds_the_market_lists_and_survives_a_reset(tiny_tables, tiny_predictions):
    builder, splits, tables = tiny_tables
    dcn = fit_dcn(tables["train"].rows(np.arange(20_000)), tables["validation"], builder.vocab_sizes_,
                  ("ctcvr",), DCNConfig(), TrainConfig(epochs=1), seed=0)
    candidates = splits["test"].select("request_id", "user_id", "ts", "surface", "position", "item_id")
    anchor = candidates["ts"].min().date() - timedelta(days=1)  # the serving lists' anchor
    latest = tiny_predictions.filter(pl.col("anchor_date") == pl.col("anchor_date").max())
    serving = latest.with_columns(anchor_date=pl.lit(anchor), advertiser_id=pl.col("advertiser_id").shift(1))
    ranker = Ranker(builder=builder, models=[dcn], predictions=tiny_predictions)
    ranker.serve_from(serving)
    ranker.reset_predictions()  # a new market starts from training + serving lists
    combined = Ranker(builder=builder, models=[dcn], predictions=pl.concat([tiny_predictions, serving]))
    assert ranker.score(candidates).equals(combined.score(candidates))
