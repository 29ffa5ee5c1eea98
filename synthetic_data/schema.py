"""Data contracts: the declared polars schema of every table that crosses a package boundary.

Each stage reads and writes these tables (as DataFrames or Parquet files named `<table>.parquet`);
`validate` checks a frame against its contract and names the offending column and the fix.
Tables ending in `_truth` hold the world's hidden state (latent interests, mechanisms, true
rates): only `synthetic_data/` and `simulator/` may read them, never a model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")

EVENT_KINDS = (
    "onsite_search",
    "offsite_search",
    "offsite_url",
    "attributed_conversion",
    "matched_conversion",
    "engagement",
)
CONVERSION_KINDS = ("attributed_conversion", "matched_conversion")
EventKind = pl.Enum(list(EVENT_KINDS))
CampaignType = pl.Enum(["OCPM", "ROAS"])
Split = pl.Enum(["train", "eval"])
CONVERSION_MECHANISMS = ("repeat", "semantic", "popular", "noise")
Mechanism = pl.Enum(list(CONVERSION_MECHANISMS))


class SchemaError(ValueError):
    """A table does not match its declared contract."""


@dataclass(frozen=True)
class EmbeddingColumn:
    """A fixed-width Float32 array column whose width is set by the world config."""

    def matches(self, dtype: pl.DataType) -> bool:
        return isinstance(dtype, pl.Array) and dtype.inner == pl.Float32

    def __str__(self) -> str:
        return "Array(Float32, embedding_dim)"


EMBEDDING = EmbeddingColumn()

CATEGORIES = {
    "category_id": pl.Int32,
    "parent_id": pl.Int32,  # null for top-level categories
    "level": pl.Int8,  # 1 = top level, 2 = leaf
    "name": pl.String,
}

PRODUCT_LINES = {
    "product_line_id": pl.Int32,
    "category_id": pl.Int32,  # a leaf category
    "name": pl.String,
}

ADVERTISERS = {
    "advertiser_id": pl.Int32,
    "name": pl.String,
    "domain": pl.String,
    "is_active": pl.Boolean,  # runs ads on the platform
    "has_active_spend": pl.Boolean,  # spent in the last days (label eligibility, paper 3.2.1)
    "campaign_type": CampaignType,
    "bid": pl.Float64,  # OCPM: bid per conversion; ROAS: max bid per conversion
    "target_roas": pl.Float64,  # ROAS campaigns only (null for OCPM)
    "daily_budget": pl.Float64,
    "category_id": pl.Int32,  # primary leaf category
    "product_lines": pl.List(pl.String),
}

ADVERTISERS_TRUTH = {
    "advertiser_id": pl.Int32,
    "popularity": pl.Float64,  # relative conversion attractiveness (sums to 1)
    "style_weight": pl.Float64,  # how strongly its items carry the advertiser's visual style
}

BRANDS = {
    "brand_id": pl.Int32,
    "advertiser_id": pl.Int32,  # brand groups: one advertiser owns several brands
    "name": pl.String,
    "category_id": pl.Int32,
}

ITEMS = {
    "item_id": pl.Int32,
    "advertiser_id": pl.Int32,
    "brand_id": pl.Int32,
    "category_id": pl.Int32,
    "product_line_id": pl.Int32,
    "title": pl.String,
    "price": pl.Float64,
    "embedding": EMBEDDING,
}

USERS = {
    "user_id": pl.Int64,
    "age": pl.String,  # age bucket, e.g. "25-34"
    "gender": pl.String,
    "user_state": pl.String,  # e.g. "core", "casual", "resurrected", "new"
    "signup_date": pl.Date,
}

USERS_TRUTH = {
    "user_id": pl.Int64,
    "commercial_intent": pl.Float64,  # multiplies conversion and offsite-activity rates
    "brand_loyalty": pl.Float64,  # probability a browse goes to a favourite advertiser
    "activity": pl.Float64,  # multiplies all activity rates
    "favorite_advertisers": pl.List(pl.Int32),
}

INTERESTS_TRUTH = {
    "user_id": pl.Int64,
    "epoch": pl.Int16,  # drift epoch: days [epoch*drift_period_days, (epoch+1)*drift_period_days)
    "category_id": pl.Int32,  # leaf category
    "weight": pl.Float32,
}

EVENTS = {
    "event_id": pl.Int64,
    "user_id": pl.Int64,
    "ts": UTC_TS,
    "kind": EventKind,
    "text": pl.String,  # query, URL, or item title
    "advertiser_id": pl.Int32,  # null where not known (e.g. onsite searches)
    "brand_id": pl.Int32,
    "item_id": pl.Int32,
    "category_id": pl.Int32,
    "conversion_type": pl.String,  # null for non-conversions
    "is_high_priority": pl.Boolean,  # false for non-conversions
    "value": pl.Float64,  # order value of conversions; null otherwise
}

CONVERSIONS_TRUTH = {
    "event_id": pl.Int64,
    "mechanism": Mechanism,  # which mixture component chose the advertiser
}

PRESET_POOL = {
    "day": pl.Date,
    "rank": pl.Int32,  # 1 = highest revenue that day
    "advertiser_id": pl.Int32,
    "revenue": pl.Float64,
}

ADVERTISER_SPEND = {
    "day": pl.Date,
    "advertiser_id": pl.Int32,
    "spend": pl.Float64,
}

LABELS = {
    "user_id": pl.Int64,
    "anchor_date": pl.Date,
    "advertiser_id": pl.Int32,  # first high-priority conversion with an active spending advertiser
    "ts": UTC_TS,
    "conversion_type": pl.String,
    "in_v0": pl.Boolean,
    "in_v1": pl.Boolean,
}

SPLITS = {
    "user_id": pl.Int64,
    "split": Split,
    "in_v0": pl.Boolean,  # at the evaluation anchor date
    "in_v1": pl.Boolean,  # at the evaluation anchor date
}

CORPUS = {
    "doc_id": pl.Int32,
    "kind": pl.String,  # advertiser | brand | product | category
    "advertiser_id": pl.Int32,  # null for category documents
    "text": pl.String,
}

# Consumed by retrieval and ranking; produced by llm_predictor (or by hand, or a baseline).
PREDICTIONS = {
    "user_id": pl.Int64,
    "anchor_date": pl.Date,
    "rank": pl.Int32,  # 1-based position in the predicted list
    "advertiser_id": pl.Int32,
    "advertiser_name": pl.String,  # the name as generated, before conversion to an ID
    "source": pl.String,  # model or baseline that made the prediction
}

PREDICTED_INTERESTS = {
    "user_id": pl.Int64,
    "anchor_date": pl.Date,
    "rank": pl.Int32,
    "interest": pl.String,
}

# Produced by retrieval generators and blending.
CANDIDATES = {
    "request_id": pl.Int64,
    "item_id": pl.Int32,
    "advertiser_id": pl.Int32,
    "source": pl.String,
    "score": pl.Float32,
}

SURFACES = ("home_feed", "related_pins", "search")
Surface = pl.Enum(list(SURFACES))

# Logged ad impressions with their outcomes: written by the world's logged-impressions generator
# (synthetic_data/impressions.py) and by the simulator; read by ranking.
IMPRESSIONS = {
    "request_id": pl.Int64,
    "user_id": pl.Int64,
    "ts": UTC_TS,
    "surface": Surface,
    "position": pl.Int16,  # 0 = top slot
    "item_id": pl.Int32,
    "advertiser_id": pl.Int32,
    "category_id": pl.Int32,
    "is_click": pl.Boolean,
    "dwell_seconds": pl.Float32,  # 0 without a click
    "is_ctcvr": pl.Boolean,  # click-through conversion within the click attribution window
    "is_vtcvr": pl.Boolean,  # view-through conversion (no click) within the view window
    "propensity": pl.Float64,  # probability the logging policy showed this item here
}

IMPRESSIONS_TRUTH = {
    "request_id": pl.Int64,
    "position": pl.Int16,
    "p_click": pl.Float64,
    "p_conversion": pl.Float64,
}

SCHEMAS: dict[str, dict] = {
    "categories": CATEGORIES,
    "product_lines": PRODUCT_LINES,
    "advertisers": ADVERTISERS,
    "advertisers_truth": ADVERTISERS_TRUTH,
    "brands": BRANDS,
    "items": ITEMS,
    "users": USERS,
    "users_truth": USERS_TRUTH,
    "interests_truth": INTERESTS_TRUTH,
    "events": EVENTS,
    "conversions_truth": CONVERSIONS_TRUTH,
    "preset_pool": PRESET_POOL,
    "advertiser_spend": ADVERTISER_SPEND,
    "labels": LABELS,
    "splits": SPLITS,
    "corpus": CORPUS,
    "predictions": PREDICTIONS,
    "predicted_interests": PREDICTED_INTERESTS,
    "candidates": CANDIDATES,
    "impressions": IMPRESSIONS,
    "impressions_truth": IMPRESSIONS_TRUTH,
}


def _dtype_matches(expected, actual: pl.DataType) -> bool:
    if isinstance(expected, EmbeddingColumn):
        return expected.matches(actual)
    return actual == expected


def validate(df: pl.DataFrame, schema: dict, name: str = "table") -> pl.DataFrame:
    """Check that `df` has every declared column with its declared dtype; extra columns are allowed.

    Raises SchemaError naming the table, the column and the fix.
    """
    if not isinstance(df, pl.DataFrame):
        raise SchemaError(f"{name}: expected a polars DataFrame, got {type(df).__name__}")
    for column, expected in schema.items():
        if column not in df.columns:
            raise SchemaError(
                f"{name}: missing column '{column}' ({expected}); add it, "
                f"or rename the column that holds it (columns present: {df.columns})"
            )
        actual = df.schema[column]
        if not _dtype_matches(expected, actual):
            raise SchemaError(
                f"{name}: column '{column}' has dtype {actual}, expected {expected}; "
                f"cast it with pl.col('{column}').cast({expected!r})"
            )
    return df


def conform(df: pl.DataFrame, schema: dict, name: str = "table") -> pl.DataFrame:
    """Cast declared columns to their contract dtypes (for hand-built frames), then validate."""
    casts = [
        pl.col(c).cast(t)
        for c, t in schema.items()
        if c in df.columns and not isinstance(t, EmbeddingColumn) and df.schema[c] != t
    ]
    return validate(df.with_columns(casts) if casts else df, schema, name)


def empty(schema: dict) -> pl.DataFrame:
    """An empty frame with the contract's columns (embedding columns get width 1)."""
    return pl.DataFrame(
        schema={
            c: (pl.Array(pl.Float32, 1) if isinstance(t, EmbeddingColumn) else t)
            for c, t in schema.items()
        }
    )


WORLD_TABLES = (
    "categories",
    "product_lines",
    "advertisers",
    "advertisers_truth",
    "brands",
    "items",
    "users",
    "users_truth",
    "interests_truth",
    "events",
    "conversions_truth",
    "preset_pool",
    "advertiser_spend",
    "labels",
    "splits",
    "corpus",
)


@dataclass
class World:
    """Every table of a generated (or adapted) world, as validated polars DataFrames."""

    categories: pl.DataFrame
    product_lines: pl.DataFrame
    advertisers: pl.DataFrame
    advertisers_truth: pl.DataFrame
    brands: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    users_truth: pl.DataFrame
    interests_truth: pl.DataFrame
    events: pl.DataFrame
    conversions_truth: pl.DataFrame
    preset_pool: pl.DataFrame
    advertiser_spend: pl.DataFrame
    labels: pl.DataFrame
    splits: pl.DataFrame
    corpus: pl.DataFrame

    def __post_init__(self) -> None:
        for f in fields(self):
            validate(getattr(self, f.name), SCHEMAS[f.name], f.name)

    def write(self, directory: Path, skip: tuple[str, ...] = ()) -> list[Path]:
        """Write each table (but `skip`) to `directory/<table>.parquet`; returns every table's path."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in WORLD_TABLES:
            if name not in skip:
                getattr(self, name).write_parquet(directory / f"{name}.parquet", statistics=False,
                                                  compression="zstd")
        return [directory / f"{name}.parquet" for name in WORLD_TABLES]


def load_table(directory: Path, name: str) -> pl.DataFrame:
    """Read and validate one contract table from `directory/<name>.parquet`."""
    path = Path(directory) / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: generate the world first (adsim world --out <run>) "
            f"or point --world at a run's world/ folder"
        )
    return validate(pl.read_parquet(path), SCHEMAS[name], str(path))


def load_world(directory: Path, include_truth: bool = True) -> World:
    """Load a world folder written by `World.write`."""
    directory = Path(directory)
    tables = {name: load_table(directory, name) for name in WORLD_TABLES}
    if not include_truth:
        for name in WORLD_TABLES:
            if name.endswith("_truth"):
                tables[name] = empty(SCHEMAS[name])
    return World(**tables)
