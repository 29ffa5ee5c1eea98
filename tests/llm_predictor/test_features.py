"""Tests of llm_predictor/features.py: windows, recency order, caps, budget, groups, no truth reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import polars as pl
import pytest

from synthetic_data.config_io import ConfigError
from synthetic_data.schema import (ADVERTISERS, BRANDS, CATEGORIES, EVENTS, PRESET_POOL, USERS, WORLD_TABLES,
                                   conform)

from llm_predictor.features import FIELDS, GROUPS, FeatureConfig, compile_features, preset_pool_names

ANCHOR = date(2026, 3, 31)


def _ts(days_before: int, hour: int = 12) -> datetime:
    return datetime(ANCHOR.year, ANCHOR.month, ANCHOR.day, hour, tzinfo=timezone.utc) - timedelta(days=days_before)


def _event(user, days_before, kind, text=None, advertiser=None, brand=None, category=None, hour=12):
    is_conversion = kind.endswith("conversion")
    return {"user_id": user, "ts": _ts(days_before, hour), "kind": kind, "text": text, "advertiser_id": advertiser,
            "brand_id": brand, "item_id": None, "category_id": category,
            "conversion_type": "checkout" if is_conversion else None, "is_high_priority": is_conversion,
            "value": 10.0 if is_conversion else None}


@pytest.fixture(scope="module")
def world() -> SimpleNamespace:
    """Observable tables only: any read of a *_truth table would raise AttributeError."""
    events = [
        _event(1, 0, "onsite_search", "trail shoes", category=10, hour=1),
        _event(1, 0, "onsite_search", "rain jacket", category=11, hour=2),
        _event(1, 5, "onsite_search", "trail shoes", category=10),  # repeat: kept once, at its latest time
        _event(1, 89, "onsite_search", "old but inside", category=10),
        _event(1, 90, "onsite_search", "outside the 90-day window", category=10),
        _event(1, -1, "onsite_search", "after the anchor", category=10),
        _event(1, 13, "offsite_url", "https://acme.com/tent", advertiser=1, brand=1, category=10),
        _event(1, 14, "offsite_url", "https://acme.com/too-old", advertiser=1, brand=1, category=10),
        _event(1, 3, "matched_conversion", "Acme tent", advertiser=1, brand=1, category=10),
        _event(1, 1, "attributed_conversion", None, advertiser=2, brand=2, category=11),
        _event(1, 2, "matched_conversion", "Dormant thing", advertiser=3, brand=3, category=11),
        _event(1, 2, "engagement", "ignored pin", advertiser=2, brand=2, category=11),
        _event(2, 10, "offsite_search", "bluebird shirt", brand=2, category=11),
    ]
    return SimpleNamespace(
        events=conform(pl.DataFrame(events).with_row_index("event_id"), EVENTS, "events"),
        users=conform(pl.DataFrame({"user_id": [1, 2, 3], "age": ["25-34", "35-44", "18-24"],
                                    "gender": ["female", "male", "unspecified"], "user_state": ["core", "new", "casual"],
                                    "signup_date": [date(2025, 1, 1)] * 3}), USERS, "users"),
        advertisers=conform(pl.DataFrame({
            "advertiser_id": [1, 2, 3], "name": ["Acme Outdoor", "Bluebird Co.", "Dormant Inc"],
            "domain": ["acme.com", "bluebird.shop", "dormant.com"], "is_active": [True, True, False],
            "has_active_spend": [True, True, False], "campaign_type": ["OCPM", "ROAS", "OCPM"],
            "bid": [1.0] * 3, "target_roas": [None, 3.0, None], "daily_budget": [10.0] * 3,
            "category_id": [10, 11, 11], "product_lines": [["tents"], ["shirts"], ["x"]]}), ADVERTISERS, "advertisers"),
        brands=conform(pl.DataFrame({"brand_id": [1, 2, 3], "advertiser_id": [1, 2, 3],
                                     "name": ["Acme", "Bluebird", "Dormant"], "category_id": [10, 11, 11]}),
                       BRANDS, "brands"),
        categories=conform(pl.DataFrame({"category_id": [10, 11], "parent_id": [1, 1], "level": [2, 2],
                                         "name": ["outdoor", "apparel"]}), CATEGORIES, "categories"),
        preset_pool=conform(pl.DataFrame({
            "day": [ANCHOR - timedelta(days=1)] * 2 + [ANCHOR] * 2 + [ANCHOR + timedelta(days=1)],
            "rank": [1, 2, 2, 1, 1], "advertiser_id": [3, 1, 1, 2, 3], "revenue": [9.0, 8.0, 5.0, 7.0, 9.0]}),
            PRESET_POOL, "preset_pool"),
    )


def _row(frame: pl.DataFrame, user: int) -> dict:
    return frame.filter(pl.col("user_id") == user).to_dicts()[0]


def test_fields_windows_and_recency_order(world):
    row = _row(compile_features(world, ANCHOR, [1, 2, 3]), 1)
    assert row["anchor_date"] == ANCHOR
    assert row["onsite_searches"] == "rain jacket|trail shoes|old but inside"
    assert row["offsite_urls"] == "https://acme.com/tent"  # 14-day window: day 13 in, day 14 out
    assert row["matched_conversions"] == "Dormant thing|Acme tent"
    assert row["attributed_conversions"] == "Bluebird Co."  # no item text: the advertiser's name
    # Active advertisers only (Dormant Inc is inactive), most recent conversion first.
    assert row["active_advertisers_with_past_conversions"] == "Bluebird Co.|Acme Outdoor"
    assert (row["gender"], row["age"], row["userstate"]) == ("female", "25-34", "core")
    # Categories from conversions and searches (not URLs, not engagement): outdoor 4, apparel 3.
    assert row["top_categories"] == "outdoor|apparel"
    # Brands from conversions, offsite searches and URLs: Acme 2 (URL + conversion), then by recency.
    assert row["top_brands"] == "Acme|Bluebird|Dormant"


def test_one_row_per_user_in_request_order_with_empty_fields(world):
    frame = compile_features(world, ANCHOR, [3, 1, 2])
    assert frame["user_id"].to_list() == [3, 1, 2]
    assert frame.columns == ["user_id", "anchor_date", *FIELDS]
    assert all(frame.schema[c] == pl.String for c in FIELDS)
    empty = _row(frame, 3)
    assert all(empty[c] == "" for c in FIELDS if c not in ("gender", "age", "userstate"))
    assert _row(frame, 2)["offsite_searches"] == "bluebird shirt"
    assert _row(frame, 2)["top_brands"] == "Bluebird"


def test_max_items_keeps_the_most_recent(world):
    config = replace(FeatureConfig(), onsite_searches_max_items=2, top_categories_max_items=1)
    row = _row(compile_features(world, ANCHOR, [1], config), 1)
    assert row["onsite_searches"] == "rain jacket|trail shoes"
    assert row["top_categories"] == "outdoor"


def test_budget_drops_the_stalest_items_first(world):
    full = _row(compile_features(world, ANCHOR, [1], replace(FeatureConfig(), budget_characters=None)), 1)
    # Most recent first: rain jacket and apparel (its category, last seen then) at 02:00 on the
    # anchor day, trail shoes and outdoor at 01:00. 12 + 8 + 12 = 32 characters hold the first three.
    tight = _row(compile_features(world, ANCHOR, [1], replace(FeatureConfig(), budget_characters=32)), 1)
    assert tight["onsite_searches"] == "rain jacket|trail shoes"
    assert tight["top_categories"] == "apparel"
    assert tight["offsite_urls"] == "" and tight["matched_conversions"] == ""
    assert full["offsite_urls"] == "https://acme.com/tent"
    kept = sum(len(tight[c]) + 1 for c in FIELDS if tight[c] and c not in ("gender", "age", "userstate"))
    assert kept <= 32


def test_disabled_groups_are_empty_and_do_not_use_the_budget(world):
    groups = tuple(g for g in GROUPS if g not in ("onsite_searches", "profile"))
    config = replace(FeatureConfig(), groups=groups, budget_characters=14)
    row = _row(compile_features(world, ANCHOR, [1], config), 1)
    assert row["onsite_searches"] == "" and row["gender"] == ""
    assert row["top_categories"] == "apparel"  # 8 characters; outdoor would make 16


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="features.offsite_urls_window_days"):
        FeatureConfig(offsite_urls_window_days=0)
    with pytest.raises(ConfigError, match="features.groups"):
        FeatureConfig(groups=("profile", "shoe_size"))
    with pytest.raises(ConfigError, match="features.groups"):
        FeatureConfig(groups=("profile", "profile"))


def test_preset_pool_is_the_latest_day_on_or_before_the_anchor(world):
    assert preset_pool_names(world, ANCHOR, 5) == ["Bluebird Co.", "Acme Outdoor"]
    assert preset_pool_names(world, ANCHOR, 1) == ["Bluebird Co."]
    with pytest.raises(ValueError, match="no day on or before"):
        preset_pool_names(world, ANCHOR - timedelta(days=30), 5)


def test_tiny_world_compiles_without_truth_tables(tiny_world):
    observable = SimpleNamespace(**{t: getattr(tiny_world, t) for t in WORLD_TABLES if not t.endswith("_truth")})
    anchor = tiny_world.labels["anchor_date"].max()
    users = tiny_world.users["user_id"]
    frame = compile_features(observable, anchor, users)
    assert frame.height == users.len() and frame["user_id"].to_list() == users.to_list()
    has_history = frame.filter(pl.col("active_advertisers_with_past_conversions") != "")
    assert has_history.height > 0
    assert len(preset_pool_names(observable, anchor, 10)) == 10
