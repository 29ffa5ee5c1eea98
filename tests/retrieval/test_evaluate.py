"""Offline retrieval metrics: exact Recall@K, coverage and overlap on hand-made tables."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from retrieval.config import EvaluationConfig
from retrieval.evaluate import (advertiser_coverage, compare_objectives, evaluate, evaluation_anchor,
                                evaluation_requests, markdown_table, missed_by_reference, recall_at_k,
                                relevant_items, window_start)
from synthetic_data.schema import CANDIDATES, LABELS, conform

from tests.retrieval.conftest import START, events_table


def _candidates(rows: list[tuple], source: str = "two_tower") -> pl.DataFrame:
    """(request, item, advertiser, score) rows."""
    request, item, advertiser, score = zip(*rows)
    return conform(pl.DataFrame({"request_id": request, "item_id": item, "advertiser_id": advertiser,
                                 "source": [source] * len(rows), "score": score}), CANDIDATES, "candidates")


RELEVANT = pl.DataFrame({"request_id": [1, 1, 2, 3], "item_id": [10, 11, 20, 30],
                         "advertiser_id": [1, 2, 1, 3], "is_conversion": [True, False, False, True]})
MAIN = _candidates([(1, 10, 1, 0.9), (1, 12, 2, 0.8), (1, 11, 2, 0.1), (2, 21, 1, 0.5)])


def test_recall_at_k_uses_the_top_k_by_score_and_counts_unserved_requests_as_zero():
    # request 1: top-2 = {10, 12} -> 1/2; top-3 -> 2/2; request 2: 0/1; request 3 unserved: 0/1.
    assert recall_at_k(MAIN, RELEVANT, 2) == pytest.approx((0.5 + 0 + 0) / 3)
    assert recall_at_k(MAIN, RELEVANT, 3) == pytest.approx((1 + 0 + 0) / 3)
    # advertisers: request 1 wants {1, 2}; top-1 has advertiser 1; request 2 wants {1}: found.
    assert recall_at_k(MAIN, RELEVANT, 1, "advertiser_id") == pytest.approx((0.5 + 1 + 0) / 3)


def test_overlap_counts_what_only_the_second_generator_finds():
    llm = _candidates([(1, 11, 2, 0.7), (3, 30, 3, 0.6), (3, 31, 3, 0.5)], "llm_advertiser")
    overlap = missed_by_reference(llm, MAIN, RELEVANT)
    assert overlap == {"candidates_not_in_reference": pytest.approx(2 / 3), "relevant_found": 2,
                       "relevant_found_only_here": 1}
    assert advertiser_coverage(llm, advertisers=6) == pytest.approx(2 / 6)
    table = evaluate({"two_tower": MAIN, "llm_advertiser": llm}, RELEVANT, "two_tower", 6,
                     EvaluationConfig(k=(1, 3)))
    row = table.filter(pl.col("generator") == "llm_advertiser").row(0, named=True)
    assert row["recall@3_converted"] == pytest.approx(0.5)  # request 3's conversion, not request 1's
    assert row["relevant_found_only_here"] == 1


def test_window_and_relevant_items_follow_the_label_cut():
    labels = conform(pl.DataFrame({
        "user_id": [1, 2], "anchor_date": [date(2026, 1, 5), date(2026, 1, 9)], "advertiser_id": [1, 1],
        "ts": [START, START], "conversion_type": ["checkout"] * 2, "in_v0": [True] * 2, "in_v1": [True] * 2,
    }), LABELS, "labels")
    day = 24 * 60
    events = events_table([
        (1, 5 * day - 1, "engagement", 1000, 1, 1, "before the window"),
        (1, 5 * day, "engagement", 1001, 1, 1, "first minute of anchor+1"),
        (1, 5 * day + 3, "attributed_conversion", 1001, 1, 1, "conversion"),
        (1, 5 * day + 4, "offsite_url", 1002, 1, 1, "not an engagement"),
        (1, 12 * day - 1, "engagement", 1003, 1, 1, "last minute of the window"),
        (1, 12 * day, "engagement", 1004, 1, 1, "after the window"),
        (2, 13 * day, "engagement", 1005, 1, 1, "last event: 2026-01-14"),
    ])
    anchor = evaluation_anchor(events, EvaluationConfig(window_days=7), labels)
    assert anchor == date(2026, 1, 5)  # 2026-01-09 would leave less than a full window
    assert window_start(anchor) == START + timedelta(days=5)
    assert evaluation_anchor(events, EvaluationConfig(anchor_date="2026-01-02")) == date(2026, 1, 2)
    requests = pl.DataFrame({"request_id": [7], "user_id": [1]})
    relevant = relevant_items(events, requests, anchor, 7).sort("item_id")
    assert relevant["item_id"].to_list() == [1001, 1003]
    assert relevant["is_conversion"].to_list() == [True, False]


def test_evaluation_requests_are_the_eval_users_at_the_window_start(toy_tables):
    requests = evaluation_requests(toy_tables["splits"], date(2026, 1, 20))
    eval_users = toy_tables["splits"].filter(pl.col("split") == "eval")["user_id"].sort()
    assert requests["user_id"].to_list() == eval_users.to_list()
    assert requests["ts"].unique().to_list() == [START + timedelta(days=20)]


def test_objective_comparison_stacks_metrics_and_renders_markdown():
    clicks = pl.DataFrame({"generator": ["two_tower"], "recall@100_engaged": [0.5], "relevant_found": [None]})
    conversions = pl.DataFrame({"generator": ["two_tower"], "recall@100_engaged": [0.25]})
    table = compare_objectives({"clicks": clicks, "conversions": conversions},
                               ("recall@100_engaged", "relevant_found"))
    assert table.columns == ["objective", "generator", "recall@100_engaged", "relevant_found"]
    assert markdown_table(table).splitlines() == [
        "| objective | generator | recall@100_engaged | relevant_found |", "|---|---|---|---|",
        "| clicks | two_tower | 0.500 | - |", "| conversions | two_tower | 0.250 | - |"]
