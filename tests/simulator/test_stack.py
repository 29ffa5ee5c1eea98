from datetime import date
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from blending.blend import BlendConfig
from ranking.features import FeatureTable
from simulator.config import ArmConfig
from simulator.stack import PredictionFeed, RankerScorer, ScoreTable, largest_quotas
from synthetic_data import schema


def _predictions(rows):
    frame = pl.DataFrame(rows, schema=["user_id", "anchor_date", "rank", "advertiser_id"], orient="row")
    return schema.conform(frame.with_columns(advertiser_name=pl.lit(""), source=pl.lit("t")), schema.PREDICTIONS)


def test_largest_quotas_sizes_generators_for_every_arm():
    arms = (ArmConfig("a", BlendConfig({"two_tower": 60, "llm": 0})), ArmConfig("b", BlendConfig({"two_tower": 40, "llm": 200})))
    assert largest_quotas(arms) == {"two_tower": 60, "llm": 200}


def test_prediction_feed_appends_fresh_rows_within_the_rank_limit_and_resets():
    initial = _predictions([(1, date(2026, 3, 1), 1, 10)])
    generator = SimpleNamespace(source="llm_advertiser", predictions=initial,
                                config=SimpleNamespace(max_predicted_advertisers=2))
    feed = PredictionFeed(generator)
    feed.update_predictions(_predictions([(1, date(2026, 3, 2), 1, 11), (1, date(2026, 3, 2), 3, 12)]))
    assert generator.predictions["advertiser_id"].to_list() == [10, 11]  # rank 3 is beyond the limit
    feed.reset_predictions()
    assert generator.predictions.equals(initial)


class CountingRanker:
    """Scores a row by its (user, item, surface, day) and counts the rows it featurised and scored."""

    def __init__(self):
        self.rows_scored, self.rows_featurised, self.updates = 0, 0, 0

    def featurise(self, candidates):  # the features: the key columns themselves
        self.rows_featurised += candidates.height
        keys = candidates.select("user_id", "item_id", pl.col("surface").to_physical(), pl.col("ts").dt.day())
        return FeatureTable(sparse=np.zeros((candidates.height, 0), np.int64), dense=keys.to_numpy().astype(np.float64),
                            sparse_names=(), dense_names=tuple(keys.columns), labels={})

    def table_probabilities(self, table):
        self.rows_scored += len(table)
        value = table.dense @ np.array([7.0, 3.0, 1.0, 1.0])  # whole numbers: exact whatever the batch
        return {"ctcvr": value, "vtcvr": value * 2}

    def update_predictions(self, predictions):
        self.updates += 1

    def reset_predictions(self):
        pass


def _candidates(rows):
    """(request, user, day of March, surface, item) rows as scorer input."""
    frame = pl.DataFrame(rows, schema=["request_id", "user_id", "day", "surface", "item_id"], orient="row")
    return frame.with_columns(
        pl.datetime(2026, 3, pl.col("day"), 12, time_zone="UTC").dt.cast_time_unit("us").alias("ts"),
        pl.col("surface").cast(schema.Surface), pl.col("item_id").cast(pl.Int32)).drop("day")


def test_ranker_scorer_keeps_a_days_scores_and_forgets_them_with_the_day_or_new_predictions():
    ranker = CountingRanker()
    scorer = RankerScorer(ranker)
    first = _candidates([(1, 10, 2, "home_feed", 5), (1, 10, 2, "home_feed", 6), (2, 10, 2, "search", 5),
                         (3, 11, 2, "home_feed", 5)])
    again = _candidates([(4, 10, 2, "home_feed", 6), (4, 10, 2, "home_feed", 5), (5, 10, 2, "search", 7)])
    for batch, newly_scored in ((first, 4), (again, 1)):
        before = ranker.rows_scored
        scores = scorer.score(batch)
        expected = ranker.table_probabilities(ranker.featurise(batch))
        ranker.rows_scored -= batch.height
        assert scores["ctcvr"].to_list() == expected["ctcvr"].tolist()
        assert scores["vtcvr"].to_list() == expected["vtcvr"].tolist()
        assert ranker.rows_scored - before == newly_scored  # only (user, day, surface, item) keys not seen today
    next_day = _candidates([(6, 10, 3, "home_feed", 5)])
    assert scorer.score(next_day)["ctcvr"].to_list() != scores["ctcvr"].to_list()[1:2]
    assert scorer.scored_["day"].unique().to_list() == [date(2026, 3, 3)]  # the past day is dropped
    kept = scorer.scored_.row(0, named=True)  # the packed (user, surface, item) key unpacks to the row scored
    assert (kept["user_id"], kept["surface"], kept["item_id"], kept["ctcvr"]) == (10, "home_feed", 5, 10 * 7 + 5 * 3 + 3)
    scorer.update_predictions(_predictions([(10, date(2026, 3, 3), 1, 1)]))
    assert ranker.updates == 1 and scorer.scored_.height == 0


def test_features_prepared_ahead_give_the_same_scores_without_featurising_on_the_request_path():
    """`prepare` featurises a batch's keys not seen today (on the market's lookahead thread); `score` with
    its result scores the same as alone and featurises nothing, unless a key it needs was seen before
    without being scored (an advertiser out of budget then): it featurises those itself."""
    alone, ahead = RankerScorer(CountingRanker()), RankerScorer(CountingRanker())
    blended = _candidates([(1, 10, 2, "home_feed", 5), (1, 10, 2, "home_feed", 6), (2, 10, 2, "search", 5)])
    prepared = ahead.prepare(blended)
    assert ahead.ranker.rows_featurised == 3 and ahead.prepare(blended).key.size == 0  # seen: not again
    scorable = blended[[0, 2]]  # row 1's advertiser is out of budget: not scored
    featurised = ahead.ranker.rows_featurised
    assert ahead.score(scorable, prepared).equals(alone.score(scorable))
    assert ahead.ranker.rows_featurised == featurised and ahead.ranker.rows_scored == 2
    later = _candidates([(3, 10, 2, "home_feed", 6), (3, 10, 2, "home_feed", 7)])  # item 6 was seen, unscored
    assert ahead.score(later, ahead.prepare(later)).equals(alone.score(later))
    assert ahead.ranker.rows_featurised == featurised + 1 + 2  # prepare: item 7; score: both, itself


def test_a_listed_advertiser_source_wins_auctions_through_the_trained_ranker(tiny_world, tiny_response,
                                                                             sparse_list_ranker):
    """Fault 0 of issue #13: with each user's most recent advertisers as the lists, the generator of their
    items won 0 auctions because the ranker scored every listed advertiser ~0. It must win a fair share."""
    import copy

    from ranking.recency_predictions import recent_advertiser_predictions
    from simulator.baselines import AdvertiserFilterGenerator, PopularityGenerator
    from simulator.config import SimulationConfig
    from simulator.engine import Stack, simulate

    last_day = tiny_world.events["ts"].max().date()
    serving = recent_advertiser_predictions(tiny_world.events, tiny_world.advertisers, [last_day], 10)
    ranker = copy.copy(sparse_list_ranker)
    ranker.serve_from(serving)
    stack = Stack(generators=(PopularityGenerator(tiny_world), AdvertiserFilterGenerator(tiny_world, serving)),
                  scorer=RankerScorer(ranker), response=tiny_response)
    users = serving["user_id"].unique().sort().to_numpy()[:300]
    result = simulate(tiny_world, stack, BlendConfig({"main": 30, "llm": 10}, max_candidates=30), users,
                      SimulationConfig(days=1, seed=3))
    funnel = result.ledger.table().filter(pl.col("stage") == "won_auction")
    wins = dict(funnel.select("source", "count").rows())
    assert wins["llm"] > 0.1 * wins["all"]


class Unprepared:
    """A scorer as given, without `prepare`: every batch featurised on the request path."""

    def __init__(self, scorer):
        self.scorer = scorer

    def score(self, candidates):
        return self.scorer.score(candidates)

    def update_predictions(self, predictions):
        self.scorer.update_predictions(predictions)

    def reset_predictions(self):
        self.scorer.reset_predictions()


def test_the_lookahead_changes_no_outcome(tiny_world, tiny_response, sparse_list_ranker, monkeypatch):
    """A day's later batches are retrieved, blended and featurised on another thread while earlier ones are
    auctioned; across a midnight with nightly predictions the market must come out exactly as when each
    batch runs in turn with its features made on the request path."""
    import copy

    from ranking.recency_predictions import recent_advertiser_predictions
    from simulator import engine
    from simulator.baselines import AdvertiserFilterGenerator, PopularityGenerator
    from simulator.config import SimulationConfig
    from simulator.engine import Stack, simulate
    from simulator.stack import nightly_job

    last_day = tiny_world.events["ts"].max().date()
    serving = recent_advertiser_predictions(tiny_world.events, tiny_world.advertisers, [last_day], 10)
    users = serving["user_id"].unique().sort().to_numpy()[:300]
    results = []
    for lookahead, wrap in ((engine.LOOKAHEAD_BATCHES, lambda scorer: scorer), (0, Unprepared)):
        monkeypatch.setattr(engine, "LOOKAHEAD_BATCHES", lookahead)
        ranker = copy.deepcopy(sparse_list_ranker)
        ranker.serve_from(serving)
        stack = Stack(generators=(PopularityGenerator(tiny_world), AdvertiserFilterGenerator(tiny_world, serving)),
                      scorer=wrap(RankerScorer(ranker)), response=tiny_response,
                      nightly=nightly_job("history", tiny_world))
        results.append(simulate(tiny_world, stack, BlendConfig({"main": 30, "llm": 10}, max_candidates=30), users,
                                SimulationConfig(days=2, seed=3, batch_seconds=3600)))
    ahead, in_turn = results
    assert ahead.summary["users_reinferred"] > 0 and ahead.impressions["ts"].dt.date().n_unique() == 2
    assert ahead.impressions.equals(in_turn.impressions) and ahead.conversions.equals(in_turn.conversions)
    assert np.array_equal(ahead.ledger.counts_, in_turn.ledger.counts_)


def test_score_table_holds_what_a_dict_holds_through_collisions_and_growth():
    """The ranker's day cache is an open-addressing hash table filled a batch at a time: after batches of keys
    that collide in a tiny table and make it grow, it answers exactly as a dict of the same pairs."""
    rng = np.random.default_rng(0)
    table, reference = ScoreTable(capacity=8), {}
    for _ in range(20):
        keys = rng.integers(0, 2**62, size=rng.integers(1, 300))
        keys[: keys.size // 3] = rng.integers(0, 50, size=keys.size // 3)  # small keys collide in the low slots
        keys = np.unique(keys)
        is_held, _ = table.get(keys)
        new = keys[~is_held]
        values = rng.random((new.size, 2))
        table.add(new, values)
        reference.update({int(key): tuple(row) for key, row in zip(new, values)})
        asked = np.concatenate([keys, rng.integers(0, 2**62, size=50)])
        is_held, held = table.get(asked)
        assert is_held.tolist() == [int(key) in reference for key in asked]
        assert held.tolist() == [list(reference[int(key)]) for key in asked if int(key) in reference]
    keys, values = table.items()
    assert table.size == len(reference) == keys.size and table.keys.size > 8
    assert {int(key): tuple(row) for key, row in zip(keys, values)} == reference
    with pytest.raises(ValueError, match="power of two"):
        ScoreTable(capacity=12)
