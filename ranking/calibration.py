"""Probability calibration on a held-out split (the auction multiplies bids by these probabilities).

Platt scaling fits sigmoid(a * logit + b); isotonic regression fits a monotone map of the score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class Calibrator:
    """A fitted map from a model's logits to calibrated probabilities."""

    method: str
    platt: LogisticRegression | None = None
    isotonic: IsotonicRegression | None = None

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float64)
        if self.method == "platt":
            return self.platt.predict_proba(logits[:, None])[:, 1]
        return self.isotonic.predict(logits)


def fit_calibrator(logits: np.ndarray, labels: np.ndarray, method: str = "platt") -> Calibrator:
    """Fit on held-out (validation) logits and labels, never on the rows a metric is reported on."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if method == "platt":
        return Calibrator("platt", platt=LogisticRegression(C=1e6).fit(logits[:, None], labels))
    if method == "isotonic":
        return Calibrator("isotonic", isotonic=IsotonicRegression(
            y_min=1e-7, y_max=1 - 1e-7, out_of_bounds="clip").fit(logits, labels))
    raise ValueError(f"calibration method {method!r} unknown; use 'platt' or 'isotonic'")
