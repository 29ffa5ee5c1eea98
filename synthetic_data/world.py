"""Generates a whole world from a WorldConfig: catalog, users, behaviour, labels, splits, corpus.

Users are generated in chunks (`user_chunk_size`), each from its own seeded stream, so memory stays
bounded and the same seed gives the same bytes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from synthetic_data import schema
from synthetic_data.behavior import KIND, N_QUERY_TEMPLATES, simulate_behavior
from synthetic_data.catalog import Catalog, build_catalog
from synthetic_data.config import WorldConfig
from synthetic_data.corpus import build_corpus
from synthetic_data.labels import anchor_dates, build_labels, build_splits
from synthetic_data.population import Population, build_population
from synthetic_data.schema import CONVERSION_KINDS, CONVERSION_MECHANISMS, EVENT_KINDS, World

QUERY_PREFIXES = ("", "best ", "", "cheap ", "", "")
QUERY_SUFFIXES = ("", "", " sale", "", " ideas", " reviews")
assert len(QUERY_PREFIXES) == len(QUERY_SUFFIXES) == N_QUERY_TEMPLATES

STREAM_CATALOG, STREAM_USERS, STREAM_BEHAVIOR, STREAM_SPLITS, STREAM_CORPUS = range(5)


def _rng(config: WorldConfig, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([config.seed, stream, chunk])


@dataclass
class _Chunk:
    users: pl.DataFrame
    users_truth: pl.DataFrame
    interests_truth: pl.DataFrame
    events: pl.DataFrame  # EVENTS without event_id, plus mechanism_code


_WORKER_CATALOG: Catalog | None = None  # set once per worker process by _init_worker


def _init_worker(config: WorldConfig) -> None:
    global _WORKER_CATALOG
    _WORKER_CATALOG = world_catalog(config)


def world_catalog(config: WorldConfig) -> Catalog:
    """The world's catalog, as `generate_world` and `write_world` build it."""
    return build_catalog(config, _rng(config, STREAM_CATALOG))


def chunk_population(config: WorldConfig, catalog: Catalog, index: int) -> tuple[Population, np.random.Generator]:
    """User chunk `index`'s population and the generator its behaviour draws from, as the world made them
    (user ids from index * user_chunk_size)."""
    first = index * config.user_chunk_size
    n = min(config.user_chunk_size, config.users.n_users - first)
    pop = build_population(config, catalog, first, n, _rng(config, STREAM_USERS, index))
    return pop, _rng(config, STREAM_BEHAVIOR, index)


def _make_chunk(config: WorldConfig, catalog: Catalog, index: int, on_day=None) -> _Chunk:
    pop, rng = chunk_population(config, catalog, index)
    raw = simulate_behavior(config, catalog, pop, rng, on_day=on_day)
    return _Chunk(pop.users, pop.users_truth, pop.interests_truth,
                  _finalize_events(config, catalog, pop.user_ids, raw))


def _worker_chunk(args: tuple[WorldConfig, int]) -> _Chunk:
    config, index = args
    return _make_chunk(config, _WORKER_CATALOG, index)


def _chunks(config: WorldConfig, catalog: Catalog, progress: bool, workers: int = 1) -> Iterator[_Chunk]:
    """User chunks in order; with workers > 1 they are generated in parallel processes.

    Each chunk has its own seeded streams, so the output does not depend on `workers`.
    """
    n_chunks = -(-config.users.n_users // config.user_chunk_size)
    workers = max(1, min(workers, n_chunks))
    with tqdm(total=n_chunks * config.n_days, desc="simulating days x user chunks", unit="day",
              disable=not progress) as bar:
        if workers == 1:
            for index in range(n_chunks):
                yield _make_chunk(config, catalog, index, on_day=bar.update)
            return
        context = multiprocessing.get_context("spawn")  # polars' thread pool is not fork-safe
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(config,)) as pool:
            for chunk in pool.map(_worker_chunk, [(config, i) for i in range(n_chunks)]):
                bar.update(config.n_days)
                yield chunk


def _split_truth(events: pl.DataFrame, first_event_id: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Number a chunk's events from `first_event_id`; split off the mechanism into conversions_truth."""
    events = events.with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_event_id).alias("event_id"))
    truth = (events.filter(pl.col("mechanism_code") >= 0)
             .select("event_id", pl.col("mechanism_code").cast(pl.Int64)
                     .replace_strict(dict(enumerate(CONVERSION_MECHANISMS)), return_dtype=schema.Mechanism)
                     .alias("mechanism")))
    return events.select(list(schema.EVENTS)), truth


def _assemble(config: WorldConfig, catalog: Catalog, chunks: list[_Chunk], events: pl.DataFrame,
              conversions_truth: pl.DataFrame, conversions: pl.DataFrame) -> World:
    """Labels, splits and corpus from the generated behaviour (`conversions` = conversion events)."""
    anchors = anchor_dates(config.start_date, config.labels)
    labels = build_labels(conversions, catalog.advertisers, anchors, config.labels)
    users = pl.concat([c.users for c in chunks])
    splits = build_splits(users["user_id"].to_numpy(), conversions, catalog.advertisers, anchors[-1],
                          config.labels, _rng(config, STREAM_SPLITS))
    corpus = build_corpus(config.corpus, catalog.categories, catalog.advertisers, catalog.advertisers_truth,
                          catalog.brands, catalog.items, _rng(config, STREAM_CORPUS))
    return World(
        categories=catalog.categories, product_lines=catalog.product_lines,
        advertisers=catalog.advertisers, advertisers_truth=catalog.advertisers_truth,
        brands=catalog.brands, items=catalog.items, users=users,
        users_truth=pl.concat([c.users_truth for c in chunks]),
        interests_truth=pl.concat([c.interests_truth for c in chunks]),
        events=events, conversions_truth=conversions_truth, preset_pool=catalog.preset_pool,
        advertiser_spend=catalog.advertiser_spend, labels=labels, splits=splits, corpus=corpus,
    )


LABEL_COLUMNS = ("user_id", "ts", "kind", "advertiser_id", "conversion_type", "is_high_priority")


def _conversion_rows(events: pl.DataFrame) -> pl.DataFrame:
    """The conversion events, with only the columns labels, splits and the summary read."""
    return events.filter(pl.col("kind").is_in(CONVERSION_KINDS)).select(LABEL_COLUMNS)


def generate_world(config: WorldConfig, progress: bool = True) -> World:
    """The full world for `config` in memory (deterministic in `config.seed`); for small worlds."""
    catalog = world_catalog(config)
    chunks, events, truths, offset = [], [], [], 0
    for chunk in _chunks(config, catalog, progress):
        numbered, truth = _split_truth(chunk.events, offset)
        offset += numbered.height
        chunk.events = None
        chunks.append(chunk)
        events.append(numbered)
        truths.append(truth)
    events_all = pl.concat(events)
    return _assemble(config, catalog, chunks, events_all, pl.concat(truths), _conversion_rows(events_all))


def summarize(world: World, events_by_kind: dict[str, int], conversions: pl.DataFrame) -> dict:
    """Counts per table, label coverage per anchor, conversion-type and mechanism mix."""
    rows = {name: getattr(world, name).height for name in schema.WORLD_TABLES}
    rows["events"] = sum(events_by_kind.values())
    coverage = (world.labels.group_by("anchor_date").agg(
        pl.len().alias("labelled_users"), pl.col("in_v0").sum().alias("v0"), pl.col("in_v1").sum().alias("v1"))
        .sort("anchor_date"))
    n_users = max(world.users.height, 1)
    mix = conversions["conversion_type"].value_counts().sort("conversion_type")
    mechanisms = world.conversions_truth["mechanism"].cast(pl.String).value_counts().sort("mechanism")
    return {
        "rows": rows,
        "events_by_kind": dict(sorted(events_by_kind.items())),
        "label_coverage": [
            {"anchor_date": str(r["anchor_date"]), "labelled_users": r["labelled_users"],
             "share_of_users": round(r["labelled_users"] / n_users, 4), "v0": r["v0"], "v1": r["v1"]}
            for r in coverage.iter_rows(named=True)],
        "conversion_type_mix": {k: round(v / max(conversions.height, 1), 4) for k, v in mix.iter_rows()},
        "conversion_mechanism_mix": {k: round(v / max(world.conversions_truth.height, 1), 4)
                                     for k, v in mechanisms.iter_rows()},
        "eval_users": int((world.splits["split"] == "eval").sum()),
    }


def write_world(config: WorldConfig, directory: Path, progress: bool = True,
                workers: int = 1) -> tuple[World, dict]:
    """Generate and write a world of any size, streaming events to Parquet chunk by chunk.

    Returns the world with an empty `events` table (the events stay on disk) and its summary.
    """
    directory.mkdir(parents=True, exist_ok=True)
    catalog = world_catalog(config)
    chunks, truths, conversions, offset = [], [], [], 0
    kind_counts: dict[str, int] = {}
    writer = None
    try:
        for chunk in _chunks(config, catalog, progress, workers):
            numbered, truth = _split_truth(chunk.events, offset)
            offset += numbered.height
            table = numbered.to_arrow(compat_level=pl.CompatLevel.oldest())
            if writer is None:
                writer = pq.ParquetWriter(directory / "events.parquet", table.schema, compression="zstd",
                                          write_statistics=False)
            writer.write_table(table)
            for kind, count in numbered["kind"].cast(pl.String).value_counts().iter_rows():
                kind_counts[kind] = kind_counts.get(kind, 0) + count
            conversions.append(_conversion_rows(numbered))
            truths.append(truth)
            chunk.events = None
            chunks.append(chunk)
    finally:
        if writer is not None:
            writer.close()
    conversions_all = pl.concat(conversions)
    world = _assemble(config, catalog, chunks, schema.empty(schema.EVENTS), pl.concat(truths), conversions_all)
    world.write(directory, skip=("events",))
    return world, summarize(world, kind_counts, conversions_all)


def _finalize_events(config: WorldConfig, catalog: Catalog, user_ids: np.ndarray,
                     raw: pl.DataFrame) -> pl.DataFrame:
    """Raw codes -> EVENTS columns (without event_id): ids, UTC timestamps, kinds, types and text."""
    raw = raw.sort("user", "day", "second", "kind", "item")
    start = datetime.combine(date.fromisoformat(config.start_date), datetime.min.time(), tzinfo=timezone.utc)
    types = list(config.behavior.conversion_type_probs)
    high = [types.index(t) for t in config.behavior.high_priority_types]
    kind = raw["kind"].to_numpy()
    item = raw["item"].to_numpy()
    advertiser = raw["advertiser"].to_numpy()
    has_item, has_advertiser = item >= 0, advertiser >= 0
    item_index = np.where(has_item, item, 0)
    brand = np.where(has_item, catalog.items["brand_id"].to_numpy()[item_index], -1)
    is_search = np.isin(kind, [KIND["onsite_search"], KIND["offsite_search"]])
    is_conversion = np.isin(kind, [KIND[k] for k in CONVERSION_KINDS])
    conversion_type = raw["conversion_type"].to_numpy()

    def masked(values: np.ndarray, mask: np.ndarray, dtype) -> pl.Series:
        return pl.Series(values, dtype=dtype).scatter(np.flatnonzero(~mask), None)

    pieces = pl.DataFrame({
        "kind_code": kind,
        "template": raw["template"].to_numpy(),
        "title": catalog.items["title"].gather(item_index),
        "brand_name": masked(catalog.brands["name"].gather(np.maximum(brand, 0)).to_numpy(), brand >= 0, pl.String),
        "domain": catalog.advertisers["domain"].gather(np.where(has_advertiser, advertiser, 0)),
        "line_name": catalog.product_lines["name"].gather(raw["line"].to_numpy()),
    })
    prefix = pl.col("template").cast(pl.Int64).replace_strict(dict(enumerate(QUERY_PREFIXES)), return_dtype=pl.String)
    suffix = pl.col("template").cast(pl.Int64).replace_strict(dict(enumerate(QUERY_SUFFIXES)), return_dtype=pl.String)
    brand_part = pl.when(pl.col("brand_name").is_not_null()).then(pl.col("brand_name") + " ").otherwise(pl.lit(""))
    slug = pl.col("title").str.to_lowercase().str.replace_all(" ", "-", literal=True)
    is_search_expr = pl.col("kind_code").is_in([KIND["onsite_search"], KIND["offsite_search"]])
    text = (pl.when(is_search_expr).then(pl.concat_str([prefix, brand_part, pl.col("line_name"), suffix]))
            .when(pl.col("kind_code") == KIND["offsite_url"])
            .then(pl.concat_str([pl.lit("https://www."), pl.col("domain"), pl.lit("/products/"), slug]))
            .otherwise(pl.col("title")))
    text_series = pieces.select(text.alias("text")).to_series()
    ts = (np.datetime64(start.replace(tzinfo=None), "us")
          + raw["day"].to_numpy().astype("timedelta64[D]").astype("timedelta64[us]")
          + raw["second"].to_numpy().astype("timedelta64[s]").astype("timedelta64[us]"))
    type_names = np.asarray(types + [""], dtype=object)[np.where(conversion_type >= 0, conversion_type, len(types))]
    events = pl.DataFrame({
        "user_id": pl.Series(user_ids[raw["user"].to_numpy()], dtype=pl.Int64),
        "ts": pl.Series(ts).dt.replace_time_zone("UTC"),
        "kind": pl.Series(np.asarray(EVENT_KINDS, dtype=object)[kind], dtype=schema.EventKind),
        "text": text_series,
        "advertiser_id": masked(advertiser, has_advertiser, pl.Int32),
        "brand_id": masked(brand, brand >= 0, pl.Int32),
        "item_id": masked(item, has_item & ~is_search, pl.Int32),
        "category_id": pl.Series(catalog.leaf_ids[raw["category"].to_numpy()], dtype=pl.Int32),
        "conversion_type": masked(type_names, conversion_type >= 0, pl.String),
        "is_high_priority": np.isin(conversion_type, high),
        "value": masked(catalog.items["price"].to_numpy()[item_index], is_conversion, pl.Float64),
        "mechanism_code": raw["mechanism"].to_numpy(),
    })
    return events
