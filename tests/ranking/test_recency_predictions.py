"""The non-LLM predictions baseline: most recent distinct advertisers up to each anchor, labelled as such."""

from __future__ import annotations

from datetime import date

from ranking.recency_predictions import SOURCE, recent_advertiser_predictions
from synthetic_data.schema import PREDICTIONS, validate

from tests.ranking.test_features import EVENTS_TABLE
from tests.ranking.test_llm_features import ADVERTISERS


def test_lists_hold_recent_distinct_advertisers_up_to_the_anchor_day():
    advertisers = ADVERTISERS.with_columns(name=ADVERTISERS["advertiser_id"].cast(str))
    predictions = recent_advertiser_predictions(EVENTS_TABLE, advertisers, [date(2026, 1, 4), date(2026, 1, 12)], 5)
    validate(predictions, PREDICTIONS, "predictions")
    assert (predictions["source"] == SOURCE).all()
    # User 7 touched advertiser 1 on days 2, 5, 10; user 8's events name no advertiser.
    assert predictions.select("user_id", "anchor_date", "rank", "advertiser_id").rows() == [
        (7, date(2026, 1, 4), 1, 1), (7, date(2026, 1, 12), 1, 1)]
    assert predictions["advertiser_name"].to_list() == ["1", "1"]
