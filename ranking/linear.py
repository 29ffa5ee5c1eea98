"""Logistic regression on one-hot sparse IDs and bounded dense features (`ranking.scaling`): the
no-crosses reference.

The DCN's cross and deep layers must beat it for their interactions to be worth their cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from sklearn.linear_model import LogisticRegression

from ranking.features import FeatureTable
from ranking.scaling import DenseScaler


@dataclass
class FittedLogistic:
    """One logistic regression per task over the one-hot design matrix."""

    tasks: tuple[str, ...]
    offsets: np.ndarray
    width: int
    scaler: DenseScaler
    models: dict[str, LogisticRegression]

    def design(self, table: FeatureTable) -> scipy.sparse.csr_matrix:
        rows = len(table)
        columns = np.minimum(table.sparse, np.diff(self.offsets) - 1) + self.offsets[:-1]
        one_hot = scipy.sparse.csr_matrix((np.ones(columns.size), columns.ravel(),
                                           np.arange(0, columns.size + 1, columns.shape[1])),
                                          shape=(rows, self.width))
        dense = scipy.sparse.csr_matrix(self.scaler.transform(table.dense))
        return scipy.sparse.hstack([one_hot, dense], format="csr")

    def probabilities(self, table: FeatureTable) -> dict[str, np.ndarray]:
        design = self.design(table)
        return {task: self.models[task].predict_proba(design)[:, 1] for task in self.tasks}


def fit_logistic(train: FeatureTable, vocab_sizes: dict[str, int], tasks: tuple[str, ...],
                 regularisation: float = 1.0) -> FittedLogistic:
    """L2-regularised logistic regression per task (`regularisation` is scikit-learn's C)."""
    sizes = np.array([vocab_sizes[name] for name in train.sparse_names])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    fitted = FittedLogistic(tasks=tuple(tasks), offsets=offsets, width=int(offsets[-1]),
                            scaler=DenseScaler.fit(train.dense), models={})
    design = fitted.design(train)
    for task in tasks:
        fitted.models[task] = LogisticRegression(C=regularisation, max_iter=500).fit(design, train.labels[task])
    return fitted
