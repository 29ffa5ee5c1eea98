"""Two-tower training on the tiny world: it learns (beats random and popularity on held-out users
and time), the three objectives give different models, and fits are seeded and reloadable."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import polars as pl
import pytest

from retrieval.config import EvaluationConfig, RetrievalConfig, TrainingConfig
from retrieval.evaluate import evaluation_anchor, evaluation_requests, recall_at_k, relevant_items, window_start
from retrieval.generators import MainGenerator, PopularityGenerator
from retrieval.index import ItemIndex
from retrieval.train import TwoTowerRetriever

from tests.retrieval.conftest import small_config

TINY = RetrievalConfig(training=TrainingConfig(batch_size=256, uniform_negatives=256, epochs=5),
                       evaluation=EvaluationConfig(k=(100,)))


def _setup(world, config):
    anchor = evaluation_anchor(world.events, config.evaluation, world.labels)
    start = window_start(anchor)
    train_users = world.splits.filter(pl.col("split") == "train")["user_id"]
    return anchor, start, train_users


@pytest.fixture(scope="module")
def tiny_impressions(tiny_world):
    """Logged impressions of the tiny world (made by the world package, which may read the truth)."""
    from synthetic_data.impressions import ImpressionConfig, generate_impressions
    from synthetic_data.presets import preset
    from synthetic_data.response import build_response_state

    world_config = preset("tiny")
    state = build_response_state(tiny_world, date.fromisoformat(world_config.start_date),
                                 world_config.users.drift_period_days)
    impressions, _ = generate_impressions(tiny_world, state, ImpressionConfig(n_days=20))
    return impressions


def test_two_tower_beats_random_and_popularity_at_recall_100(tiny_world):
    anchor, start, train_users = _setup(tiny_world, TINY)
    retriever = TwoTowerRetriever(TINY).fit(tiny_world.events, tiny_world.users, tiny_world.items,
                                            train_users, start)
    assert retriever.summary_.epoch_losses[-1] < retriever.summary_.epoch_losses[0]
    index = ItemIndex(TINY.index).fit(retriever.item_vectors(), retriever.items_.advertiser_ids)
    history = retriever.history(tiny_world.events.filter(pl.col("ts") < start), tiny_world.users)
    requests = evaluation_requests(tiny_world.splits, anchor)  # users never trained on
    relevant = relevant_items(tiny_world.events, requests, anchor, TINY.evaluation.window_days)
    assert relevant["request_id"].n_unique() >= 30
    two_tower = MainGenerator(retriever, index, history, TINY.generators).generate(requests)
    popularity = PopularityGenerator(TINY.generators).fit(tiny_world.events, tiny_world.items, start)
    two_tower_recall = recall_at_k(two_tower, relevant, 100)
    popularity_recall = recall_at_k(popularity.generate(requests), relevant, 100)
    random_recall = 100 / tiny_world.items.height  # expected Recall@100 of 100 uniformly drawn items
    assert two_tower_recall > popularity_recall
    assert two_tower_recall > random_recall


def test_the_three_objectives_each_train_and_give_different_models(tiny_world, tiny_impressions):
    base = dataclasses.replace(TINY, training=dataclasses.replace(TINY.training, epochs=1, batch_size=128,
                                                                  uniform_negatives=128))
    _, start, train_users = _setup(tiny_world, base)
    fitted = {}
    for objective in ("impressions", "clicks", "conversions"):
        config = dataclasses.replace(base, training=dataclasses.replace(base.training, objective=objective))
        retriever = TwoTowerRetriever(config).fit(tiny_world.events, tiny_world.users, tiny_world.items,
                                                  train_users, start, tiny_impressions)
        assert np.isfinite(retriever.summary_.epoch_losses).all()
        fitted[objective] = retriever
    examples = {name: r.summary_.examples for name, r in fitted.items()}
    assert examples["impressions"] > examples["clicks"]  # clicks are a subset of impressions
    assert len(set(examples.values())) == 3
    assert fitted["impressions"].summary_.mean_weight == 1.0
    assert 0.1 < fitted["clicks"].summary_.mean_weight < 1.0  # logged dwell weights the clicks
    vectors = {name: r.item_vectors() for name, r in fitted.items()}
    for first, second in (("impressions", "clicks"), ("impressions", "conversions"), ("clicks", "conversions")):
        assert np.abs(vectors[first] - vectors[second]).max() > 1e-3


def test_fits_are_seeded_and_survive_save_and_load(toy_tables, tmp_path):
    config = small_config("clicks", epochs=1)
    train_users = toy_tables["splits"].filter(pl.col("split") == "train")["user_id"]
    before = toy_tables["events"]["ts"].max()

    def fit(seed: int) -> TwoTowerRetriever:
        seeded = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=seed))
        return TwoTowerRetriever(seeded).fit(toy_tables["events"], toy_tables["users"], toy_tables["items"],
                                             train_users, before)

    first, again, other = fit(0), fit(0), fit(1)
    np.testing.assert_array_equal(first.item_vectors(), again.item_vectors())
    assert not np.allclose(first.item_vectors(), other.item_vectors())
    loaded = TwoTowerRetriever.load(first.save(tmp_path / "model.pt"), toy_tables["items"])
    np.testing.assert_array_equal(loaded.item_vectors(), first.item_vectors())
    assert loaded.summary_ == first.summary_


def test_too_few_positives_is_a_clear_error(toy_tables):
    config = small_config("conversions")
    train_users = toy_tables["splits"].filter(pl.col("split") == "train")["user_id"].head(3)
    with pytest.raises(ValueError, match="fewer than training.batch_size"):
        TwoTowerRetriever(config).fit(toy_tables["events"], toy_tables["users"], toy_tables["items"],
                                      train_users, toy_tables["events"]["ts"].max())
