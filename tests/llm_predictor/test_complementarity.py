"""Complementarity to the most-recent list: hits it misses, union recall, recall per mechanism, collapse."""

from datetime import date

import polars as pl
import pytest

from llm_predictor.complementarity import complementarity, first_ranked_diversity, label_mechanisms
from synthetic_data import schema


def _lists(rows):
    """PREDICTIONS rows from (user_id, rank, advertiser_id)."""
    return schema.conform(pl.DataFrame(
        [{"user_id": u, "anchor_date": date(2024, 3, 1), "rank": r, "advertiser_id": a, "advertiser_name": f"a{a}",
          "source": "test"} for u, r, a in rows]), schema.PREDICTIONS, "lists")


def test_hits_the_reference_misses_and_the_union_are_counted_per_label():
    labels = pl.DataFrame({"user_id": [1, 2, 3, 4], "anchor_date": [date(2024, 3, 1)] * 4,
                           "advertiser_id": [10, 20, 30, 40],
                           "mechanism": pl.Series(["repeat", "semantic", "semantic", None], dtype=schema.Mechanism)},
                          schema_overrides={"advertiser_id": pl.Int32})
    recent = _lists([(1, 1, 10), (2, 1, 99), (3, 1, 99), (4, 1, 99)])  # hits user 1
    llm = _lists([(1, 1, 77), (2, 1, 20), (3, 2, 30), (4, 1, 77)])  # hits users 2 and 3
    table = {row["method"]: row for row in complementarity({"most_recent": recent, "llm": llm}, labels,
                                                            "most_recent", k=20).iter_rows(named=True)}
    assert table["llm"]["recall_at_20"] == 0.5 and table["llm"]["hits_reference_misses"] == 2
    assert table["llm"]["recall_at_20_minus_reference"] == 0.25  # paired on the same labels, Tango's interval
    assert table["llm"]["recall_at_20_minus_reference_low"] < 0.25 < table["llm"]["recall_at_20_minus_reference_high"]
    assert table["llm"]["union_recall_at_20"] == 0.75 and table["most_recent"]["hits_reference_misses"] == 0
    assert table["llm"]["recall_at_20_semantic"] == 1.0 and table["llm"]["recall_at_20_repeat"] == 0.0
    assert table["most_recent"]["recall_at_20_repeat"] == 1.0 and table["llm"]["recall_at_20_noise"] is None
    assert table["llm"]["labels_semantic"] == 2
    # firsts 77, 20, 30 (user 3's best rank is 2), 77: three distinct, 77 for 2 of 4
    assert table["llm"]["distinct_first"] == 3 and table["llm"]["top_first_share"] == 0.5
    assert not table["llm"]["is_collapsed"] and table["most_recent"]["is_collapsed"]  # 99 first for 3 of 4
    with pytest.raises(KeyError):
        complementarity({"llm": llm}, labels, "most_recent")


def test_a_list_whose_first_advertiser_is_the_same_for_most_users_is_flagged():
    assert first_ranked_diversity(_lists([(u, 1, 5) for u in range(6)] + [(6, 1, 7)]))["is_collapsed"]
    diverse = first_ranked_diversity(_lists([(u, 1, u) for u in range(6)] + [(u, 2, 5) for u in range(6)]))
    assert diverse == {"distinct_first": 6, "top_first_share": 1 / 6, "is_collapsed": False}


def test_every_label_of_a_generated_world_finds_its_conversion_mechanism_and_most_recent_wins_on_repeats(tiny_world):
    from llm_predictor.baselines import most_recent_predictions

    labels = label_mechanisms(tiny_world.events, tiny_world.conversions_truth, tiny_world.labels)
    assert labels.height == tiny_world.labels.height and labels["mechanism"].null_count() == 0
    recent = most_recent_predictions(tiny_world, labels.select("user_id", "anchor_date"))
    row = complementarity({"most_recent": recent}, labels, "most_recent", k=1).row(0, named=True)
    # a repeat conversion returns to an advertiser the user converted with: the recent list's first is it far more
    # often (tiny world: 0.73 against 0.23; at K = 20 the tiny world's lists hold nearly every advertiser)
    assert row["recall_at_1_repeat"] > row["recall_at_1_semantic"] + 0.2
    with pytest.raises(ValueError, match="ts"):
        label_mechanisms(tiny_world.events, tiny_world.conversions_truth, tiny_world.labels.drop("ts"))
