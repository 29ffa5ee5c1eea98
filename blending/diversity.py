"""Advertiser diversity of a funnel stage: unique advertisers, Shannon entropy and Gini (paper 4.5.1).

The paper's warning is that too large an L0 quota over-concentrates advertisers after
de-duplication; these three numbers make that concentration measurable at every stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Diversity:
    """Diversity of one count vector over a fixed advertiser universe."""

    unique_advertisers: int
    entropy: float  # Shannon entropy of the advertiser shares, in nats
    gini: float  # Gini coefficient over the whole universe (0 = even, -> 1 = one advertiser)


def advertiser_diversity(counts: np.ndarray) -> Diversity:
    """Diversity of `counts[a]` = rows (candidates, impressions, ...) that advertiser `a` received.

    Gini counts every advertiser of the universe, zeros included, so that shutting advertisers
    out raises it; entropy and Gini of an empty stage are 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1:
        raise ValueError(f"counts must be one vector per advertiser universe, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("counts must be >= 0")
    unique_advertisers, entropy, gini = diversity_measures(counts[np.newaxis])[0]
    return Diversity(unique_advertisers=int(unique_advertisers), entropy=float(entropy), gini=float(gini))


def diversity_measures(counts: np.ndarray) -> np.ndarray:
    """advertiser_diversity of every row of `counts` [k, advertisers] (nonnegative) at once, for bootstrap
    resamples: [k, 3] float64 of unique advertisers, entropy (nats) and Gini; an empty row is all 0."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=1)
    is_empty = total == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = stats.entropy(counts, axis=1)
        n = counts.shape[1]
        ordered = np.sort(counts, axis=1)
        gini = 2.0 * (np.arange(1, n + 1) * ordered).sum(axis=1) / (n * total) - (n + 1) / n
    return np.column_stack([(counts > 0).sum(axis=1), np.where(is_empty, 0.0, entropy),
                            np.where(is_empty, 0.0, np.maximum(gini, 0.0))]).astype(np.float64)
