from datetime import date, datetime

import polars as pl

from blending.blend import BlendConfig
from simulator.baselines import AdvertiserFilterGenerator, history_predictions
from simulator.config import SimulationConfig
from simulator.engine import Stack, simulate
from simulator.nightly import NightlyRefresh, history_predictor
from synthetic_data import schema


def _events(rows):
    columns = ["event_id", "user_id", "ts", "kind", "advertiser_id", "item_id", "value"]
    frame = pl.DataFrame(rows, schema=columns, orient="row").with_columns(
        pl.col("ts").dt.replace_time_zone("UTC"), text=pl.lit(None, pl.String), brand_id=pl.lit(None, pl.Int32),
        category_id=pl.lit(None, pl.Int32), conversion_type=pl.lit("checkout"), is_high_priority=pl.lit(True))
    return schema.conform(frame, schema.EVENTS)


def test_refresh_reinfers_only_active_users_with_all_events_so_far():
    day0 = datetime(2026, 3, 1)
    history = _events([(1, 10, day0, "attributed_conversion", 5, 1, 1.0),
                       (2, 11, day0, "attributed_conversion", 6, 2, 1.0)])
    refresh = NightlyRefresh(history_predictor(k=3), history)
    new = _events([(1, 10, datetime(2026, 3, 2), "attributed_conversion", 7, 3, 2.0),
                   (2, 10, datetime(2026, 3, 2, 1), "attributed_conversion", 7, 3, 2.0)])
    fresh = refresh(date(2026, 3, 2), new)
    assert set(fresh["user_id"]) == {10}  # user 11 had no new activity
    assert fresh.sort("rank")["advertiser_id"].to_list() == [7, 5]  # two new conversions outrank one old
    assert (fresh["anchor_date"] == date(2026, 3, 2)).all()
    assert refresh.events_["event_id"].n_unique() == 4
    assert refresh(date(2026, 3, 3), schema.empty(schema.EVENTS)).height == 0


def test_market_feeds_nightly_predictions_back_to_the_generator(tiny_world, tiny_stack):
    generator = AdvertiserFilterGenerator(tiny_world, history_predictions(tiny_world.events))
    before = generator.table_.clone()
    stack = Stack((tiny_stack.generators[0], generator), tiny_stack.scorer, tiny_stack.response,
                  NightlyRefresh(history_predictor(), tiny_world.events))
    result = simulate(tiny_world, stack, BlendConfig({"main": 30, "llm": 10}), tiny_world.users["user_id"].to_numpy(),
                      SimulationConfig(days=2, seed=1))
    assert result.summary["users_reinferred"] > 0
    converted_users = result.conversions.filter(pl.col("is_attributed"))["user_id"].unique()
    changed = generator.table_.join(before, on=["user_id", "advertiser_id", "item_id"], how="anti")["user_id"].unique()
    assert changed.len() > 0 and set(changed.to_list()) <= set(converted_users.to_list())


def test_each_market_starts_from_the_initial_predictions(tiny_world, tiny_stack):
    generator = AdvertiserFilterGenerator(tiny_world, history_predictions(tiny_world.events))
    nightly = NightlyRefresh(history_predictor(), tiny_world.events)
    stack = Stack((tiny_stack.generators[0], generator), tiny_stack.scorer, tiny_stack.response, nightly)
    users = tiny_world.users["user_id"].to_numpy()[:150]
    config = SimulationConfig(days=2, seed=2)
    first = simulate(tiny_world, stack, BlendConfig({"main": 30, "llm": 10}), users, config)
    second = simulate(tiny_world, stack, BlendConfig({"main": 30, "llm": 10}), users, config)
    assert first.user_metrics.equals(second.user_metrics)  # no state leaks from one market to the next


def test_the_history_nightly_job_pickles_for_a_ray_worker():
    """A trained stack holding the history job ships to `--engine ray` workers by pickling."""
    import pickle

    history = _events([(1, 10, datetime(2026, 3, 1), "attributed_conversion", 5, 1, 1.0)])
    refresh = pickle.loads(pickle.dumps(NightlyRefresh(history_predictor(k=3), history)))
    new = _events([(1, 10, datetime(2026, 3, 2), "attributed_conversion", 7, 3, 2.0),
                   (2, 10, datetime(2026, 3, 2, 1), "attributed_conversion", 7, 3, 2.0)])
    assert refresh(date(2026, 3, 2), new).sort("rank")["advertiser_id"].to_list() == [7, 5]
