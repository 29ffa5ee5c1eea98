"""Offline evaluation of candidate generators on held-out users and the next window (paper 4.5.1).

Requests are the eval-split users at the start of day anchor+1 (features from events before it,
the same cut as the LLM labels); relevant items are those each user engaged or converted with in
[anchor+1, anchor+1+window). Figures per generator: Recall@K of engaged and of converted items
and of converted advertisers (a request the generator does not serve counts as zero), advertiser
coverage, and the overlap with the main generator: how much of what a generator finds the main
one misses (the paper's "complementary" claim).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import polars as pl

from retrieval.config import EvaluationConfig
from retrieval.requests import REQUESTS
from synthetic_data.schema import CANDIDATES, CONVERSION_KINDS, EVENTS, SPLITS, conform, validate


def evaluation_anchor(events: pl.DataFrame, config: EvaluationConfig,
                      labels: pl.DataFrame | None = None) -> date:
    """The configured anchor date, else the last label anchor (aligned with the LLM's predictions)
    that leaves a full window of events after it, else the last day that does."""
    if config.anchor_date:
        return date.fromisoformat(config.anchor_date)
    last = events["ts"].max().date() - timedelta(days=config.window_days)
    if labels is not None:
        anchors = labels.filter(pl.col("anchor_date") <= last)["anchor_date"]
        if len(anchors):
            return anchors.max()
    return last


def window_start(anchor: date) -> datetime:
    """Midnight UTC starting day anchor+1: the cut between features and targets."""
    return datetime.combine(anchor + timedelta(days=1), time(0), tzinfo=timezone.utc)


def evaluation_requests(splits: pl.DataFrame, anchor: date) -> pl.DataFrame:
    """One request per eval-split user at the start of the window (request_id = user_id)."""
    validate(splits, SPLITS, "splits")
    users = splits.filter(pl.col("split") == "eval").sort("user_id")["user_id"]
    return conform(pl.DataFrame({"request_id": users, "user_id": users,
                                 "ts": [window_start(anchor)] * len(users)}), REQUESTS, "requests")


def relevant_items(events: pl.DataFrame, requests: pl.DataFrame, anchor: date,
                   window_days: int) -> pl.DataFrame:
    """(request_id, item_id, advertiser_id, is_conversion) of items engaged/converted in the window."""
    validate(events, EVENTS, "events")
    start = window_start(anchor)
    in_window = events.filter((pl.col("ts") >= start) & (pl.col("ts") < start + timedelta(days=window_days))
                              & pl.col("kind").is_in(["engagement", *CONVERSION_KINDS]))
    return (
        in_window.drop_nulls("item_id")
        .with_columns(is_conversion=pl.col("kind").is_in(CONVERSION_KINDS))
        .join(requests.select("request_id", "user_id"), on="user_id")
        .group_by("request_id", "item_id", "advertiser_id").agg(pl.col("is_conversion").any())
    )


def _top_k(candidates: pl.DataFrame, k: int) -> pl.DataFrame:
    return candidates.sort(["request_id", "score"], descending=[False, True]).group_by(
        "request_id", maintain_order=True).head(k)


def recall_at_k(candidates: pl.DataFrame, relevant: pl.DataFrame, k: int, key: str = "item_id") -> float:
    """Mean over requests with relevant rows of |top-k ∩ relevant| / |relevant| on column `key`."""
    validate(candidates, CANDIDATES, "candidates")
    truth = relevant.select("request_id", key).unique()
    if truth.height == 0:
        return float("nan")
    found = _top_k(candidates, k).select("request_id", key).unique()
    per_request = truth.join(found.with_columns(hit=pl.lit(1)), on=["request_id", key], how="left")
    recalls = per_request.group_by("request_id").agg(
        (pl.col("hit").fill_null(0).sum() / pl.len()).alias("recall")).sort("request_id")  # bitwise-stable mean
    return float(recalls["recall"].mean())


def advertiser_coverage(candidates: pl.DataFrame, advertisers: int) -> float:
    """Share of the `advertisers` in the catalog that appear among the candidates."""
    return candidates["advertiser_id"].n_unique() / advertisers if advertisers else float("nan")


def missed_by_reference(candidates: pl.DataFrame, reference: pl.DataFrame,
                        relevant: pl.DataFrame) -> dict[str, float]:
    """How much `candidates` adds to `reference` (e.g. the main generator) on the same requests."""
    keys = ["request_id", "item_id"]
    new = candidates.join(reference.select(keys), on=keys, how="anti")
    hits = relevant.select(keys).unique()
    found = hits.join(candidates.select(keys), on=keys, how="semi")
    found_only_here = found.join(reference.select(keys), on=keys, how="anti")
    return {
        "candidates_not_in_reference": new.height / candidates.height if candidates.height else float("nan"),
        "relevant_found": found.height,
        "relevant_found_only_here": found_only_here.height,
    }


def evaluate(candidates: dict[str, pl.DataFrame], relevant: pl.DataFrame, reference: str,
             advertisers: int, config: EvaluationConfig) -> pl.DataFrame:
    """One row per generator: recalls at every K, coverage, and what it adds over `reference`."""
    conversions = relevant.filter(pl.col("is_conversion"))
    rows = []
    for source, frame in candidates.items():
        row = {"generator": source, "requests_served": frame["request_id"].n_unique(),
               "candidates_per_served_request": frame.height / max(frame["request_id"].n_unique(), 1)}
        for k in config.k:
            row[f"recall@{k}_engaged"] = recall_at_k(frame, relevant, k)
            row[f"recall@{k}_converted"] = recall_at_k(frame, conversions, k)
            row[f"advertiser_recall@{k}_converted"] = recall_at_k(frame, conversions, k, "advertiser_id")
        row["advertiser_coverage"] = advertiser_coverage(frame, advertisers)
        if source != reference:
            row.update(missed_by_reference(frame, candidates[reference], relevant))
        rows.append(row)
    return pl.DataFrame(rows)


def compare_objectives(metrics: dict[str, pl.DataFrame], columns: tuple[str, ...]) -> pl.DataFrame:
    """One row per (objective, generator) with the chosen metric columns (paper 4.5.1's comparison)."""
    return pl.concat([
        frame.select("generator", *[c for c in columns if c in frame.columns]).with_columns(
            objective=pl.lit(objective)) for objective, frame in metrics.items()
    ], how="diagonal").select("objective", "generator", pl.exclude("objective", "generator"))


def markdown_table(frame: pl.DataFrame) -> str:
    """A frame as a GitHub markdown table (floats to 3 decimals, nulls as '-')."""
    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines) + "\n"
