"""The name -> advertiser-ID conversion layer (paper 3.3: outputs "directly usable downstream").

Generated names are matched exactly, then by `synthetic_data.names.normalise_name` (case, accents, spaces,
punctuation, '&' = 'and'; the web domain too), then fuzzily by character n-gram TF-IDF cosine above a
threshold. Unmapped, ambiguous and repeated names are counted and reported, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import polars as pl

from llm_predictor.parse import ParsedOutput, parse_output, parse_single
from llm_predictor.prompts import N_ADVERTISERS
from synthetic_data.names import normalise_name
from synthetic_data.schema import PREDICTED_INTERESTS, PREDICTIONS, conform

MatchKind = Literal["exact", "normalised", "fuzzy", "unmapped"]


@dataclass(frozen=True)
class ConvertedName:
    name: str
    advertiser_id: int | None
    kind: MatchKind
    score: float  # 1.0 for exact/normalised, the cosine similarity for fuzzy, best cosine if unmapped


class NameConverter:
    """Maps generated advertiser names to advertiser IDs of an ADVERTISERS table."""

    def __init__(self, advertisers_df: pl.DataFrame, threshold: float = 0.75):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        advertisers = advertisers_df.select("advertiser_id", "name", "domain").sort("advertiser_id")
        self._ids = advertisers["advertiser_id"].to_numpy()
        self._exact = dict(zip(advertisers["name"].to_list(), self._ids.tolist()))
        name_keys = [normalise_name(name) for name in advertisers["name"]]
        keys = Counter()
        candidates: dict[str, int] = {}
        for advertiser_id, name_key, domain in zip(self._ids.tolist(), name_keys, advertisers["domain"]):
            for key in {name_key, normalise_name(domain or "")} - {""}:
                keys[key] += 1
                candidates[key] = advertiser_id
        # A key shared by two advertisers is ambiguous: those names fall through to fuzzy matching.
        self._normalised = {k: v for k, v in candidates.items() if keys[k] == 1}
        self._vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3))
        self._matrix = self._vectorizer.fit_transform(name_keys)

    def convert(self, names: Sequence[str]) -> list[ConvertedName]:
        """Convert names (batched: one sparse product for all names that need fuzzy matching)."""
        results: list[ConvertedName | None] = [None] * len(names)
        fuzzy_positions, fuzzy_keys = [], []
        for position, name in enumerate(names):
            if name in self._exact:
                results[position] = ConvertedName(name, self._exact[name], "exact", 1.0)
            elif (key := normalise_name(name)) in self._normalised:
                results[position] = ConvertedName(name, self._normalised[key], "normalised", 1.0)
            else:
                fuzzy_positions.append(position)
                fuzzy_keys.append(key)
        if fuzzy_positions:
            queries = self._vectorizer.transform(fuzzy_keys)
            similarity = (queries @ self._matrix.T).toarray()
            best = similarity.argmax(axis=1)
            scores = similarity[np.arange(len(best)), best]
            for position, index, score in zip(fuzzy_positions, best, scores):
                if score >= self.threshold:
                    results[position] = ConvertedName(names[position], int(self._ids[index]), "fuzzy", float(score))
                else:
                    results[position] = ConvertedName(names[position], None, "unmapped", float(score))
        return results


@dataclass(frozen=True)
class ConversionCounts:
    """How many outputs parsed and how many names mapped, per kind (reported, never dropped)."""

    outputs: int
    parsed: int  # advertiser list found in its tag (or a single name for 1-advertiser outputs)
    exact_count_outputs: int  # outputs with exactly the expected number of distinct names
    names: int  # distinct names per output, summed
    exact: int
    normalised: int
    fuzzy: int
    unmapped: int
    duplicate_names: int  # repeated names within an output
    duplicate_ids: int  # different names of one output mapped to the same advertiser
    issues: dict[str, int]

    @property
    def parse_rate(self) -> float:
        return self.parsed / self.outputs if self.outputs else float("nan")

    @property
    def exact_count_rate(self) -> float:
        return self.exact_count_outputs / self.outputs if self.outputs else float("nan")

    @property
    def unmapped_rate(self) -> float:
        return self.unmapped / self.names if self.names else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "parse_rate": self.parse_rate, "exact_count_rate": self.exact_count_rate,
                "unmapped_rate": self.unmapped_rate}


def parse_generations(generations_df: pl.DataFrame, expected_advertisers: int = N_ADVERTISERS
                      ) -> list[ParsedOutput]:
    """Parse each generation: XML outputs, or single names when the table has a `rank` column."""
    texts = generations_df["text"].fill_null("").to_list()
    if "rank" in generations_df.columns:
        return [parse_single(text) for text in texts]
    return [parse_output(text, expected_advertisers) for text in texts]


KEYS = ["user_id", "anchor_date"]
COUNT_COLUMNS = ("outputs", "parsed", "exact_count_outputs", "names", "exact", "normalised", "fuzzy", "unmapped",
                 "duplicate_names", "duplicate_ids")  # ConversionCounts' integer fields
COUNT_SCHEMA = {**{name: pl.Int64 for name in COUNT_COLUMNS}, "issues": pl.List(pl.String)}  # per request


def convert_predictions(generations_df: pl.DataFrame, converter: NameConverter, source: str,
                        max_names: int = N_ADVERTISERS) -> tuple[pl.DataFrame, ConversionCounts]:
    """Generations (user_id, anchor_date, text[, rank]) -> a PREDICTIONS table and the counts.

    A table with `rank` holds one single-advertiser output per row (e.g. the beams of the
    1-advertiser SFT model) and is read as a list in rank order. Ranks are 1-based over the mapped,
    distinct advertisers, at most `max_names` per user.
    """
    predictions, per_request = convert_per_request(generations_df, converter, source, max_names)
    return predictions, total_counts(per_request)


def convert_per_request(generations_df: pl.DataFrame, converter: NameConverter, source: str,
                        max_names: int = N_ADVERTISERS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`convert_predictions` with the counts per (user_id, anchor_date): COUNT_COLUMNS (Int64) and `issues`
    (the parse issues, List(String)), one row per request; batches of requests add up (`total_counts`)."""
    for column in ("user_id", "anchor_date", "text"):
        if column not in generations_df.columns:
            raise ValueError(f"generations table lacks column '{column}' (user_id, anchor_date, text[, rank])")
    is_single = "rank" in generations_df.columns
    if not is_single and generations_df.select(KEYS).is_duplicated().any():
        raise ValueError("generations table has two XML outputs for one (user_id, anchor_date); "
                         "keep one, or give single-name rows a 'rank' column")
    generations = generations_df.sort([*KEYS, "rank"]) if is_single else generations_df
    parsed = parse_generations(generations, expected_advertisers=1 if is_single else max_names)
    per_output = generations.select(KEYS).with_columns(
        pl.Series("is_parsed", [p.is_parsed and bool(p.advertisers) for p in parsed]),
        pl.Series("duplicate_names", [p.duplicate_count for p in parsed], dtype=pl.Int64),
        pl.Series("issues", [list(p.issues) for p in parsed], dtype=pl.List(pl.String)))
    names = (
        generations.select(KEYS)
        .with_columns(pl.Series("name", [p.advertisers for p in parsed], dtype=pl.List(pl.String)))
        .with_row_index("output")
        .explode("name").drop_nulls("name")
        .with_row_index("position")
    )
    all_names = names
    if is_single:  # repeated names across the beams of one user are duplicates too
        first = names.group_by(*KEYS, "name").agg(pl.col("position").min())
        names = names.join(first, on=[*KEYS, "name", "position"], how="semi")
    unique_names = names["name"].unique().to_list()
    converted = pl.DataFrame(
        [(c.name, c.advertiser_id, c.kind) for c in converter.convert(unique_names)],
        schema={"name": pl.String, "advertiser_id": pl.Int32, "kind": pl.String}, orient="row",
    )
    names = names.join(converted, on="name", how="left")
    mapped = names.filter(pl.col("advertiser_id").is_not_null()).sort("position")
    distinct = mapped.unique([*KEYS, "advertiser_id"], keep="first", maintain_order=True)
    predictions = (
        distinct.with_columns(pl.int_range(1, pl.len() + 1).over(KEYS).alias("rank"))
        .filter(pl.col("rank") <= max_names)
        .select(*KEYS, "rank", "advertiser_id", pl.col("name").alias("advertiser_name"),
                pl.lit(source).alias("source"))
    )
    counts = (
        per_output.group_by(KEYS, maintain_order=True).agg(
            pl.col("is_parsed").any().cast(pl.Int64).alias("parsed"), pl.col("duplicate_names").sum(),
            pl.col("issues").list.explode(keep_nulls=False, empty_as_null=False))
        .with_columns(pl.lit(1, pl.Int64).alias("outputs"))  # one output per request (a list, or its ranked names)
        .join(names.group_by(KEYS).agg(
            pl.len().alias("names"), *[(pl.col("kind") == kind).sum().alias(kind)
                                       for kind in ("exact", "normalised", "fuzzy", "unmapped")]), on=KEYS, how="left")
        .join(all_names.group_by(KEYS).len("all_names"), on=KEYS, how="left")
        .join(mapped.group_by(KEYS).len("mapped"), on=KEYS, how="left")
        .join(distinct.group_by(KEYS).len("distinct"), on=KEYS, how="left")
        .fill_null(0)
        .with_columns((pl.col("names") == max_names).cast(pl.Int64).alias("exact_count_outputs"),
                      (pl.col("duplicate_names") + pl.col("all_names") - pl.col("names")).alias("duplicate_names"),
                      (pl.col("mapped") - pl.col("distinct")).alias("duplicate_ids"))
        .select(*KEYS, *[pl.col(name).cast(pl.Int64) for name in COUNT_COLUMNS], "issues")
    )
    return conform(predictions, PREDICTIONS, "predictions"), counts


def total_counts(per_request: pl.DataFrame) -> ConversionCounts:
    """The ConversionCounts of a `convert_per_request` counts table (or several concatenated)."""
    totals = {name: int(per_request[name].sum()) for name in COUNT_COLUMNS}
    issues = Counter(per_request["issues"].explode().drop_nulls().to_list())
    return ConversionCounts(**totals, issues=dict(sorted(issues.items())))


def interests_from_generations(generations_df: pl.DataFrame) -> pl.DataFrame:
    """The interests of XML generations as a PREDICTED_INTERESTS table (ranks 1-based)."""
    parsed = parse_generations(generations_df.drop("rank", strict=False))
    table = (
        generations_df.select("user_id", "anchor_date")
        .with_columns(pl.Series("interest", [p.interests for p in parsed], dtype=pl.List(pl.String)))
        .explode("interest").drop_nulls("interest")
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_id", "anchor_date").alias("rank"))
        .select("user_id", "anchor_date", "rank", "interest")
    )
    return conform(table, PREDICTED_INTERESTS, "predicted_interests")
