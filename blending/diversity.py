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
    total = counts.sum()
    if total == 0:
        return Diversity(unique_advertisers=0, entropy=0.0, gini=0.0)
    entropy = float(stats.entropy(counts))
    n = counts.size
    ordered = np.sort(counts)
    gini = float(2.0 * (np.arange(1, n + 1) * ordered).sum() / (n * total) - (n + 1) / n)
    return Diversity(unique_advertisers=int((counts > 0).sum()), entropy=entropy, gini=max(gini, 0.0))
