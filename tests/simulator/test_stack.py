from datetime import date
from types import SimpleNamespace

import polars as pl

from blending.blend import BlendConfig
from simulator.config import ArmConfig
from simulator.stack import PredictionFeed, largest_quotas
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
