"""Generates a whole world from a WorldConfig: catalog, users, behaviour, labels, splits, corpus.

Users are generated in chunks (`user_chunk_size`), each from its own seeded stream, so memory stays
bounded and the same seed gives the same bytes.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from synthetic_data import schema
from synthetic_data.behavior import KIND, N_QUERY_TEMPLATES, simulate_behavior
from synthetic_data.catalog import Catalog, build_catalog
from synthetic_data.config import WorldConfig
from synthetic_data.corpus import build_corpus
from synthetic_data.labels import anchor_dates, build_labels, build_splits
from synthetic_data.population import build_population
from synthetic_data.schema import CONVERSION_KINDS, CONVERSION_MECHANISMS, EVENT_KINDS, World

QUERY_PREFIXES = ("", "best ", "", "cheap ", "", "")
QUERY_SUFFIXES = ("", "", " sale", "", " ideas", " reviews")
assert len(QUERY_PREFIXES) == len(QUERY_SUFFIXES) == N_QUERY_TEMPLATES

STREAM_CATALOG, STREAM_USERS, STREAM_BEHAVIOR, STREAM_SPLITS, STREAM_CORPUS = range(5)


def _rng(config: WorldConfig, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([config.seed, stream, chunk])


def generate_world(config: WorldConfig, progress: bool = True) -> World:
    """The full world for `config` (deterministic in `config.seed`)."""
    catalog = build_catalog(config, _rng(config, STREAM_CATALOG))
    n_users, chunk = config.users.n_users, config.user_chunk_size
    n_chunks = -(-n_users // chunk)
    users, users_truth, interests, events = [], [], [], []
    with tqdm(total=n_chunks * config.n_days, desc="simulating user-days (x chunk)", unit="day",
              disable=not progress) as bar:
        for c in range(n_chunks):
            first = c * chunk
            pop = build_population(config, catalog, first, min(chunk, n_users - first),
                                   _rng(config, STREAM_USERS, c))
            raw = simulate_behavior(config, catalog, pop, _rng(config, STREAM_BEHAVIOR, c),
                                    on_day=bar.update)
            events.append(_finalize_events(config, catalog, pop.user_ids, raw))
            users.append(pop.users)
            users_truth.append(pop.users_truth)
            interests.append(pop.interests_truth)
    events_all = pl.concat(events).with_row_index("event_id").with_columns(pl.col("event_id").cast(pl.Int64))
    conversions_truth = (events_all.filter(pl.col("mechanism_code") >= 0)
                         .select("event_id", pl.col("mechanism_code").cast(pl.Int64)
                                 .replace_strict(dict(enumerate(CONVERSION_MECHANISMS)), return_dtype=schema.Mechanism)
                                 .alias("mechanism")))
    events_all = events_all.select(list(schema.EVENTS))
    anchors = anchor_dates(config.start_date, config.labels)
    labels = build_labels(events_all, catalog.advertisers, anchors, config.labels)
    users_all = pl.concat(users)
    splits = build_splits(users_all["user_id"].to_numpy(), events_all, catalog.advertisers, anchors[-1],
                          config.labels, _rng(config, STREAM_SPLITS))
    corpus = build_corpus(config.corpus, catalog.categories, catalog.advertisers, catalog.advertisers_truth,
                          catalog.brands, catalog.items, _rng(config, STREAM_CORPUS))
    return World(
        categories=catalog.categories, product_lines=catalog.product_lines,
        advertisers=catalog.advertisers, advertisers_truth=catalog.advertisers_truth,
        brands=catalog.brands, items=catalog.items, users=users_all,
        users_truth=pl.concat(users_truth), interests_truth=pl.concat(interests),
        events=events_all, conversions_truth=conversions_truth, preset_pool=catalog.preset_pool,
        advertiser_spend=catalog.advertiser_spend, labels=labels, splits=splits, corpus=corpus,
    )


def _finalize_events(config: WorldConfig, catalog: Catalog, user_ids: np.ndarray,
                     raw: pl.DataFrame) -> pl.DataFrame:
    """Raw codes -> EVENTS columns: ids, UTC timestamps, kinds, conversion types and text."""
    start = datetime.combine(date.fromisoformat(config.start_date), datetime.min.time(), tzinfo=timezone.utc)
    types = list(config.behavior.conversion_type_probs)
    high = set(config.behavior.high_priority_types)
    items = catalog.items.select("item_id", "title", "brand_id", "price")
    brand_names = catalog.brands.select("brand_id", pl.col("name").alias("brand_name"))
    domains = catalog.advertisers.select(pl.col("advertiser_id"), "domain")
    lines = catalog.product_lines.select(pl.col("product_line_id").alias("line"), pl.col("name").alias("line_name"))
    is_search = pl.col("kind_code").is_in([KIND["onsite_search"], KIND["offsite_search"]])
    is_conversion = pl.col("kind_code").is_in([KIND[k] for k in CONVERSION_KINDS])
    frame = (raw.rename({"kind": "kind_code", "mechanism": "mechanism_code"})
             .with_columns(
                 pl.Series("user_id", user_ids[raw["user"].to_numpy()], dtype=pl.Int64),
                 pl.Series("category_id", catalog.leaf_ids[raw["category"].to_numpy()], dtype=pl.Int32),
                 (pl.lit(start) + pl.duration(days=pl.col("day"), seconds=pl.col("second")))
                 .dt.cast_time_unit("us").alias("ts"),
                 pl.when(pl.col("advertiser") >= 0).then(pl.col("advertiser")).alias("advertiser_id"),
                 pl.when(pl.col("item") >= 0).then(pl.col("item")).alias("item_id"))
             .join(items, on="item_id", how="left")
             .join(brand_names, on="brand_id", how="left")
             .join(domains, on="advertiser_id", how="left")
             .join(lines, on="line", how="left"))
    prefix = pl.col("template").cast(pl.Int64).replace_strict(dict(enumerate(QUERY_PREFIXES)), return_dtype=pl.String)
    suffix = pl.col("template").cast(pl.Int64).replace_strict(dict(enumerate(QUERY_SUFFIXES)), return_dtype=pl.String)
    brand_part = pl.when(pl.col("brand_name").is_not_null()).then(pl.col("brand_name") + " ").otherwise(pl.lit(""))
    slug = pl.col("title").str.to_lowercase().str.replace_all(" ", "-")
    text = (pl.when(is_search).then(pl.concat_str([prefix, brand_part, pl.col("line_name"), suffix]))
            .when(pl.col("kind_code") == KIND["offsite_url"])
            .then(pl.concat_str([pl.lit("https://www."), pl.col("domain"), pl.lit("/products/"), slug]))
            .otherwise(pl.col("title")))
    conversion_type = pl.when(pl.col("conversion_type") >= 0).then(
        pl.col("conversion_type").cast(pl.Int64).replace_strict(dict(enumerate(types)), default=None,
                                                                return_dtype=pl.String))
    return (frame.with_columns(
        pl.col("kind_code").cast(pl.Int64).replace_strict(dict(enumerate(EVENT_KINDS)), return_dtype=schema.EventKind)
        .alias("kind"),
        text.alias("text"),
        pl.when(is_search).then(None).otherwise(pl.col("item_id")).alias("item_id"),
        conversion_type.alias("conversion_type"),
        pl.when(is_conversion).then(pl.col("price")).alias("value"))
        .with_columns(pl.col("conversion_type").is_in(sorted(high)).fill_null(False).alias("is_high_priority"))
        .sort("user_id", "ts", "kind_code", "item")
        .select(*[c for c in schema.EVENTS if c != "event_id"], "mechanism_code")
        .with_columns(pl.col(c).cast(t) for c, t in schema.EVENTS.items() if c not in ("event_id",)))
