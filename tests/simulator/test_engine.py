from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from blending.blend import BlendConfig
from blending.funnel import PARENT_STAGE
from simulator import auction
from simulator.config import SimulationConfig
from simulator.engine import Stack, simulate, top_advertisers
from synthetic_data import schema

BLEND = BlendConfig({"main": 30, "llm": 20})
CONFIG = SimulationConfig(days=2, seed=3)


class RecordingNightly:
    def __init__(self):
        self.calls = []

    def reset(self):
        self.calls = []

    def __call__(self, day, new_events):
        self.calls.append((day, new_events))
        return schema.conform(new_events.select("user_id").unique().with_columns(
            anchor_date=pl.lit(day), rank=1, advertiser_id=0, advertiser_name=pl.lit(""), source=pl.lit("test")),
            schema.PREDICTIONS)


def _recording_auction(auctions: list[pl.DataFrame]):
    """run_auction that also appends each call's rows (request, advertiser, eCPM, outcome) to `auctions`."""
    run_auction = auction.run_auction

    def recording(group, advertiser_id, ecpm_values, *args, **kwargs):
        outcome = run_auction(group, advertiser_id, ecpm_values, *args, **kwargs)
        auctions.append(pl.DataFrame({"request_id": group, "advertiser_id": advertiser_id, "ecpm": ecpm_values,
                                      "is_winner": outcome.is_winner, "price": outcome.price}))
        return outcome
    return recording


@pytest.fixture(scope="module")
def run(tiny_world, tiny_stack):
    nightly = RecordingNightly()
    stack = Stack(tiny_stack.generators, tiny_stack.scorer, tiny_stack.response, nightly)
    auctions = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(auction, "run_auction", _recording_auction(auctions))
        result = simulate(tiny_world, stack, BLEND, tiny_world.users["user_id"].to_numpy(), CONFIG)
    return result, nightly, pl.concat(auctions)


def test_funnel_adds_up_and_matches_the_logs(run):
    result, _, _ = run
    table = result.ledger.table()
    for source in ("main", "llm", "all"):
        counts = dict(table.filter(pl.col("source") == source).select("stage", "count").rows())
        assert all(counts[stage] <= counts[parent] for stage, parent in PARENT_STAGE.items())
    total = dict(table.filter(pl.col("source") == "all").select("stage", "count").rows())
    assert total["impressed"] == result.impressions.height == result.user_metrics["impressions"].sum()
    assert total["clicked"] == result.impressions["is_click"].sum() == result.user_metrics["clicks"].sum()
    attributed = result.conversions.filter(pl.col("is_attributed"))
    assert total["converted"] == attributed.height == result.user_metrics["conversions"].sum()
    assert result.summary["requests"] == result.user_metrics["requests"].sum() > 0


def test_auction_invariants(run):
    result, _, _ = run
    impressions = result.impressions
    slots = {"home_feed": 4, "related_pins": 3, "search": 3}
    per_request = impressions.group_by("request_id", "surface").len()
    assert all(n <= slots[s] for s, n in per_request.select(pl.col("surface").cast(pl.String), "len").rows())
    assert impressions.group_by("request_id", "item_id").len()["len"].max() == 1
    assert (impressions["price_paid"] >= CONFIG.auction.reserve_ecpm / 1000 - 1e-12).all()
    assert (impressions["price_paid"] <= impressions["ecpm"] / 1000 + 1e-12).all()
    assert result.user_metrics["spend"].sum() == pytest.approx(impressions["price_paid"].sum())
    assert impressions["propensity"].is_between(0, 1, closed="right").all()


def test_no_advertiser_prices_itself_or_holds_two_slots(run):
    result, _, auctions = run
    reserve = CONFIG.auction.reserve_ecpm
    # blending lets an advertiser bring two candidates, so the auction sees self-competition to drop
    assert auctions.group_by("request_id", "advertiser_id").len()["len"].max() == BLEND.max_per_advertiser
    winners = auctions.filter(pl.col("is_winner")).with_row_index("winner")
    assert winners.group_by("request_id", "advertiser_id").len()["len"].max() == 1
    assert result.impressions.group_by("request_id", "advertiser_id").len()["len"].max() == 1
    # above the reserve, a price is some other advertiser's eCPM in that auction, at most the winner's own
    rivals = auctions.select("request_id", pl.col("advertiser_id").alias("rival"), pl.col("ecpm").alias("rival_ecpm"))
    priced_by_rival = (winners.join(rivals, on="request_id")
                       .filter((pl.col("rival") != pl.col("advertiser_id"))
                               & ((pl.col("rival_ecpm") - 1000 * pl.col("price")).abs() < 1e-9))["winner"].unique())
    above_reserve = winners.filter(1000 * pl.col("price") > reserve + 1e-9)
    assert above_reserve.height > winners.height / 4  # most winners face a rival above the reserve
    assert above_reserve["winner"].is_in(priced_by_rival.implode()).all()
    assert (1000 * winners["price"] <= winners["ecpm"] + 1e-9).all()


def test_rank_depth_counts_advertisers_not_candidates():
    ranked = pl.DataFrame({"request_id": [1, 1, 1, 1, 1, 1, 2, 2, 2],
                           "advertiser_id": [7, 7, 8, 9, 8, 6, 9, 9, 7],
                           "item_id": [10, 11, 20, 30, 21, 40, 31, 32, 12]})
    # depth 2: request 1 keeps advertisers 7 and 8 (both of their items), not 9 and 6
    assert top_advertisers(ranked, 2)["item_id"].to_list() == [10, 11, 20, 21, 31, 32, 12]
    assert top_advertisers(ranked, 1)["item_id"].to_list() == [10, 11, 31, 32]


def test_budgets_hold_up_to_the_recorded_overspend(run):
    result, _, _ = run
    over = result.advertiser_days.select((pl.col("spend") - pl.col("budget")).clip(lower_bound=0).sum()).item()
    assert over == pytest.approx(result.summary["overspend"])
    assert result.advertiser_days["day"].n_unique() == CONFIG.days


def test_conversions_attributed_within_windows_only(run):
    result, _, _ = run
    conversions = result.conversions
    delay_days = conversions["delay_seconds"].to_numpy() / 86400
    window = np.where(conversions["is_click_through"].to_numpy(), 7.0, 1.0)
    assert (conversions["is_attributed"].to_numpy() == (delay_days <= window)).all()
    flagged = result.impressions.filter(pl.col("is_ctcvr"))
    assert flagged["is_click"].all()  # click-through conversions need a click


def test_nightly_job_sees_each_days_new_activity(run):
    result, nightly, _ = run
    assert [day for day, _ in nightly.calls] == sorted(result.advertiser_days["day"].unique().to_list())
    clicks_per_day = (result.impressions.filter(pl.col("is_click"))
                      .group_by(pl.col("ts").dt.date()).len().sort("ts")["len"].to_list())
    engagements = [events.filter(pl.col("kind") == "engagement").height for _, events in nightly.calls]
    assert engagements == clicks_per_day
    assert result.summary["users_reinferred"] == sum(events["user_id"].n_unique() for _, events in nightly.calls)


def test_same_seed_same_market_and_quota_changes_the_funnel(tiny_world, tiny_stack):
    users = tiny_world.users["user_id"].to_numpy()[:200]
    config = SimulationConfig(days=1, seed=9)
    first = simulate(tiny_world, tiny_stack, BLEND, users, config)
    again = simulate(tiny_world, tiny_stack, BLEND, users, config)
    assert first.user_metrics.equals(again.user_metrics)
    uncached = simulate(tiny_world, tiny_stack, BLEND, users, replace(config, coalesce_requests=False))
    assert uncached.user_metrics.equals(first.user_metrics)  # coalescing requests is exact here
    assert np.array_equal(uncached.ledger.counts_, first.ledger.counts_)
    no_llm = simulate(tiny_world, tiny_stack, BlendConfig({"main": 30, "llm": 0}), users, config)
    assert no_llm.user_metrics["requests"].to_list() == first.user_metrics["requests"].to_list()  # CRN traffic
    blended_llm = dict(no_llm.ledger.table().filter(pl.col("source") == "llm").select("stage", "count").rows())
    assert blended_llm["retrieved"] == 0 and blended_llm["blended"] == 0  # quota 0: the source is off, not asked
    assert dict(first.ledger.table().filter(pl.col("source") == "llm").select("stage", "count").rows())["retrieved"] > 0


class RecordingScorer:
    """Scores like the wrapped scorer and records the predictions the market hands it."""

    def __init__(self, scorer):
        self.scorer, self.updates, self.resets = scorer, [], 0

    def score(self, candidates):
        return self.scorer.score(candidates)

    def update_predictions(self, predictions):
        self.updates.append(predictions)

    def reset_predictions(self):
        self.resets += 1


def test_the_scorer_takes_nightly_predictions_and_resets_per_market(tiny_world, tiny_stack):
    scorer = RecordingScorer(tiny_stack.scorer)
    stack = Stack(tiny_stack.generators, scorer, tiny_stack.response, RecordingNightly())
    users = tiny_world.users["user_id"].to_numpy()[:150]
    result = simulate(tiny_world, stack, BLEND, users, CONFIG)
    assert scorer.resets == 1
    assert [update["anchor_date"].unique().to_list() for update in scorer.updates] == [
        [day] for day, _ in stack.nightly.calls]
    assert sum(update.height for update in scorer.updates) == result.summary["users_reinferred"] > 0
    simulate(tiny_world, stack, BLEND, users, CONFIG)
    assert scorer.resets == 2
