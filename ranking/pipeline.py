"""`adsim rank train` end to end: features from the observable world, DCN(s), baselines, test metrics.

Splits are by time (train, then validation for early stopping and calibration, then test for every
reported figure); the world is read without its `_truth` tables.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ranking.config import RankingConfig
from ranking.features import FeatureBuilder, FeatureTable, split_by_time
from ranking.gbdt import fit_lightgbm
from ranking.linear import fit_logistic
from ranking.metrics import evaluate, expected_calibration_error
from ranking.scoring import Ranker, llm_feature_coverage
from ranking.train import fit_dcn
from synthetic_data.schema import World


def fit_builder(world: World, config: RankingConfig) -> FeatureBuilder:
    return FeatureBuilder(config.features).fit(world.users, world.items, world.advertisers,
                                               world.categories, world.events)


def task_groups(config: RankingConfig) -> list[tuple[str, ...]]:
    """One group of all tasks for a multi-task DCN, else one group per task."""
    return [tuple(config.tasks)] if config.multi_task else [(task,) for task in config.tasks]


def _test_metrics(test: FeatureTable, probabilities: dict[str, np.ndarray]) -> dict[str, dict]:
    return {task: evaluate(test.labels[task], values) for task, values in probabilities.items()}


def require_both_classes(splits: dict[str, pl.DataFrame], tasks: tuple[str, ...]) -> None:
    """Fail early, naming the split and task, where a label is constant (nothing to fit or calibrate)."""
    for name, rows in splits.items():
        for task in tasks:
            positives = int(rows[f"is_{task}"].sum())
            if positives in (0, rows.height):
                raise ValueError(
                    f"the {name} split has {positives} positive {task} labels in {rows.height:,} impressions: "
                    f"a model cannot be fit or calibrated; log more impressions (impressions.n_days, "
                    f"requests_per_user_day), cover more users, or change features.test_days/validation_days")


def train_ranker(world: World, impressions: pl.DataFrame, predictions: pl.DataFrame | None,
                 interests: pl.DataFrame | None, config: RankingConfig, seed: int,
                 progress: bool = False) -> tuple[Ranker, dict]:
    """Train the DCN ranker and its baselines; returns the ranker and held-out test metrics."""
    builder = fit_builder(world, config)
    splits = split_by_time(impressions, config.features)
    require_both_classes(splits, tuple(config.tasks))
    tables = {name: builder.transform(rows, predictions, interests, tuple(config.tasks))
              for name, rows in splits.items()}
    test = tables["test"]
    models = [fit_dcn(tables["train"], tables["validation"], builder.vocab_sizes_, group, config.dcn,
                      config.train, seed, progress) for group in task_groups(config)]
    coverage = llm_feature_coverage(tables["train"], splits["train"]["user_id"].to_numpy())
    ranker = Ranker(builder=builder, models=models, predictions=predictions, interests=interests,
                    training_coverage=coverage)
    metrics: dict = {"rows": {name: len(table) for name, table in tables.items()}, "llm_feature_coverage": coverage,
                     "dense_features": list(test.dense_names), "dcn": {}, "dcn_history": {}}
    for model in models:
        logits = model.logits(test)
        calibrated = model.probabilities(test)
        for i, task in enumerate(model.tasks):
            raw = 1 / (1 + np.exp(-logits[:, i].astype(np.float64)))
            metrics["dcn"][task] = {**evaluate(test.labels[task], calibrated[task]),
                                    "ece_before_calibration": expected_calibration_error(test.labels[task], raw)}
            metrics["dcn_history"][task] = model.history
    if "lightgbm" in config.reference_models:
        booster = fit_lightgbm(tables["train"], tables["validation"], tuple(config.tasks), config.lightgbm, seed)
        metrics["lightgbm"] = _test_metrics(test, booster.probabilities(test))
    logistic = fit_logistic(tables["train"], builder.vocab_sizes_, tuple(config.tasks))
    metrics["logistic_regression"] = _test_metrics(test, logistic.probabilities(test))
    return ranker, metrics
