from datetime import date
from types import SimpleNamespace

import polars as pl

from blending.blend import BlendConfig
from simulator.config import ArmConfig
from simulator.stack import PredictionFeed, RankerScorer, largest_quotas
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
    """Scores a row by its (user, item, surface, day) and counts the rows it was asked to score."""

    def __init__(self):
        self.rows_scored, self.updates = 0, 0

    def score(self, candidates, executor=None):
        self.rows_scored += candidates.height
        value = (pl.col("user_id") * 7 + pl.col("item_id") * 3 + pl.col("surface").to_physical()
                 + pl.col("ts").dt.day()).cast(pl.Float32)  # whole numbers: exact whatever the batch
        return candidates.select("request_id", "item_id", value.alias("p_ctcvr"), (value * 2).alias("p_vtcvr"))

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
        expected = ranker.score(batch)
        ranker.rows_scored -= batch.height
        assert scores["ctcvr"].to_list() == expected["p_ctcvr"].cast(pl.Float64).to_list()
        assert scores["vtcvr"].to_list() == expected["p_vtcvr"].cast(pl.Float64).to_list()
        assert ranker.rows_scored - before == newly_scored  # only (user, day, surface, item) keys not seen today
    next_day = _candidates([(6, 10, 3, "home_feed", 5)])
    assert scorer.score(next_day)["ctcvr"].to_list() != scores["ctcvr"].to_list()[1:2]
    assert scorer.scored_["day"].unique().to_list() == [date(2026, 3, 3)]  # the past day is dropped
    scorer.update_predictions(_predictions([(10, date(2026, 3, 3), 1, 1)]))
    assert ranker.updates == 1 and scorer.scored_.height == 0


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
