"""Tests of llm_predictor/baselines.py: hand-built histories and the tiny world."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import polars as pl
import pytest

from synthetic_data.schema import (ADVERTISERS, BRANDS, EVENTS, PREDICTIONS, PRESET_POOL, WORLD_TABLES, conform,
                                   validate)

from llm_predictor.baselines import (FEATURE_COLUMNS, BaselineConfig, PairRanker, feature_columns,
                                     most_recent_predictions, pair_features, popularity_predictions)
from llm_predictor.metrics import recall_at_k

ANCHOR = date(2026, 3, 31)


def _event(user, days_before, kind, advertiser=None, text=None, brand=None):
    ts = datetime(2026, 3, 31, 12, tzinfo=timezone.utc) - timedelta(days=days_before)
    return {"user_id": user, "ts": ts, "kind": kind, "text": text, "advertiser_id": advertiser, "brand_id": brand,
            "item_id": None, "category_id": 1, "conversion_type": None, "is_high_priority": False, "value": None}


@pytest.fixture(scope="module")
def world() -> SimpleNamespace:
    conversion = "matched_conversion"
    events = [
        # Popularity in the 28-day window (with user 1's): advertiser 3 (4) > 2 (3) > 1 (2) > 5 (0);
        # advertiser 4 is not eligible however popular.
        _event(9, 1, conversion, 3), _event(9, 2, conversion, 3), _event(9, 3, conversion, 3), _event(9, 4, conversion, 3),
        _event(9, 1, conversion, 2), _event(9, 2, conversion, 2), _event(9, 5, conversion, 1),
        _event(9, 1, conversion, 4), _event(9, 1, conversion, 4), _event(9, 1, conversion, 4), _event(9, 1, conversion, 4),
        _event(9, 40, conversion, 1), _event(9, 40, conversion, 1), _event(9, 40, conversion, 1),  # too old
        # User 1 converted with 1 (day 10), then 2 (day 4), and with ineligible 4; searched for brand "Zed".
        _event(1, 10, conversion, 1), _event(1, 4, conversion, 2), _event(1, 2, conversion, 4),
        _event(1, 1, "onsite_search", text="cheap zed boots"),
        _event(1, -2, conversion, 5),  # after the anchor: invisible
    ]
    names = ["Acme", "Bluebird", "Cedar", "Dormant", "Eagle"]
    return SimpleNamespace(
        events=conform(pl.DataFrame(events).with_row_index("event_id"), EVENTS, "events"),
        advertisers=conform(pl.DataFrame({
            "advertiser_id": [1, 2, 3, 4, 5], "name": names, "domain": [f"{n.lower()}.com" for n in names],
            "is_active": [True, True, True, False, True], "has_active_spend": [True, True, True, False, True],
            "campaign_type": ["OCPM"] * 5, "bid": [1.0] * 5, "target_roas": [None] * 5, "daily_budget": [1.0] * 5,
            "category_id": [1] * 5, "product_lines": [["x"]] * 5}), ADVERTISERS, "advertisers"),
        brands=conform(pl.DataFrame({"brand_id": [1, 2, 3], "advertiser_id": [1, 5, 3],
                                     "name": ["Acme", "Zed", "Cedar"], "category_id": [1, 1, 1]}), BRANDS, "brands"),
        preset_pool=conform(pl.DataFrame({"day": [ANCHOR] * 2, "rank": [1, 2], "advertiser_id": [5, 2],
                                          "revenue": [2.0, 1.0]}), PRESET_POOL, "preset_pool"),
    )


def _requests(users) -> pl.DataFrame:
    return pl.DataFrame({"user_id": users, "anchor_date": [ANCHOR] * len(users)})


def test_popularity_counts_recent_eligible_conversions(world):
    predictions = popularity_predictions(world, _requests([1, 2]))
    validate(predictions, PREDICTIONS, "predictions")
    per_user = predictions.filter(pl.col("user_id") == 2).sort("rank")
    assert per_user["advertiser_id"].to_list() == [3, 2, 1, 5]
    assert predictions["source"].unique().to_list() == ["popularity"]
    assert popularity_predictions(world, _requests([1]), BaselineConfig(n_predictions=2))["rank"].to_list() == [1, 2]


def test_most_recent_lists_past_advertisers_then_popular(world):
    predictions = most_recent_predictions(world, _requests([1, 2]))
    assert predictions.filter(pl.col("user_id") == 1).sort("rank")["advertiser_id"].to_list() == [2, 1, 3, 5]
    assert predictions.filter(pl.col("user_id") == 2).sort("rank")["advertiser_id"].to_list() == [3, 2, 1, 5]


def test_pair_features_see_search_mentions_and_no_future(world):
    features = pair_features(world, _requests([1]), BaselineConfig())
    assert set(FEATURE_COLUMNS) <= set(features.columns)
    assert features.filter(pl.col("advertiser_id") == 4).is_empty()  # not eligible
    zed = features.filter(pl.col("advertiser_id") == 5).to_dicts()[0]  # brand "Zed" of advertiser 5
    assert zed["count_onsite_search"] == 1 and zed["count_matched_conversion"] == 0  # day -2 is the future
    acme = features.filter(pl.col("advertiser_id") == 1).to_dicts()[0]
    assert acme["count_matched_conversion"] == 1 and acme["days_since_matched_conversion"] == pytest.approx(10.5)
    assert features.filter(pl.col("advertiser_id") == 2)["preset_rank"].to_list() == [2]


def test_prompt_inputs_leave_out_what_the_prompt_does_not_show(world):
    """Engagement, bids, campaign types and URLs older than the prompt's 14 days feed only the `all` ranker."""
    events = [_event(1, 1, "engagement", 3), _event(1, 20, "offsite_url", 3, "https://cedar.com/old"),
              _event(1, 3, "offsite_url", 3, "https://cedar.com/new")]
    extended = SimpleNamespace(**{**vars(world), "events": conform(pl.concat([
        world.events.drop("event_id"), pl.DataFrame(events)], how="diagonal_relaxed").with_row_index("event_id"),
        EVENTS, "events")})
    prompt = BaselineConfig(inputs="prompt")
    cedar = {inputs: pair_features(extended, _requests([1]), config).filter(pl.col("advertiser_id") == 3).row(
        0, named=True) for inputs, config in (("all", BaselineConfig()), ("prompt", prompt))}
    assert (cedar["all"]["count_engagement"], cedar["all"]["count_offsite_url"]) == (1, 2)
    assert (cedar["prompt"]["count_engagement"], cedar["prompt"]["count_offsite_url"]) == (0, 1)
    assert not {"count_engagement", "days_since_engagement", "bid", "is_roas"} & set(feature_columns(prompt))
    assert set(feature_columns(prompt)) < set(FEATURE_COLUMNS) == set(feature_columns(BaselineConfig()))
    with pytest.raises(ValueError, match="baselines.inputs"):
        BaselineConfig(inputs="everything")


def test_requests_need_keys(world):
    with pytest.raises(ValueError, match="anchor_date"):
        popularity_predictions(world, pl.DataFrame({"user_id": [1]}))
    with pytest.raises(RuntimeError, match="before fit"):
        PairRanker().predict(world, _requests([1]))


def test_pair_ranker_learns_on_tiny_world_and_beats_popularity_on_eval_users(tiny_world):
    observable = SimpleNamespace(**{t: getattr(tiny_world, t) for t in WORLD_TABLES if not t.endswith("_truth")})
    labels = tiny_world.labels.join(tiny_world.splits.select("user_id", "split"), on="user_id")
    train = labels.filter(pl.col("split") == "train")
    held_out = labels.filter(pl.col("split") == "eval")
    config = replace(BaselineConfig(), n_estimators=50, seed=1)
    ranker = PairRanker(config).fit(observable, train)
    assert 0 < ranker.candidate_recall_ <= 1
    predictions = ranker.predict(observable, held_out)
    validate(predictions, PREDICTIONS, "predictions")
    assert predictions.group_by("user_id", "anchor_date").len()["len"].max() <= config.n_predictions
    ranker_recall = recall_at_k(predictions, held_out, (1, 5))
    popular_recall = recall_at_k(popularity_predictions(observable, held_out, config), held_out, (1, 5))
    assert ranker_recall[5] > popular_recall[5]
    again = PairRanker(config).fit(observable, train).predict(observable, held_out)
    assert again.equals(predictions)  # seeded: reproducible


def _pair_ranker_predictions(observable, requests, config):
    labels = observable.labels.join(observable.splits.filter(pl.col("split") == "train"), on="user_id", how="semi")
    return PairRanker(config).fit(observable, labels).predict(observable, requests)


def _prompt_pair_ranker_predictions(observable, requests, config):
    return _pair_ranker_predictions(observable, requests, replace(config, inputs="prompt"))


@pytest.mark.parametrize("baseline", [popularity_predictions, most_recent_predictions, _pair_ranker_predictions,
                                      _prompt_pair_ranker_predictions],
                         ids=["popularity", "most_recent", "lightgbm_pairs", "lightgbm_pairs_prompt"])
def test_baseline_contract(tiny_world, baseline):
    """Every baseline: one list per request, ranks 1..n contiguous, distinct eligible advertisers."""
    observable = SimpleNamespace(**{t: getattr(tiny_world, t) for t in WORLD_TABLES if not t.endswith("_truth")})
    requests = tiny_world.labels.filter(pl.col("anchor_date") == pl.col("anchor_date").max()).select(
        "user_id", "anchor_date")
    config = BaselineConfig(n_predictions=7, n_estimators=10)
    predictions = validate(baseline(observable, requests, config), PREDICTIONS, "predictions")
    per_request = predictions.group_by("user_id", "anchor_date").agg(
        pl.len(), pl.col("rank").sort(), pl.col("advertiser_id").n_unique().alias("distinct"))
    assert per_request.height == requests.height
    assert (per_request["len"] == 7).all() and (per_request["distinct"] == 7).all()
    assert per_request["rank"].to_list() == [list(range(1, 8))] * requests.height
    eligible = tiny_world.advertisers.filter(pl.col("is_active") & pl.col("has_active_spend"))["advertiser_id"]
    assert predictions["advertiser_id"].is_in(eligible.implode()).all()
    assert predictions["advertiser_name"].null_count() == 0
