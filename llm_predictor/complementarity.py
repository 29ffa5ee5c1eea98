"""Is a predictor complementary to the most-recent-advertiser list? (the paper's claim, issue #14)

Per method, on the same labels: Recall@K, the labels it hits that the reference list misses, the recall of
the union of the two lists, Recall@K per conversion mechanism of the world's truth (repeat, semantic,
popular, noise: an LLM should add most on semantic conversions), and list diversity: how many distinct
advertisers are ranked first and what share of users get the single most common first advertiser. A
method whose most common first advertiser covers more than `COLLAPSE_SHARE` of users is flagged as
collapsed to one popular list (the failure the demo at 29dfd80 showed: one advertiser first for 173 of 200
users). The mechanism split reads `conversions_truth`, so it is for offline evaluation only; a world
without it (real data) gets no mechanism columns.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from llm_predictor.metrics import hits_at_k
from synthetic_data.intervals import paired_difference_interval
from synthetic_data.schema import CONVERSION_MECHANISMS

KEYS = ["user_id", "anchor_date"]
COLLAPSE_SHARE = 0.5  # a reporting threshold: more than half the users share one first-ranked advertiser


def label_mechanisms(events: pl.DataFrame, conversions_truth: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """`labels` (user_id, anchor_date, advertiser_id, ts) with the `mechanism` that chose each label's
    conversion (null where `conversions_truth`, the world's hidden table, records none: real data). The
    caller passes the truth explicitly: evaluation only, never a model's input. Raises ValueError when
    `labels` lacks `ts`."""
    if "ts" not in labels.columns:
        raise ValueError("labels need their conversion's `ts` to find its mechanism; pass world.labels rows")
    conversions = events.select("event_id", "user_id", "ts", "advertiser_id").join(conversions_truth, on="event_id")
    return labels.join(conversions.drop("event_id").unique(["user_id", "ts", "advertiser_id"]),
                       on=["user_id", "ts", "advertiser_id"], how="left", maintain_order="left")


def first_ranked_diversity(predictions: pl.DataFrame) -> dict[str, float]:
    """Distinct advertisers ranked first, and the share of (user, anchor) lists whose first is the most
    common one, with the collapse flag."""
    first = predictions.filter(pl.col("rank") == pl.col("rank").min().over(KEYS)).unique(KEYS)
    if first.is_empty():
        return {"distinct_first": 0, "top_first_share": float("nan"), "is_collapsed": False}
    counts = first["advertiser_id"].value_counts(sort=True)
    share = counts["count"][0] / first.height
    return {"distinct_first": counts.height, "top_first_share": share, "is_collapsed": share > COLLAPSE_SHARE}


def complementarity(predictions: Mapping[str, pl.DataFrame], labels: pl.DataFrame, reference: str,
                    k: int = 20) -> pl.DataFrame:
    """One row per method of `predictions` (PREDICTIONS tables, the reference among them) on `labels`
    (KEYS, advertiser_id and, for the per-mechanism columns, `mechanism`): labels, Recall@K, its paired
    difference from the reference's with Tango's interval, hits the reference misses, union Recall@K, Recall@K
    per mechanism and first-ranked diversity. Raises KeyError when `reference` is not a method."""
    reference_hits = hits_at_k(predictions[reference], labels, (k,))[f"hit_at_{k}"]
    has_mechanism = "mechanism" in labels.columns
    rows = []
    for method, table in predictions.items():
        hit = hits_at_k(table, labels, (k,))[f"hit_at_{k}"]
        low, high = paired_difference_interval(hit.to_numpy(), reference_hits.to_numpy())
        row = {"method": method, "labels": labels.height, f"recall_at_{k}": hit.mean(),
               f"recall_at_{k}_minus_reference": hit.mean() - reference_hits.mean(),
               f"recall_at_{k}_minus_reference_low": low, f"recall_at_{k}_minus_reference_high": high,
               "hits_reference_misses": int((hit & ~reference_hits).sum()),
               f"union_recall_at_{k}": (hit | reference_hits).mean()}
        if has_mechanism:
            for mechanism in CONVERSION_MECHANISMS:
                is_mechanism = (labels["mechanism"].cast(pl.String) == mechanism).fill_null(False)
                row[f"recall_at_{k}_{mechanism}"] = hit.filter(is_mechanism).mean() if is_mechanism.any() else None
                row[f"labels_{mechanism}"] = int(is_mechanism.sum())
        rows.append(row | first_ranked_diversity(table))
    return pl.DataFrame(rows)
