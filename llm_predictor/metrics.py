"""Recall@K of advertiser predictions against the next-advertiser labels, with confidence intervals
(paper 4.1-4.3: Recall@1/5/20 on V0 and V1).

A label counts as a hit at K when its advertiser is among the user's predictions of rank <= K for
the same anchor date; a user without predictions is a miss, so coverage failures lower recall.
Recall@K is a proportion of labels: its interval is Wilson's score interval. The difference of two
methods' Recall@K on the same labels is a difference of paired proportions: its interval is
Tango's score interval (Tango 1998, Statistics in Medicine 17:891). Both keep their coverage at 0
and at all hits, where a bootstrap of the hits collapses to a single point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import optimize, stats

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


def proportion_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of successes / trials, e.g. Recall@K = hits / labels; NaNs for no trials.

    0 hits of 50 give [0, 0.071] (a bootstrap gives [0, 0]).
    """
    if trials == 0:
        return float("nan"), float("nan")
    interval = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def _tango_score(difference: float, only_method: int, only_reference: int, pairs: int) -> float:
    """Tango's score statistic Z of a paired difference, returned as Z / sqrt(1 + Z^2): monotone in Z
    and finite where Z's variance vanishes (at -1, +1, and at the estimate when no pair is discordant
    or every pair is)."""
    b, c, n = only_method, only_reference, pairs
    # maximum-likelihood probability of the (miss, hit) cell given the difference (Tango 1998)
    linear, constant = -b - c + (2 * n - b + c) * difference, -c * difference * (1 - difference)
    only_reference_probability = (np.sqrt(max(linear**2 - 8 * n * constant, 0.0)) - linear) / (4 * n)
    variance = max(n * (2 * only_reference_probability + difference * (1 - difference)), 0.0)
    excess = b - c - n * difference
    return 0.0 if excess == 0 else excess / np.sqrt(variance + excess**2)


def paired_difference_interval(hits: np.ndarray, reference_hits: np.ndarray, confidence: float = 0.95
                               ) -> tuple[float, float]:
    """Tango's score interval of mean(hits) - mean(reference_hits), two 0/1 arrays over the same labels.

    It depends on the discordant labels only (hit by one method, not the other); with none of 50 it
    gives [-0.071, 0.071], not [0, 0]: up to ~7% of labels could still differ in either direction.
    NaNs for no labels.
    """
    hits, reference_hits = np.asarray(hits, dtype=bool), np.asarray(reference_hits, dtype=bool)
    pairs = len(hits)
    if pairs == 0:
        return float("nan"), float("nan")
    only_method, only_reference = int((hits & ~reference_hits).sum()), int((~hits & reference_hits).sum())
    estimate = (only_method - only_reference) / pairs
    z = stats.norm.ppf(0.5 + confidence / 2)
    level = z / np.sqrt(1 + z**2)  # |Z| = z on _tango_score's scale
    counts = (only_method, only_reference, pairs)
    low = -1.0 if estimate == -1 else optimize.brentq(lambda d: _tango_score(d, *counts) - level, -1.0, estimate)
    high = 1.0 if estimate == 1 else optimize.brentq(lambda d: _tango_score(d, *counts) + level, estimate, 1.0)
    return float(low), float(high)


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
