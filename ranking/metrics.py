"""Offline metrics of a conversion model (paper Table 5): log loss, ROC-AUC, PR-AUC and calibration error,
once on a test set or under many bootstrap weightings of it at once."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

LOG_LOSS_FLOOR = 1e-7  # log loss clips probabilities to [floor, 1 - floor]; rank metrics never clip


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-mass bins: the row-weighted mean |observed rate - mean prediction| per bin.

    Equal-mass bins suit sparse conversions, where equal-width bins leave almost every row in the first.
    """
    order = np.argsort(probabilities, kind="stable")
    gaps = [abs(labels[chunk].mean() - probabilities[chunk].mean()) * len(chunk)
            for chunk in np.array_split(order, bins) if len(chunk)]
    return float(np.sum(gaps) / len(labels))


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Log loss, AUC, PR-AUC, ECE and the mean prediction vs the positive rate on one labelled set.

    Only the log loss clips (to [1e-7, 1 - 1e-7], so a confident miss costs 16 nats, not infinity):
    clipping before AUC or PR-AUC would tie every score below 1e-7 and so change the ranking.
    """
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.min() == labels.max():
        raise ValueError(f"the evaluation set has only {'positive' if labels[0] else 'negative'} labels "
                         f"({len(labels)} rows): AUC is undefined; log more impressions or test days")
    return {
        "log_loss": float(log_loss(labels, np.clip(probabilities, LOG_LOSS_FLOOR, 1 - LOG_LOSS_FLOOR),
                                   labels=[0.0, 1.0])),
        "auc": float(roc_auc_score(labels, probabilities)),
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "ece": expected_calibration_error(labels, probabilities),
        "mean_prediction": float(probabilities.mean()),
        "positive_rate": float(labels.mean()),
        "rows": int(len(labels)),
        "positives": int(labels.sum()),
    }


def user_weighted_metrics(labels: np.ndarray, probabilities: np.ndarray, user_index: np.ndarray,
                          user_weights: np.ndarray) -> dict[str, np.ndarray]:
    """Log loss, ROC-AUC and PR-AUC of one score vector under each row of `user_weights`, vectorised.

    `labels`, `probabilities`, `user_index` (0-based): [rows]; `user_weights`: [replicates, users],
    e.g. how often a bootstrap drew each user, every row of a user weighing the same. Each entry
    equals sklearn's log_loss / roc_auc_score / average_precision_score with sample_weight
    `user_weights[r, user_index]` (tied scores share one threshold), at the cost of two sparse
    products instead of a sort per replicate. Returns {metric: [replicates]}; AUC and PR-AUC are
    NaN for a replicate without positive or without negative weight.
    """
    is_positive = np.asarray(labels).astype(bool)
    if is_positive.all() or not is_positive.any():
        raise ValueError(f"the labels are all {'positive' if is_positive.all() else 'negative'} "
                         f"({len(is_positive)} rows): AUC is undefined")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    user_weights = np.atleast_2d(np.asarray(user_weights, dtype=np.float64))
    users = user_weights.shape[1]
    # Every threshold that matters is a distinct positive score u_1 > ... > u_m. A row falls in bucket
    # 2j if j of them lie above its score, and in 2j + 1 if it ties u_(j+1).
    positive_scores = np.unique(probabilities[is_positive])[::-1]
    above = np.searchsorted(-positive_scores, -probabilities, side="left")
    ties = positive_scores[np.minimum(above, len(positive_scores) - 1)] == probabilities
    bucket = 2 * above + ties
    negative_rows = sparse.csr_array((np.ones(int((~is_positive).sum())),
                                      (bucket[~is_positive], user_index[~is_positive])),
                                     shape=(2 * len(positive_scores) + 1, users))
    positive_rows = sparse.csr_array((np.ones(int(is_positive.sum())), (above[is_positive], user_index[is_positive])),
                                     shape=(len(positive_scores), users))
    negatives = np.cumsum((negative_rows @ user_weights.T).T, axis=1)  # [replicates, buckets], at or above
    positives = (positive_rows @ user_weights.T).T  # [replicates, distinct positive scores]
    total_negative, total_positive = negatives[:, -1], positives.sum(axis=1)
    above_negatives, at_or_above_negatives = negatives[:, 0:-1:2], negatives[:, 1::2]
    at_or_above_positives = positives.cumsum(axis=1)
    # a positive outranks the negatives below its score and ties half of those at it
    outranked = positives * (total_negative[:, None] - (above_negatives + at_or_above_negatives) / 2)
    precision = np.divide(at_or_above_positives, at_or_above_positives + at_or_above_negatives,
                          out=np.zeros_like(positives), where=at_or_above_positives > 0)
    has_both = (total_positive > 0) & (total_negative > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(has_both, outranked.sum(axis=1) / (total_positive * total_negative), np.nan)
        pr_auc = np.where(has_both, (positives * precision).sum(axis=1) / total_positive, np.nan)
    clipped = np.clip(probabilities, LOG_LOSS_FLOOR, 1 - LOG_LOSS_FLOOR)
    row_loss = -np.where(is_positive, np.log(clipped), np.log1p(-clipped))
    loss_per_user, rows_per_user = np.bincount(user_index, row_loss, users), np.bincount(user_index, None, users)
    loss = user_weights @ loss_per_user / (user_weights @ rows_per_user)
    return {"log_loss": loss, "auc": auc, "pr_auc": pr_auc}
