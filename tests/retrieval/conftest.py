"""Hand-built tables for retrieval tests: a small catalog and users with category tastes.

Independent of the world generator so that edge cases are controlled: every user engages only
with items of two favourite categories, searches with those categories' names, and sometimes
converts on an engaged item.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from retrieval.config import (EvaluationConfig, FeatureConfig, GeneratorConfig, IndexConfig,
                              ModelConfig, RetrievalConfig, TrainingConfig)
from synthetic_data.schema import EVENTS, ITEMS, SPLITS, USERS, conform

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
CATEGORY_NAMES = ("shoes", "lamps", "tents", "paint", "coffee", "bikes", "rugs", "watches")


def make_tables(seed: int = 0, users: int = 240, items: int = 400, advertisers: int = 40,
                days: int = 40) -> dict[str, pl.DataFrame]:
    """Items, users, events and splits of a toy marketplace."""
    rng = np.random.default_rng(seed)
    categories = len(CATEGORY_NAMES)
    item_advertiser = np.arange(items) % advertisers
    item_category = item_advertiser % categories  # an advertiser sells one category
    content = rng.normal(size=(categories, 8))[item_category] + 0.3 * rng.normal(size=(items, 8))
    item_table = conform(pl.DataFrame({
        "item_id": np.arange(items) + 1000, "advertiser_id": item_advertiser + 1,
        "brand_id": item_advertiser + 1, "category_id": item_category + 1,
        "product_line_id": item_category + 1, "title": [f"item {i}" for i in range(items)],
        "price": rng.uniform(5, 100, items),
        "embedding": pl.Series(content.astype(np.float32)).cast(pl.Array(pl.Float32, 8)),
    }), ITEMS, "items")
    favourites = np.stack([rng.choice(categories, 2, replace=False) for _ in range(users)])
    per_user = 30
    user_of_event = np.repeat(np.arange(users), per_user)
    chosen_category = favourites[user_of_event, rng.integers(0, 2, len(user_of_event))]
    items_of_category = [np.flatnonzero(item_category == c) for c in range(categories)]
    # Within a category, item popularity is Zipf-like.
    item_pick = np.array([rng.choice(items_of_category[c], p=_zipf(len(items_of_category[c])))
                          for c in chosen_category])
    seconds = rng.uniform(0, days * 86400, len(user_of_event))
    kind = np.where(rng.random(len(user_of_event)) < 0.15, "onsite_search", "engagement")
    kind = np.where((kind == "engagement") & (rng.random(len(kind)) < 0.1), "attributed_conversion", kind)
    is_search = kind == "onsite_search"
    events = conform(pl.DataFrame({
        "event_id": np.arange(len(kind)),
        "user_id": user_of_event.astype(np.int64) + 1,
        "ts": [START + timedelta(seconds=float(s)) for s in seconds],
        "kind": kind,
        "text": np.where(is_search, [f"best {CATEGORY_NAMES[c]} sale" for c in chosen_category],
                         [f"item {i}" for i in item_pick]),
        "advertiser_id": pl.Series(np.where(is_search, -1, item_advertiser[item_pick] + 1)).replace(-1, None),
        "brand_id": pl.Series(np.where(is_search, -1, item_advertiser[item_pick] + 1)).replace(-1, None),
        "item_id": pl.Series(np.where(is_search, -1, item_pick + 1000)).replace(-1, None),
        "category_id": chosen_category + 1,
        "conversion_type": pl.Series(np.where(kind == "attributed_conversion", "checkout", "")).replace("", None),
        "is_high_priority": kind == "attributed_conversion",
        "value": pl.Series(np.where(kind == "attributed_conversion", 50.0, np.nan)).fill_nan(None),
    }).sort("ts"), EVENTS, "events")
    user_table = conform(pl.DataFrame({
        "user_id": np.arange(users, dtype=np.int64) + 1,
        "age": rng.choice(["18-24", "25-34", "35-44"], users),
        "gender": rng.choice(["f", "m"], users),
        "user_state": rng.choice(["core", "casual"], users),
        "signup_date": [START.date()] * users,
    }), USERS, "users")
    is_eval = np.arange(users) % 5 == 0
    splits = conform(pl.DataFrame({
        "user_id": np.arange(users, dtype=np.int64) + 1, "split": np.where(is_eval, "eval", "train"),
        "in_v0": is_eval, "in_v1": is_eval,
    }), SPLITS, "splits")
    return {"items": item_table, "users": user_table, "events": events, "splits": splits}


def events_table(rows: list[tuple]) -> pl.DataFrame:
    """(user, minutes after START, kind, item, advertiser, category, text) rows as an EVENTS table."""
    user, minutes, kind, item, advertiser, category, text = zip(*rows)
    return conform(pl.DataFrame({
        "event_id": np.arange(len(rows)), "user_id": user,
        "ts": [START + timedelta(minutes=m) for m in minutes], "kind": kind, "text": text,
        "advertiser_id": advertiser, "brand_id": advertiser, "item_id": item, "category_id": category,
        "conversion_type": [None] * len(rows), "is_high_priority": [False] * len(rows),
        "value": [None] * len(rows),
    }, schema_overrides={"conversion_type": pl.String, "value": pl.Float64}), EVENTS, "events")


def _zipf(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1)
    return weights / weights.sum()


def small_config(objective: str = "clicks", **training) -> RetrievalConfig:
    """A config sized for the toy tables (fits in seconds)."""
    return RetrievalConfig(
        features=FeatureConfig(max_search_tokens=100),
        model=ModelConfig(embedding_dim=16, hidden_dim=32, output_dim=16),
        training=TrainingConfig(objective=objective, epochs=training.pop("epochs", 4), batch_size=64,
                                uniform_negatives=64, **training),
        index=IndexConfig(exact_max_items=10_000),
        generators=GeneratorConfig(main_top_n=50, l0_quota=10, popularity_top_n=50),
        evaluation=EvaluationConfig(window_days=7, k=(10, 50)),
    )


@pytest.fixture(scope="session")
def toy_tables() -> dict[str, pl.DataFrame]:
    return make_tables()
