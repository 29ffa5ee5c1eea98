"""Amazon 2018 purchase sequences (LC-Rec/LETTER format) as an adsim world (issue 4: real data).

Brands become advertisers (one advertiser per brand), purchases become high-priority conversion
events carrying the item's title, category and brand, and the label of an anchor date is the
brand of the next purchase: the analogue of the paper's next advertiser (3.2.1). The sequences
carry no timestamps, so order stands in for time: a user's purchases are placed one day apart,
ending on `end_date` for every user. The last purchase is then the test label (anchor
`end_date - 1`), the second-to-last the validation label (anchor `end_date - 2`) and every earlier
one a training label, so "events up to the anchor date" is exactly the leave-one-out history.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from synthetic_data import schema
from synthetic_data.config_io import require, to_dict
from synthetic_data.names import normalise_name
from synthetic_data.run_folder import RunFolder, file_digest

ITEM_FIELDS = ("title", "description", "brand", "categories")
LabelRole = pl.Enum(["train", "validation", "test"])
_WORD = re.compile(r"[^\W_]+")  # a run of letters and digits
WORLD_STAGE = "world"
ADAPTER_VERSION = 3  # part of the stage config: bump when the tables built from the same files change

# Written into the stage config, hence into the run's manifest.json, so every reader of the run
# knows which columns are real, which are synthetic and which are not applicable.
NOTES = {
    "source": "Amazon Review Data 2018 (McAuley lab), 5-core purchase sequences with item "
              "metadata, in the LC-Rec/LETTER format (<name>.item.json + <name>.inter.json).",
    "time_axis": "The sequences have no timestamps: order stands in for time. Purchase k of a "
                 "user with n purchases is dated end_date - (n - 1 - k) days at 12:00 UTC; the "
                 "dates are synthetic and only their order is real.",
    "labels": "One label per purchase after the first whose item has a brand: anchor_date = the "
              "day of the previous purchase, advertiser_id = the purchased item's brand. The "
              "extra column `role` is 'test' for the last purchase (anchor end_date - 1), "
              "'validation' for the second-to-last (anchor end_date - 2) and 'train' for the "
              "rest; the extra column `item_id` is the held-out item.",
    "splits": "Leave-one-out evaluates every user: split = 'eval' for each user with a test "
              "label, 'train' otherwise; training examples are the 'train'-role labels, whose "
              "targets precede both held-out purchases.",
    "brands": "Spellings of one brand (same synthetic_data.names.normalise_name key: case, accents, "
              "spaces, punctuation and '&' = 'and' ignored, e.g. 'B & C Eagle' = 'B&C Eagle', "
              "'Oral-B' = 'Oral B') are merged into their most frequent spelling. A brand value "
              "listed in the config's placeholder_brands (e.g. 'Generic', 'Unknown') or holding no "
              "letter or digit counts as missing; a missing brand is taken from the title when its "
              "leading words spell a known brand. Items still without brand keep null "
              "brand/advertiser: they stay in histories but yield no label (counted in the stage "
              "summary).",
    "advertisers": "One advertiser per brand (advertiser_id = brand_id); domain, campaign type, "
                   "bid, target ROAS and budget are not in the data (null); every advertiser "
                   "counts as active and spending so that every branded purchase is a label.",
    "categories": "Level 1 = the department's first sub-category, level 2 (leaf) = the full "
                  "category path; product line = leaf category (one to one).",
    "embedding": "Item embedding = L2-normalised TF-IDF -> truncated SVD of title, category path "
                 "and description (the data has no images).",
    "preset_pool": "Top brands by cumulative purchase count through each day up to the test "
                   "anchor date (so no pool counts a test purchase); the revenue column holds "
                   "that count (the data has no prices).",
    "not_applicable": "Tables ending _truth and advertiser_spend are empty; user profile "
                      "fields, prices and order values are null.",
}


class AmazonFormatError(ValueError):
    """A dataset file is missing, unreadable or holds a malformed record."""


@dataclass(frozen=True)
class AmazonConfig:
    """How the adapter places sequences in time and builds the derived tables."""

    end_date: str = "2018-10-01"  # every user's last purchase falls on this (synthetic) day
    embedding_dim: int = 64
    seed: int = 0  # truncated SVD of the item text
    preset_pool_size: int = 50
    max_description_chars: int = 1000  # description text kept in product documents
    v0_min_history: int = 10  # paper 4.1: V0 keeps users with >= 10 conversions of history
    # Brand values that name no brand, compared by `normalise_name` ("N/A" = "n/a" = "NA"): their
    # items count as unbranded, so the title rule applies, and no advertiser groups unrelated items.
    placeholder_brands: tuple[str, ...] = ("generic", "unknown", "unbranded", "no brand", "none",
                                           "n/a", "not applicable", "does not apply")

    def __post_init__(self) -> None:
        try:
            date.fromisoformat(self.end_date)
        except ValueError:
            require(False, "end_date", f"{self.end_date!r} is not an ISO date; write YYYY-MM-DD")
        require(self.embedding_dim >= 2, "embedding_dim", "must be at least 2")
        require(self.preset_pool_size >= 1, "preset_pool_size", "must be at least 1")
        require(self.max_description_chars >= 0, "max_description_chars", "must be >= 0")
        require(self.v0_min_history >= 1, "v0_min_history", "must be at least 1")
        keyless = [value for value in self.placeholder_brands if not normalise_name(value)]
        require(not keyless, "placeholder_brands",
                f"{keyless} hold no letter or digit; such brand values are already treated as missing")


@dataclass(frozen=True)
class AmazonDataset:
    """The raw dataset after format checks: item records and purchase sequences."""

    name: str
    items: pl.DataFrame  # item_id, title, description, brand, categories (raw strings)
    purchases: pl.DataFrame  # user_id, position (0 = first purchase), item_id


def dataset_files(data_dir: Path) -> tuple[Path, Path]:
    """The `<name>.item.json` and `<name>.inter.json` files of a dataset folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise AmazonFormatError(
            f"{data_dir}: no such folder; pass the folder holding <name>.item.json and "
            f"<name>.inter.json (e.g. ../shared/data/amazon18_scientific)"
        )
    item_files = sorted(data_dir.glob("*.item.json"))
    inter_files = sorted(data_dir.glob("*.inter.json"))
    if len(item_files) != 1 or len(inter_files) != 1:
        raise AmazonFormatError(
            f"{data_dir}: expected exactly one *.item.json and one *.inter.json, found "
            f"{[p.name for p in item_files]} and {[p.name for p in inter_files]}"
        )
    return item_files[0], inter_files[0]


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AmazonFormatError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from error
    if not isinstance(data, dict):
        raise AmazonFormatError(
            f"{path}: expected a JSON object mapping ids to records, got {type(data).__name__}"
        )
    return data


def _parse_id(key: str, path: Path, what: str) -> int:
    if not (key.isascii() and key.isdigit()):
        raise AmazonFormatError(
            f"{path}: record {key!r}: the {what} id must be a non-negative integer written as a "
            f"string key"
        )
    return int(key)


def load_items(path: Path) -> pl.DataFrame:
    """Item records of `<name>.item.json`; a record missing a field or holding a non-string fails."""
    data = _read_json_object(path)
    if not data:
        raise AmazonFormatError(f"{path}: holds no items")
    rows = {"item_id": []} | {field: [] for field in ITEM_FIELDS}
    for key, record in data.items():
        rows["item_id"].append(_parse_id(key, path, "item"))
        if not isinstance(record, dict):
            raise AmazonFormatError(f"{path}: record {key!r}: expected an object with {ITEM_FIELDS}")
        for field in ITEM_FIELDS:
            if field not in record:
                raise AmazonFormatError(
                    f"{path}: record {key!r}: missing field {field!r} (fields present: "
                    f"{sorted(record)}); every item needs {list(ITEM_FIELDS)}, use \"\" where unknown"
                )
            if not isinstance(record[field], str):
                raise AmazonFormatError(
                    f"{path}: record {key!r}: field {field!r} must be a string, got "
                    f"{type(record[field]).__name__}"
                )
            rows[field].append(html.unescape(record[field]))
    return pl.DataFrame(rows, schema_overrides={"item_id": pl.Int32}).sort("item_id")


def load_purchases(path: Path, item_ids: np.ndarray, item_path: Path) -> pl.DataFrame:
    """Purchase sequences of `<name>.inter.json` as (user_id, position, item_id) rows.

    Fails, naming the file and the user record, on an empty sequence, a non-integer entry or an
    item id that `item_path` does not define.
    """
    data = _read_json_object(path)
    if not data:
        raise AmazonFormatError(f"{path}: holds no users")
    user_ids, sequences = [], []
    for key, sequence in data.items():
        user_ids.append(_parse_id(key, path, "user"))
        if not isinstance(sequence, list) or not sequence:
            raise AmazonFormatError(
                f"{path}: record {key!r}: expected a non-empty list of item ids, got "
                f"{sequence!r:.80}; drop the user or list its purchases in time order"
            )
        if not all(type(entry) is int for entry in sequence):
            bad = next(entry for entry in sequence if type(entry) is not int)
            raise AmazonFormatError(f"{path}: record {key!r}: item id {bad!r} is not an integer")
        sequences.append(sequence)
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    flat = np.fromiter((entry for sequence in sequences for entry in sequence), dtype=np.int64,
                       count=int(lengths.sum()))
    is_known = np.isin(flat, item_ids)
    if not is_known.all():
        first = int(np.flatnonzero(~is_known)[0])
        owner = int(np.searchsorted(np.cumsum(lengths), first, side="right"))
        raise AmazonFormatError(
            f"{path}: record {str(user_ids[owner])!r}: item id {int(flat[first])} (position "
            f"{first - int(lengths[:owner].sum())}) is not defined in {item_path}; "
            f"{int((~is_known).sum())} unknown id(s) in all"
        )
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return pl.DataFrame({
        "user_id": np.repeat(np.asarray(user_ids, dtype=np.int64), lengths),
        "position": (np.arange(len(flat)) - starts).astype(np.int32),
        "item_id": flat.astype(np.int32),
    })


def load_dataset(data_dir: Path) -> AmazonDataset:
    """Read and check both files of a dataset folder."""
    item_path, inter_path = dataset_files(data_dir)
    items = load_items(item_path)
    purchases = load_purchases(inter_path, items["item_id"].to_numpy(), item_path)
    return AmazonDataset(name=item_path.name.removesuffix(".item.json"), items=items,
                         purchases=purchases)


def brand_spellings(brands: pl.Series) -> pl.Series:
    """Brand values as displayed: whitespace trimmed, inner runs of it made one space."""
    return brands.str.strip_chars().str.replace_all(r"\s+", " ")


def brand_keys(brands: pl.Series, placeholder_brands: tuple[str, ...]) -> pl.Series:
    """The `normalise_name` key of each brand value: "" for an empty value or a placeholder."""
    placeholder_keys = {normalise_name(placeholder) for placeholder in placeholder_brands}
    keys = {brand: normalise_name(brand) for brand in brands.unique().drop_nulls().to_list()}
    return brands.replace_strict(
        {brand: "" if key in placeholder_keys else key for brand, key in keys.items()},
        default="", return_dtype=pl.String,
    )


def title_brand_key(title: str, known_keys: set[str], longest: int) -> str | None:
    """The key of the longest run of the title's leading words that is a known brand's key.

    Words end where a run of letters and digits ends, so "B&C Eagle 9025 ..." finds "bandceagle"
    and "3M-1860 ..." finds "3m"; `longest` (the longest known key's length) bounds the search.
    """
    found = None
    for word in _WORD.finditer(title):
        key = normalise_name(title[:word.end()])
        if len(key) > longest:
            break
        if key in known_keys:
            found = key
    return found


def resolve_brands(items: pl.DataFrame, placeholder_brands: tuple[str, ...]) -> pl.DataFrame:
    """Add `brand_name` (canonical brand or null) and `brand_source` ('field' | 'title' | null).

    Spellings with one `normalise_name` key are one brand, shown in its most frequent spelling
    (ties: the first in sort order); a placeholder value counts as no brand. An item without a brand
    takes the one its title starts with, if any (NOTES['brands']).
    """
    cleaned = items.with_columns(
        brand_spellings(items["brand"]).alias("brand_clean"),
        brand_keys(items["brand"], placeholder_brands).alias("brand_key"),
    )
    spellings = (
        cleaned.filter(pl.col("brand_key") != "")
        .group_by("brand_key", "brand_clean").len()
        .sort(["brand_key", "len", "brand_clean"], descending=[False, True, False])
        .group_by("brand_key", maintain_order=True).first()
        .select("brand_key", pl.col("brand_clean").alias("canonical"))
    )
    known_keys = set(spellings["brand_key"].to_list())
    longest = max(map(len, known_keys), default=0)
    unbranded = cleaned.filter(pl.col("brand_key") == "")
    from_title = pl.DataFrame(
        {"item_id": unbranded["item_id"],
         "title_key": [title_brand_key(title, known_keys, longest) for title in unbranded["title"]]},
        schema={"item_id": pl.Int32, "title_key": pl.String},
    )
    return (
        cleaned.join(from_title, on="item_id", how="left")
        .with_columns(
            pl.when(pl.col("brand_key") != "").then(pl.col("brand_key"))
            .otherwise(pl.col("title_key")).alias("brand_key"),
            pl.when(pl.col("brand_key") != "").then(pl.lit("field"))
            .when(pl.col("title_key").is_not_null()).then(pl.lit("title"))
            .alias("brand_source"),
        )
        .join(spellings, on="brand_key", how="left")
        .rename({"canonical": "brand_name"})
        .drop("brand_clean", "brand_key", "title_key")
    )


def _category_paths(items: pl.DataFrame) -> pl.DataFrame:
    """Split the comma-joined category path; names themselves hold ', ' so only a bare ',' splits."""
    return items.with_columns(
        pl.when(pl.col("categories").str.strip_chars() == "").then(None)
        .otherwise(
            pl.col("categories").str.replace_all(", ", "\x1f", literal=True).str.split(",")
            .list.eval(pl.element().str.replace_all("\x1f", ", ", literal=True).str.strip_chars())
        ).alias("category_path")
    ).with_columns(
        pl.col("category_path").list.join(" > ").alias("leaf_key"),
        pl.when(pl.col("category_path").list.len() > 1)
        .then(pl.col("category_path").list.get(1, null_on_oob=True))
        .otherwise(pl.col("category_path").list.first()).alias("top_name"),
        pl.col("category_path").list.last().alias("leaf_name"),
    )


def item_embeddings(texts: list[str], dim: int, seed: int) -> np.ndarray:
    """L2-normalised TF-IDF -> truncated SVD vectors of item texts (the data has no images)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(min_df=min(2, len(texts)), sublinear_tf=True,
                            stop_words="english").fit_transform(texts)
    dim_used = min(dim, tfidf.shape[1] - 1, len(texts) - 1)
    vectors = np.zeros((len(texts), dim), dtype=np.float32)
    if dim_used >= 1:
        svd = TruncatedSVD(n_components=dim_used, random_state=seed)
        vectors[:, :dim_used] = svd.fit_transform(tfidf)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _catalogue(dataset: AmazonDataset, config: AmazonConfig) -> dict[str, pl.DataFrame]:
    """Categories, product lines, brands, advertisers and items of the dataset's catalogue."""
    items = _category_paths(resolve_brands(dataset.items, config.placeholder_brands))
    tops = items.select(pl.col("top_name").drop_nulls().unique().sort())
    leaves = items.filter(pl.col("leaf_key").is_not_null()).group_by("leaf_key").agg(
        pl.col("top_name").first(), pl.col("leaf_name").first()
    ).sort("leaf_key")
    tops = tops.with_row_index("top_id").with_columns(pl.col("top_id").cast(pl.Int32))
    leaves = leaves.with_row_index("category_id", offset=tops.height).with_columns(
        pl.col("category_id").cast(pl.Int32)
    ).join(tops, on="top_name", how="left")
    categories = pl.concat([
        tops.select(pl.col("top_id").alias("category_id"), pl.lit(None, pl.Int32).alias("parent_id"),
                    pl.lit(1, pl.Int8).alias("level"), pl.col("top_name").alias("name")),
        leaves.select("category_id", pl.col("top_id").alias("parent_id"),
                      pl.lit(2, pl.Int8).alias("level"), pl.col("leaf_name").alias("name")),
    ])
    product_lines = leaves.select(
        (pl.col("category_id") - tops.height).alias("product_line_id"), "category_id",
        pl.col("leaf_name").alias("name"),
    )
    brand_names = items.select(pl.col("brand_name").drop_nulls().unique().sort())
    brand_ids = brand_names.with_row_index("brand_id").with_columns(pl.col("brand_id").cast(pl.Int32))
    items = (
        items.join(brand_ids, on="brand_name", how="left")
        .join(leaves.select("leaf_key", "category_id"), on="leaf_key", how="left")
        .join(product_lines.select("product_line_id", "category_id"), on="category_id", how="left")
        .sort("item_id")
    )
    texts = items.select(pl.concat_str(
        [pl.col("title"), pl.col("leaf_key").fill_null(""), pl.col("description")], separator=". "
    )).to_series().to_list()
    embedding = item_embeddings(texts, config.embedding_dim, config.seed)
    # A brand's primary category: the leaf most of its items sit in (ties: the smallest id).
    primary = (
        items.filter(pl.col("brand_id").is_not_null() & pl.col("category_id").is_not_null())
        .group_by("brand_id", "category_id").len()
        .sort(["brand_id", "len", "category_id"], descending=[False, True, False])
        .group_by("brand_id", maintain_order=True).first().select("brand_id", "category_id")
    )
    lines = (
        items.filter(pl.col("brand_id").is_not_null())
        .join(product_lines.select("product_line_id", pl.col("name").alias("line")),
              on="product_line_id", how="left")
        .group_by("brand_id").agg(pl.col("line").drop_nulls().unique().sort().alias("product_lines"))
    )
    brands = brand_ids.join(primary, on="brand_id", how="left").select(
        "brand_id", pl.col("brand_id").alias("advertiser_id"), pl.col("brand_name").alias("name"),
        "category_id",
    )
    advertisers = brands.join(lines, on="brand_id", how="left").select(
        "advertiser_id", "name",
        pl.lit(None, pl.String).alias("domain"),
        pl.lit(True).alias("is_active"),
        pl.lit(True).alias("has_active_spend"),
        pl.lit(None, schema.CampaignType).alias("campaign_type"),
        pl.lit(None, pl.Float64).alias("bid"),
        pl.lit(None, pl.Float64).alias("target_roas"),
        pl.lit(None, pl.Float64).alias("daily_budget"),
        "category_id",
        pl.col("product_lines").fill_null(pl.lit([], pl.List(pl.String))),
    )
    catalogue_items = items.select(
        "item_id", pl.col("brand_id").alias("advertiser_id"), "brand_id", "category_id",
        "product_line_id", "title", pl.lit(None, pl.Float64).alias("price"),
        pl.Series("embedding", embedding, dtype=pl.Array(pl.Float32, config.embedding_dim)),
        "description", "leaf_key", "brand_source",
    )
    return {
        "categories": categories, "product_lines": product_lines, "brands": brands,
        "advertisers": advertisers, "items": catalogue_items,
    }


def _timed_purchases(dataset: AmazonDataset, items: pl.DataFrame, end: date) -> pl.DataFrame:
    """Purchases with synthetic timestamps: one day apart, each user's last on `end` at noon."""
    end_ts = datetime(end.year, end.month, end.day, 12, tzinfo=timezone.utc)
    return (
        dataset.purchases
        .with_columns(pl.len().over("user_id").alias("length"))
        .with_columns(
            (pl.lit(end_ts).dt.cast_time_unit("us")
             - pl.duration(days=pl.col("length") - 1 - pl.col("position"))).alias("ts")
        )
        .join(items.select("item_id", "advertiser_id", "brand_id", "category_id", "title"),
              on="item_id", how="left")
        .sort("user_id", "position")
    )


def _events(purchases: pl.DataFrame) -> pl.DataFrame:
    return schema.conform(purchases.with_row_index("event_id").select(
        "event_id", "user_id", "ts",
        pl.lit("attributed_conversion", schema.EventKind).alias("kind"),
        pl.col("title").alias("text"), "advertiser_id", "brand_id", "item_id", "category_id",
        pl.lit("purchase").alias("conversion_type"),
        pl.lit(True).alias("is_high_priority"),
        pl.lit(None, pl.Float64).alias("value"),
        "position",
    ), schema.EVENTS, "events")


def _labels(purchases: pl.DataFrame, config: AmazonConfig) -> pl.DataFrame:
    """Next-brand labels at every purchase after the first (see NOTES['labels'])."""
    from_end = pl.col("length") - 1 - pl.col("position")
    return schema.conform(
        purchases.filter((pl.col("position") >= 1) & pl.col("advertiser_id").is_not_null())
        .select(
            "user_id",
            (pl.col("ts").dt.date() - pl.duration(days=1)).cast(pl.Date).alias("anchor_date"),
            "advertiser_id", "ts",
            pl.lit("purchase").alias("conversion_type"),
            (pl.col("position") >= config.v0_min_history).alias("in_v0"),
            pl.lit(True).alias("in_v1"),
            pl.when(from_end == 0).then(pl.lit("test")).when(from_end == 1)
            .then(pl.lit("validation")).otherwise(pl.lit("train")).cast(LabelRole).alias("role"),
            "item_id",
        ),
        schema.LABELS, "labels",
    )


def _splits(users: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    test = labels.filter(pl.col("role") == "test").select("user_id", "in_v0", "in_v1")
    return schema.conform(
        users.select("user_id").join(test, on="user_id", how="left").select(
            "user_id",
            pl.when(pl.col("in_v1").is_not_null()).then(pl.lit("eval")).otherwise(pl.lit("train"))
            .cast(schema.Split).alias("split"),
            pl.col("in_v0").fill_null(False), pl.col("in_v1").fill_null(False),
        ),
        schema.SPLITS, "splits",
    )


def _preset_pool(events: pl.DataFrame, size: int) -> pl.DataFrame:
    """Top brands by cumulative purchase count through each day (see NOTES['preset_pool'])."""
    daily = (
        events.filter(pl.col("advertiser_id").is_not_null())
        .group_by(pl.col("ts").dt.date().alias("day"), "advertiser_id").len()
    )
    days = daily.select(pl.col("day").unique().sort())
    cumulative = (
        days.join(daily.select("advertiser_id").unique(), how="cross")
        .join(daily, on=["day", "advertiser_id"], how="left")
        .sort("advertiser_id", "day")
        .with_columns(pl.col("len").fill_null(0).cum_sum().over("advertiser_id").alias("revenue"))
        .filter(pl.col("revenue") > 0)
    )
    return schema.conform(
        cumulative.sort(["day", "revenue", "advertiser_id"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("day").alias("rank"))
        .filter(pl.col("rank") <= size)
        .select("day", "rank", "advertiser_id", pl.col("revenue").cast(pl.Float64)),
        schema.PRESET_POOL, "preset_pool",
    )


def _corpus(catalogue: dict[str, pl.DataFrame], max_description_chars: int) -> pl.DataFrame:
    """Web-text analogue: one document per product, per brand and per leaf category."""
    items = catalogue["items"].join(
        catalogue["brands"].select("brand_id", pl.col("name").alias("brand_name")),
        on="brand_id", how="left",
    )
    products = items.select(
        pl.lit("product").alias("kind"), "advertiser_id",
        pl.concat_str([
            pl.col("title"),
            pl.when(pl.col("brand_name").is_not_null())
            .then(pl.format("Brand: {}.", pl.col("brand_name"))).otherwise(pl.lit("")),
            pl.when(pl.col("leaf_key").is_not_null())
            .then(pl.format("Category: {}.", pl.col("leaf_key"))).otherwise(pl.lit("")),
            pl.col("description").str.slice(0, max_description_chars),
        ], separator=" ").str.strip_chars().alias("text"),
    )
    brands = catalogue["advertisers"].select(
        pl.lit("brand").alias("kind"), "advertiser_id",
        pl.format("{} is a brand. Its product lines: {}.",
                  pl.col("name"), pl.col("product_lines").list.join("; ")).alias("text"),
    )
    leaves = items.filter(pl.col("leaf_key").is_not_null()).select("category_id", "leaf_key").unique()
    categories = catalogue["categories"].filter(pl.col("level") == 2).join(
        leaves, on="category_id", how="left"
    ).sort("category_id").select(
        pl.lit("category").alias("kind"), pl.lit(None, pl.Int32).alias("advertiser_id"),
        pl.format("{} is a product category: {}.", pl.col("name"), pl.col("leaf_key")).alias("text"),
    )
    return schema.conform(
        pl.concat([products, brands, categories]).with_row_index("doc_id")
        .select("doc_id", "kind", "advertiser_id", "text"),
        schema.CORPUS, "corpus",
    )


def build_world(dataset: AmazonDataset, config: AmazonConfig) -> tuple[schema.World, dict]:
    """The dataset as adsim world tables, with a summary of what was kept and dropped."""
    catalogue = _catalogue(dataset, config)
    test_anchor = date.fromisoformat(config.end_date) - timedelta(days=1)
    purchases = _timed_purchases(dataset, catalogue["items"], date.fromisoformat(config.end_date))
    events = _events(purchases)
    labels = _labels(purchases, config)
    users = schema.conform(
        purchases.group_by("user_id").agg(pl.len().alias("purchases")).sort("user_id").select(
            "user_id", pl.lit(None, pl.String).alias("age"), pl.lit(None, pl.String).alias("gender"),
            pl.lit(None, pl.String).alias("user_state"), pl.lit(None, pl.Date).alias("signup_date"),
        ),
        schema.USERS, "users",
    )
    world = schema.World(
        categories=schema.conform(catalogue["categories"], schema.CATEGORIES, "categories"),
        product_lines=schema.conform(catalogue["product_lines"], schema.PRODUCT_LINES, "product_lines"),
        advertisers=schema.conform(catalogue["advertisers"], schema.ADVERTISERS, "advertisers"),
        advertisers_truth=schema.empty(schema.ADVERTISERS_TRUTH),
        brands=schema.conform(catalogue["brands"], schema.BRANDS, "brands"),
        items=schema.conform(catalogue["items"], schema.ITEMS, "items"),
        users=users,
        users_truth=schema.empty(schema.USERS_TRUTH),
        interests_truth=schema.empty(schema.INTERESTS_TRUTH),
        events=events,
        conversions_truth=schema.empty(schema.CONVERSIONS_TRUTH),
        preset_pool=_preset_pool(
            events.filter(pl.col("ts").dt.date() <= test_anchor), config.preset_pool_size
        ),
        advertiser_spend=schema.empty(schema.ADVERTISER_SPEND),
        labels=labels,
        splits=_splits(users, labels),
        corpus=_corpus(catalogue, config.max_description_chars),
    )
    unbranded_targets = purchases.filter(
        (pl.col("position") >= 1) & pl.col("advertiser_id").is_null()
    ).with_columns((pl.col("length") - 1 - pl.col("position")).alias("from_end"))
    spellings = brand_spellings(dataset.items["brand"])
    keys = brand_keys(dataset.items["brand"], config.placeholder_brands)
    summary = {
        "dataset": dataset.name,
        "users": users.height,
        "items": dataset.items.height,
        "brands": world.brands.height,
        "purchases": events.height,
        "brand_spellings": spellings.filter(keys != "").n_unique(),  # merged into the brands
        "items_brand_placeholder": int(((keys == "") & (spellings != "")).sum()),
        "items_brand_from_title": int((catalogue["items"]["brand_source"] == "title").sum()),
        "items_without_brand": int(catalogue["items"]["brand_id"].null_count()),
        "labels": {role: int((labels["role"] == role).sum()) for role in LabelRole.categories},
        "labels_dropped_unbranded": {
            "test": int((unbranded_targets["from_end"] == 0).sum()),
            "validation": int((unbranded_targets["from_end"] == 1).sum()),
            "train": int((unbranded_targets["from_end"] >= 2).sum()),
        },
        "test_anchor_date": str(test_anchor),
        "validation_anchor_date": str(test_anchor - timedelta(days=1)),
    }
    return world, summary


def write_amazon_world(data_dir: Path, out_run_dir: Path, config: AmazonConfig | None = None) -> schema.World:
    """Adapt the dataset in `data_dir` into `out_run_dir/world/` (stage "world" of a RunFolder).

    Skips the work when the stage is complete for the same files and config.
    """
    config = config or AmazonConfig()
    item_path, inter_path = dataset_files(data_dir)
    stage_config = {
        "source": "amazon",
        "adapter_version": ADAPTER_VERSION,
        "data_dir": str(Path(data_dir).resolve()),
        "files": {p.name: file_digest(p) for p in (item_path, inter_path)},
        "adapter": to_dict(config),
        "notes": NOTES,
    }
    run = RunFolder(out_run_dir)
    world_dir = run.root / WORLD_STAGE
    if run.is_complete(WORLD_STAGE, stage_config):
        return schema.load_world(world_dir)
    world, summary = build_world(load_dataset(data_dir), config)
    paths = world.write(run.stage_dir(WORLD_STAGE))
    run.complete(WORLD_STAGE, stage_config, [p.name for p in paths], summary)
    return world
