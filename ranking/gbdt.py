"""The LightGBM baseline of the lift experiment: the same features as the DCN, one booster per task.

User and item IDs are left out (trees cannot use 10^4-level categoricals well); the other sparse
IDs enter as integer codes or, with `categorical_ids`, as native categorical features.
Probabilities are Platt-calibrated on the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm
import numpy as np

from ranking.calibration import Calibrator, fit_calibrator
from ranking.config import LightGBMConfig
from ranking.features import FeatureTable

EXCLUDED_SPARSE = ("user_id", "item_id")


def feature_matrix(table: FeatureTable) -> tuple[np.ndarray, list[str], list[int]]:
    """The trees' input: sparse ID codes (not user, item), dense features; names; the ID columns."""
    keep = [i for i, name in enumerate(table.sparse_names) if name not in EXCLUDED_SPARSE]
    matrix = np.hstack([table.sparse[:, keep].astype(np.float32), table.dense])
    names = [table.sparse_names[i] for i in keep] + list(table.dense_names)
    return matrix, names, list(range(len(keep)))


@dataclass
class FittedLightGBM:
    """One booster and one calibrator per task."""

    tasks: tuple[str, ...]
    boosters: dict[str, lightgbm.Booster]
    calibrators: dict[str, Calibrator]

    def raw_scores(self, table: FeatureTable) -> dict[str, np.ndarray]:
        matrix, _, _ = feature_matrix(table)
        return {task: self.boosters[task].predict(matrix, raw_score=True) for task in self.tasks}

    def probabilities(self, table: FeatureTable) -> dict[str, np.ndarray]:
        return {task: self.calibrators[task](score) for task, score in self.raw_scores(table).items()}


def fit_lightgbm(train: FeatureTable, validation: FeatureTable, tasks: tuple[str, ...],
                 config: LightGBMConfig, seed: int) -> FittedLightGBM:
    """Boost on `train` with early stopping on `validation`, then calibrate on `validation`."""
    matrix, names, categorical = feature_matrix(train)
    validation_matrix, _, _ = feature_matrix(validation)
    params = {
        "objective": "binary", "num_leaves": config.num_leaves, "learning_rate": config.learning_rate,
        "bagging_fraction": config.bagging_fraction, "bagging_freq": 1 if config.bagging_fraction < 1 else 0,
        "feature_fraction": config.feature_fraction, "min_child_samples": config.min_child_samples,
        "seed": seed, "deterministic": True, "verbosity": -1,
    }
    categorical = categorical if config.categorical_ids else []
    boosters, calibrators = {}, {}
    for task in tasks:
        train_set = lightgbm.Dataset(matrix, label=train.labels[task].astype(np.float32), feature_name=names,
                                     categorical_feature=categorical, free_raw_data=False)
        validation_set = lightgbm.Dataset(validation_matrix, label=validation.labels[task].astype(np.float32),
                                          reference=train_set)
        booster = lightgbm.train(params, train_set, num_boost_round=config.max_rounds,
                                 valid_sets=[validation_set],
                                 callbacks=[lightgbm.early_stopping(config.early_stopping_rounds, verbose=False)])
        boosters[task] = booster
        calibrators[task] = fit_calibrator(booster.predict(validation_matrix, raw_score=True),
                                           validation.labels[task])
    return FittedLightGBM(tasks=tuple(tasks), boosters=boosters, calibrators=calibrators)
