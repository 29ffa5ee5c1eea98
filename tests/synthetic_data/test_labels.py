"""Label rules of paper 3.2 / 4.1 on hand-built cases (synthetic_data/labels.py)."""

from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from synthetic_data import schema
from synthetic_data.config import LabelConfig
from synthetic_data.labels import build_labels, build_splits

ANCHOR = date(2026, 3, 1)


def _ts(day_offset: int, hour: int = 12) -> datetime:
    return datetime.combine(ANCHOR + timedelta(days=day_offset), datetime.min.time(),
                            tzinfo=timezone.utc) + timedelta(hours=hour)


def _events(rows):
    """rows: (user, day offset from anchor, hour, kind, advertiser, type, high priority)."""
    frame = pl.DataFrame(
        [(i, u, _ts(d, h), k, "", a, None, None, 1, t, hp, 1.0) for i, (u, d, h, k, a, t, hp) in enumerate(rows)],
        schema=list(schema.EVENTS), orient="row")
    return schema.conform(frame, schema.EVENTS, "events")


ADVERTISERS = schema.conform(pl.DataFrame({
    "advertiser_id": [1, 2, 3, 4],
    "name": ["A", "B", "C", "D"], "domain": ["a.com", "b.com", "c.com", "d.com"],
    "is_active": [True, True, False, True],
    "has_active_spend": [True, True, False, False],
    "campaign_type": ["OCPM"] * 4, "bid": [1.0] * 4, "target_roas": [None] * 4, "daily_budget": [1.0] * 4,
    "category_id": [1] * 4, "product_lines": [["x"]] * 4,
}), schema.ADVERTISERS, "advertisers")

CONFIG = LabelConfig(anchor_days=(10,), window_days=7, v0_min_history=2, v1_lookback_days=30)
M, A = "matched_conversion", "attributed_conversion"


def _labels(rows, config=CONFIG):
    return build_labels(_events(rows), ADVERTISERS, [ANCHOR], config)


def test_window_bounds_are_anchor_plus_1_to_plus_7():
    labels = _labels([
        (1, 0, 23, M, 1, "checkout", True),   # on the anchor day: history, not label
        (1, 8, 1, M, 2, "checkout", True),    # x+8: outside
        (2, 1, 0, M, 2, "checkout", True),    # x+1 at midnight: inside
        (3, 7, 23, M, 1, "checkout", True),   # x+7 late: inside
        (4, 8, 0, M, 1, "checkout", True),    # x+8 at midnight: outside
    ])
    assert dict(zip(labels["user_id"], labels["advertiser_id"])) == {2: 2, 3: 1}


def test_label_is_the_first_eligible_conversion():
    labels = _labels([
        (1, 5, 9, M, 2, "checkout", True),
        (1, 2, 9, A, 1, "add_to_cart", True),
        (1, 3, 9, M, 2, "checkout", True),
    ])
    assert labels.select("user_id", "advertiser_id", "conversion_type").rows() == [(1, 1, "add_to_cart")]
    assert labels["ts"][0] == _ts(2, 9)


def test_only_active_spending_advertisers_and_high_priority_types():
    labels = _labels([
        (1, 1, 9, M, 3, "checkout", True),    # inactive advertiser: skipped
        (1, 2, 9, M, 4, "checkout", True),    # active but no spend: skipped
        (1, 3, 9, M, 2, "signup", False),     # low priority: skipped
        (1, 4, 9, M, 1, "checkout", True),    # the label
        (2, 2, 9, M, 4, "checkout", True),    # user 2 has no eligible conversion: no row
        (2, 3, 9, M, 1, "page_visit", False),
    ])
    assert labels.select("user_id", "advertiser_id").rows() == [(1, 1)]


def test_v0_needs_long_conversion_history_and_v1_recent_active_conversions():
    rows = [(u, 1, 9, M, 1, "checkout", True) for u in (1, 2, 3, 4)]
    rows += [(1, -3, 9, M, 1, "checkout", True), (1, -2, 9, A, 2, "checkout", True)]  # 2 in history
    rows += [(2, -3, 9, M, 3, "checkout", True)]  # 1 in history, inactive advertiser -> not V1
    rows += [(3, -40, 9, M, 1, "checkout", True), (3, -45, 9, M, 1, "checkout", True)]  # old: V0, not V1
    labels = _labels(rows).sort("user_id")
    assert labels["in_v0"].to_list() == [True, False, True, False]
    assert labels["in_v1"].to_list() == [True, False, False, False]
    each = _labels(rows, LabelConfig(anchor_days=(10,), v0_min_history=1, v0_rule="each",
                                     v1_lookback_days=30)).sort("user_id")
    assert each["in_v0"].to_list() == [True, False, False, False]  # only user 1 has both kinds


def test_labels_follow_the_contract():
    labels = _labels([(1, 1, 9, M, 1, "checkout", True)])
    schema.validate(labels, schema.LABELS, "labels")
    assert labels["anchor_date"].to_list() == [ANCHOR]


def test_split_is_user_level_with_the_configured_share():
    users = np.arange(1000)
    splits = build_splits(users, _events([(1, -1, 9, M, 1, "checkout", True)]), ADVERTISERS, ANCHOR,
                          CONFIG, np.random.default_rng(0))
    assert splits["user_id"].n_unique() == splits.height == 1000
    assert (splits["split"] == "eval").sum() == 100
    assert splits.filter(pl.col("user_id") == 1)["in_v1"].item() is True


@pytest.mark.parametrize("bad", [dict(anchor_days=()), dict(anchor_days=(5, 3)), dict(eval_share=1.0),
                                 dict(window_days=0)])
def test_bad_label_config_is_rejected(bad):
    with pytest.raises(ValueError, match="labels"):
        LabelConfig(**bad)
