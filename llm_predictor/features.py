"""User feature compilation for the advertiser-prediction prompts (paper 3.2.3, 4.1, Table 4).

From the events up to the anchor date it builds, for each user, the prompt fields of appendix A:
profile, active advertisers with past conversions, conversions, searches, URLs, top categories and
top brands — recency-ordered, per-group windowed and capped, then trimmed to a character budget by
dropping the stalest items first. Only observable tables are read (never `*_truth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import polars as pl

from synthetic_data.config_io import require

# Feature groups in the paper's prompt order (appendix A.1 "#Input").
GROUPS = (
    "active_advertisers_with_past_conversions",
    "profile",
    "attributed_conversions",
    "matched_conversions",
    "onsite_searches",
    "offsite_searches",
    "offsite_urls",
    "top_categories",
    "top_brands",
)
LIST_GROUPS = tuple(g for g in GROUPS if g != "profile")
PROFILE_FIELDS = ("gender", "age", "userstate")
# Every prompt field column of the compiled table, in prompt order.
FIELDS = ("active_advertisers_with_past_conversions", *PROFILE_FIELDS, *LIST_GROUPS[1:])

# Sequence groups whose items are the event texts of one event kind.
SEQUENCE_KINDS = {
    "attributed_conversions": "attributed_conversion",
    "matched_conversions": "matched_conversion",
    "onsite_searches": "onsite_search",
    "offsite_searches": "offsite_search",
    "offsite_urls": "offsite_url",
}
# Paper 3.2.3: top categories come from conversions and searches; top brands from offsite items/URLs.
CATEGORY_KINDS = ("attributed_conversion", "matched_conversion", "onsite_search", "offsite_search")
BRAND_KINDS = ("attributed_conversion", "matched_conversion", "offsite_search", "offsite_url")
CONVERSION_KINDS = ("attributed_conversion", "matched_conversion")
ITEM_SEPARATOR = "|"  # the separator of the paper's XML output format, used for every list


@dataclass(frozen=True)
class FeatureConfig:
    """Per-group windows (days before and including the anchor) and caps, budget, group order."""

    active_advertisers_with_past_conversions_window_days: int = 90
    attributed_conversions_window_days: int = 90
    matched_conversions_window_days: int = 90
    onsite_searches_window_days: int = 90  # paper 4.1: onsite searches from the last three months
    offsite_searches_window_days: int = 90
    offsite_urls_window_days: int = 14  # paper 4.1: URLs from the last two weeks
    top_categories_window_days: int = 90
    top_brands_window_days: int = 90
    active_advertisers_with_past_conversions_max_items: int = 10
    attributed_conversions_max_items: int = 10
    matched_conversions_max_items: int = 10
    onsite_searches_max_items: int = 10
    offsite_searches_max_items: int = 10
    offsite_urls_max_items: int = 10
    top_categories_max_items: int = 5
    top_brands_max_items: int = 5
    # Characters of list items (each plus one separator) kept per user; the stalest go first.
    budget_characters: int | None = 1500
    groups: tuple[str, ...] = GROUPS  # enabled groups in prompt order (ablations remove/reorder)

    def __post_init__(self):
        for group in LIST_GROUPS:
            require(self.window_days(group) >= 1, f"features.{group}_window_days", "must be >= 1")
            require(self.max_items(group) >= 1, f"features.{group}_max_items", "must be >= 1")
        require(self.budget_characters is None or self.budget_characters >= 1,
                "features.budget_characters", "must be >= 1, or null for no budget")
        unknown = sorted(set(self.groups) - set(GROUPS))
        require(not unknown, "features.groups", f"unknown group(s) {unknown}; valid: {list(GROUPS)}")
        require(len(set(self.groups)) == len(self.groups), "features.groups", "lists a group twice")

    def window_days(self, group: str) -> int:
        return getattr(self, f"{group}_window_days")

    def max_items(self, group: str) -> int:
        return getattr(self, f"{group}_max_items")


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _window_filter(group: str, anchor_date: date, config: FeatureConfig) -> pl.Expr:
    """Events on the `window_days` days ending with the anchor date (inclusive)."""
    start = _day_start(anchor_date - timedelta(days=config.window_days(group) - 1))
    return pl.col("ts") >= start


def _sequence_items(events: pl.DataFrame, anchor_date: date, config: FeatureConfig,
                    advertiser_names: pl.DataFrame) -> list[pl.DataFrame]:
    """Recent distinct texts of each sequence group (conversions fall back to the advertiser name)."""
    frames = []
    for group, kind in SEQUENCE_KINDS.items():
        if group not in config.groups:
            continue
        frame = (
            events.filter(pl.col("kind") == kind, _window_filter(group, anchor_date, config))
            .join(advertiser_names, on="advertiser_id", how="left", maintain_order="left")
            .with_columns(pl.coalesce(pl.col("text").str.strip_chars(), pl.col("advertiser_name")).alias("item"))
            .filter(pl.col("item").is_not_null() & (pl.col("item") != ""))
        )
        frames.append(_take_recent(frame, group, config.max_items(group)))
    return frames


def _take_recent(frame: pl.DataFrame, group: str, max_items: int) -> pl.DataFrame:
    """The `max_items` most recent distinct items per user, from rows sorted most recent first."""
    first_seen = frame.filter(pl.col("item").is_first_distinct().over("user_id"))
    return first_seen.filter(pl.int_range(pl.len()).over("user_id") < max_items).select(
        "user_id", pl.lit(group).alias("group"), "item", "ts")


def _ranked_counts(events: pl.DataFrame, key: str, names: pl.DataFrame, group: str,
                   kinds: tuple[str, ...], anchor_date: date, config: FeatureConfig) -> pl.DataFrame:
    """Top `key` values by event count per user (ties: most recent first), as named items."""
    counted = (
        events.filter(pl.col("kind").is_in(kinds), pl.col(key).is_not_null(),
                      _window_filter(group, anchor_date, config))
        .group_by("user_id", key).agg(pl.len().alias("count"), pl.col("ts").max())
        .join(names, on=key, how="inner")
        .sort(["user_id", "count", "ts", "item"], descending=[False, True, True, False])
        .group_by("user_id", maintain_order=True).head(config.max_items(group))
    )
    return counted.with_columns(pl.lit(group).alias("group")).select("user_id", "group", "item", "ts")


def _active_advertisers(events: pl.DataFrame, advertisers: pl.DataFrame, anchor_date: date,
                        config: FeatureConfig) -> pl.DataFrame:
    """Active advertisers the user converted with, most recent conversion first (paper 3.2.3)."""
    group = "active_advertisers_with_past_conversions"
    active = advertisers.filter(pl.col("is_active")).select("advertiser_id", pl.col("name").alias("item"))
    frame = (
        events.filter(pl.col("kind").is_in(CONVERSION_KINDS), pl.col("advertiser_id").is_not_null(),
                      _window_filter(group, anchor_date, config))
        .join(active, on="advertiser_id", how="inner", maintain_order="left")
    )
    return _take_recent(frame, group, config.max_items(group))


def _apply_budget(items: pl.DataFrame, budget: int | None) -> pl.DataFrame:
    """Keep each user's most recent items whose characters (plus separators) fit the budget.

    Rows keep their order; only the users over budget are sorted by recency (the costly part).
    """
    if budget is None:
        return items
    items = items.with_row_index("row").with_columns((pl.col("item").str.len_chars() + 1).alias("size"))
    over = items.group_by("user_id").agg(pl.col("size").sum()).filter(pl.col("size") > budget).select("user_id")
    trimmed = (
        items.join(over, on="user_id", how="semi")
        .sort(["user_id", "ts", "group", "item"], descending=[False, True, False, False])
        .filter(pl.col("size").cum_sum().over("user_id") <= budget)
    )
    return pl.concat([items.join(over, on="user_id", how="anti"), trimmed]).sort("row").drop("row", "size")


def _observable_events(world_tables, anchor_date: date, user_ids: pl.Series,
                       config: FeatureConfig) -> pl.DataFrame:
    """The users' non-engagement events in the longest window ending with the anchor date, each
    user's most recent first (the order every sequence group keeps)."""
    longest = max(config.window_days(g) for g in LIST_GROUPS)
    start = _day_start(anchor_date - timedelta(days=longest - 1))
    end = _day_start(anchor_date + timedelta(days=1))
    return world_tables.events.filter(
        pl.col("user_id").is_in(user_ids.implode()), pl.col("ts") >= start, pl.col("ts") < end,
        pl.col("kind") != "engagement",
    ).select("user_id", "ts", "kind", "text", "advertiser_id", "brand_id", "category_id").sort(
        ["user_id", "ts"], descending=[False, True], maintain_order=True)


def compile_features(world_tables, anchor_date: date, user_ids, config: FeatureConfig | None = None
                     ) -> pl.DataFrame:
    """One row per requested user (in the given order): user_id, anchor_date and a String column
    per prompt field (`FIELDS`); disabled groups are empty strings. Reads events up to the anchor.
    """
    config = config or FeatureConfig()
    user_ids = pl.Series("user_id", user_ids, dtype=pl.Int64)
    require(user_ids.n_unique() == len(user_ids), "user_ids", "contains duplicates; pass each user once")
    events = _observable_events(world_tables, anchor_date, user_ids, config)
    advertiser_names = world_tables.advertisers.select("advertiser_id", pl.col("name").alias("advertiser_name"))

    frames = _sequence_items(events, anchor_date, config, advertiser_names)
    if "active_advertisers_with_past_conversions" in config.groups:
        frames.append(_active_advertisers(events, world_tables.advertisers, anchor_date, config))
    if "top_categories" in config.groups:
        names = world_tables.categories.select("category_id", pl.col("name").alias("item"))
        frames.append(_ranked_counts(events, "category_id", names, "top_categories", CATEGORY_KINDS,
                                     anchor_date, config))
    if "top_brands" in config.groups:
        names = world_tables.brands.select("brand_id", pl.col("name").alias("item"))
        frames.append(_ranked_counts(events, "brand_id", names, "top_brands", BRAND_KINDS,
                                     anchor_date, config))

    empty_items = pl.DataFrame(schema={"user_id": pl.Int64, "group": pl.String, "item": pl.String,
                                       "ts": events.schema["ts"]})
    items = _apply_budget(pl.concat([empty_items, *frames], how="vertical_relaxed"), config.budget_characters)
    joined = (  # rows are in each group's own order (recency, or count for the top-K groups)
        items.group_by("user_id", "group").agg(pl.col("item"))
        .with_columns(pl.col("item").list.join(ITEM_SEPARATOR))
        .pivot(on="group", index="user_id", values="item", on_columns=list(LIST_GROUPS))
    )
    profile = world_tables.users.select(
        "user_id", pl.col("gender"), pl.col("age"), pl.col("user_state").alias("userstate"))
    if "profile" not in config.groups:
        profile = profile.select("user_id")
    out = (
        user_ids.to_frame()
        .join(profile, on="user_id", how="left", maintain_order="left")
        .join(joined, on="user_id", how="left", maintain_order="left")
    )
    missing = [c for c in FIELDS if c not in out.columns]
    return out.with_columns(
        pl.lit(anchor_date, dtype=pl.Date).alias("anchor_date"),
        *[pl.lit("", dtype=pl.String).alias(c) for c in missing],
    ).select("user_id", "anchor_date", *[pl.col(c).cast(pl.String).fill_null("") for c in FIELDS])


def preset_pool_names(world_tables, anchor_date: date, size: int) -> list[str]:
    """Names of the `size` top-revenue advertisers of the latest preset-pool day on or before the anchor."""
    require(size >= 1, "preset_pool_size", "must be >= 1")
    pool = world_tables.preset_pool.filter(pl.col("day") <= anchor_date)
    if pool.is_empty():
        raise ValueError(
            f"preset_pool has no day on or before the anchor date {anchor_date}; "
            f"pick an anchor date inside the world's time span"
        )
    latest = pool.filter(pl.col("day") == pool["day"].max()).sort("rank").head(size)
    named = latest.join(world_tables.advertisers.select("advertiser_id", "name"), on="advertiser_id",
                        how="left", maintain_order="left")
    if named["name"].null_count():
        raise ValueError("preset_pool names advertiser ids missing from advertisers; regenerate the world")
    return named["name"].to_list()
