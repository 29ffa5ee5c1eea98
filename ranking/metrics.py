"""Offline metrics of a conversion model (paper Table 5): log loss, ROC-AUC, PR-AUC and calibration error."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-mass bins: the row-weighted mean |observed rate - mean prediction| per bin.

    Equal-mass bins suit sparse conversions, where equal-width bins leave almost every row in the first.
    """
    order = np.argsort(probabilities, kind="stable")
    gaps = [abs(labels[chunk].mean() - probabilities[chunk].mean()) * len(chunk)
            for chunk in np.array_split(order, bins) if len(chunk)]
    return float(np.sum(gaps) / len(labels))


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Log loss, AUC, PR-AUC, ECE and the mean prediction vs the positive rate on one labelled set."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    if labels.min() == labels.max():
        raise ValueError(f"the evaluation set has only {'positive' if labels[0] else 'negative'} labels "
                         f"({len(labels)} rows): AUC is undefined; log more impressions or test days")
    return {
        "log_loss": float(log_loss(labels, probabilities, labels=[0.0, 1.0])),
        "auc": float(roc_auc_score(labels, probabilities)),
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "ece": expected_calibration_error(labels, probabilities),
        "mean_prediction": float(probabilities.mean()),
        "positive_rate": float(labels.mean()),
        "rows": int(len(labels)),
        "positives": int(labels.sum()),
    }
