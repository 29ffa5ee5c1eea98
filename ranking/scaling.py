"""Dense-feature scaling fitted on the training rows, bounded so no feature can extrapolate.

Unit-interval features (the LLM list indicators, reciprocal ranks and shares of
`ranking.llm_features`) keep their own scale: standardising a rare indicator by its training
standard deviation multiplies it by ~1/sqrt(prevalence) (x100 at 1 row in 10,000), and a DCN's
cross layers square that, which drove every listed advertiser's score to ~0 (issue #13, fault 0).
Other features (log counts, log price) are standardised. Every scaled value is clipped to the
range seen in training, so a feature that was constant in training has no effect when serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SCALE = 1e-6  # a constant non-unit feature: centred and clipped to its one value


@dataclass(frozen=True)
class DenseScaler:
    """Per-feature offset, scale and clip range [low, high] of the scaled training values ([d] each)."""

    offset: np.ndarray
    scale: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, dense: np.ndarray) -> DenseScaler:
        """Fit on training rows `dense` [n, d]; raises ValueError on no rows or non-finite values."""
        dense = np.asarray(dense, dtype=np.float64)
        if dense.ndim != 2 or len(dense) == 0:
            raise ValueError(f"dense features must be a non-empty [rows, features] array, got shape {dense.shape}")
        if not np.isfinite(dense).all():
            raise ValueError("dense training features hold NaN or inf; fix the feature builder's inputs")
        is_unit = (dense.min(axis=0) >= 0) & (dense.max(axis=0) <= 1)
        offset = np.where(is_unit, 0.0, dense.mean(axis=0))
        scale = np.where(is_unit, 1.0, np.maximum(dense.std(axis=0), MIN_SCALE))
        scaled = (dense - offset) / scale
        return cls(offset=offset.astype(np.float32), scale=scale.astype(np.float32),
                   low=scaled.min(axis=0).astype(np.float32), high=scaled.max(axis=0).astype(np.float32))

    def transform(self, dense: np.ndarray) -> np.ndarray:
        """Scaled and clipped features [n, d] (float32)."""
        return np.clip((np.asarray(dense, dtype=np.float32) - self.offset) / self.scale, self.low, self.high)
