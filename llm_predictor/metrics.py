"""Recall@K of advertiser predictions against the next-advertiser labels, with confidence intervals
(paper 4.1-4.3: Recall@1/5/20 on V0 and V1).

A label counts as a hit at K when its advertiser is among the user's predictions of rank <= K for
the same anchor date; a user without predictions is a miss, so coverage failures lower recall.
Recall@K is a proportion of labels: its interval is Wilson's score interval
(synthetic_data.intervals), which keeps its width at 0 and at all hits.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from synthetic_data.intervals import proportion_interval

KS = (1, 5, 20)


def hits_at_k(predictions_df: pl.DataFrame, labels_df: pl.DataFrame, ks: Sequence[int] = KS) -> pl.DataFrame:
    """One row per label (user_id, anchor_date) with the label's rank (null if absent) and hit_at_<k>."""
    keys = ["user_id", "anchor_date"]
    if labels_df.select(keys).is_duplicated().any():
        raise ValueError("labels_df has two labels for one (user_id, anchor_date); keep the first conversion")
    ranks = predictions_df.group_by([*keys, "advertiser_id"]).agg(pl.col("rank").min())
    return (
        labels_df.select(*keys, "advertiser_id")
        .join(ranks, on=[*keys, "advertiser_id"], how="left", maintain_order="left")
        .with_columns([(pl.col("rank") <= k).fill_null(False).alias(f"hit_at_{k}") for k in ks])
    )


def recall_at_k(predictions_df: pl.DataFrame, labels_df: pl.DataFrame, ks: Sequence[int] = KS) -> dict[int, float]:
    """Recall@K for each K: the share of labels hit within the top K predictions."""
    hits = hits_at_k(predictions_df, labels_df, ks)
    if hits.is_empty():
        return {k: float("nan") for k in ks}
    return {k: float(hits[f"hit_at_{k}"].mean()) for k in ks}


def recall_with_intervals(predictions_df: pl.DataFrame, labels_df: pl.DataFrame, ks: Sequence[int] = KS,
                          confidence: float = 0.95) -> dict[str, float]:
    """{recall_at_k, recall_at_k_low, recall_at_k_high} for each K, with Wilson score intervals."""
    hits = hits_at_k(predictions_df, labels_df, ks)
    out: dict[str, float] = {}
    for k in ks:
        hit_count = int(hits[f"hit_at_{k}"].sum())
        out[f"recall_at_{k}"] = hit_count / hits.height if hits.height else float("nan")
        out[f"recall_at_{k}_low"], out[f"recall_at_{k}_high"] = proportion_interval(hit_count, hits.height, confidence)
    return out
