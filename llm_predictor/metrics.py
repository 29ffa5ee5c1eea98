"""Recall@K of advertiser predictions against the next-advertiser labels, with bootstrap intervals
(paper 4.1-4.3: Recall@1/5/20 on V0 and V1).

A label counts as a hit at K when its advertiser is among the user's predictions of rank <= K for
the same anchor date; a user without predictions is a miss, so coverage failures lower recall.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

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


def bootstrap_interval(values: np.ndarray, rng: np.random.Generator, n_resamples: int = 1000,
                       confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (e.g. hits, or paired hit differences).

    Resampling n values with replacement is a multinomial draw over the distinct values, which
    makes the bootstrap exact and cheap for hit indicators (two or three distinct values).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    levels, counts = np.unique(values, return_counts=True)
    draws = rng.multinomial(values.size, counts / values.size, size=n_resamples)
    means = draws @ levels / values.size
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def recall_with_intervals(predictions_df: pl.DataFrame, labels_df: pl.DataFrame, rng: np.random.Generator,
                          ks: Sequence[int] = KS, n_resamples: int = 1000, confidence: float = 0.95
                          ) -> dict[str, float]:
    """{recall_at_k, recall_at_k_low, recall_at_k_high} for each K."""
    hits = hits_at_k(predictions_df, labels_df, ks)
    out: dict[str, float] = {}
    for k in ks:
        column = hits[f"hit_at_{k}"].cast(pl.Float64).to_numpy()
        out[f"recall_at_{k}"] = float(column.mean()) if column.size else float("nan")
        out[f"recall_at_{k}_low"], out[f"recall_at_{k}_high"] = bootstrap_interval(
            column, rng, n_resamples, confidence)
    return out
