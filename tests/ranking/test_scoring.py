"""Batch scoring: one calibrated probability per candidate and task, stable across save and load."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from ranking.config import DCNConfig, TrainConfig
from ranking.scoring import Ranker, load_ranker
from ranking.train import fit_dcn


def _spread(table, rows: int = 20_000):
    """`rows` training rows spread over every training day: the lists first serve a few days in, and a
    feature constant in the rows a model trains on has no effect on its scores (`ranking.scaling`)."""
    return table.rows(np.linspace(0, len(table) - 1, rows).astype(np.int64))


def test_ranker_scores_batches_like_the_model_and_survives_a_round_trip(tiny_tables, tiny_predictions, tmp_path):
    builder, splits, tables = tiny_tables
    train = _spread(tables["train"])
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
    dcn = fit_dcn(_spread(tables["train"]), tables["validation"], builder.vocab_sizes_,
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
    dcn = fit_dcn(_spread(tables["train"]), tables["validation"], builder.vocab_sizes_,
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


def _listed_and_unlisted_scores(ranker, candidates):
    """Predicted conversions (p_ctcvr + p_vtcvr) of candidates whose advertiser is in the user's list, and of the rest."""
    scores = ranker.score(candidates)
    table = ranker.builder.transform(candidates, ranker.lists_)
    is_listed = table.dense[:, table.dense_names.index("is_predicted_advertiser")] > 0
    converted = (scores["p_ctcvr"] + scores["p_vtcvr"]).to_numpy().astype(np.float64)
    return converted[is_listed], converted[~is_listed]


def test_listed_advertisers_score_higher_with_most_recent_lists_as_the_features(tiny_world, tiny_tables,
                                                                                 sparse_list_ranker):
    """Fault 0 of issue #13: a ranker whose list features were trained on few users scored every listed
    advertiser ~0 once lists were served to everyone. A user's most recent advertisers are the likeliest
    to convert, so with them as the lists a listed advertiser must score higher, never ~0."""
    import copy

    from ranking.recency_predictions import recent_advertiser_predictions

    _, splits, _ = tiny_tables
    candidates = splits["test"].select("request_id", "user_id", "ts", "surface", "position", "item_id")
    ranker = copy.copy(sparse_list_ranker)
    anchor = candidates["ts"].min().date() - timedelta(days=1)
    ranker.serve_from(recent_advertiser_predictions(tiny_world.events, tiny_world.advertisers, [anchor], 10))
    listed, unlisted = _listed_and_unlisted_scores(ranker, candidates)
    assert len(listed) > 1000 and len(unlisted) > 1000
    assert (listed < 1e-7).mean() < 0.01  # 85% before the bounded scaling
    assert listed.mean() > 2 * unlisted.mean()
    assert np.exp(np.log(listed).mean()) > 2 * np.exp(np.log(unlisted).mean())
    check = ranker.coverage_check(tiny_world.users["user_id"].to_numpy())
    assert check["is_mismatch"] and check["served_users_with_list_share"] > 0.5
    assert check["trained_users_with_list_share"] < 0.05
