"""Batch scoring for the simulator's auction: calibrated ctcvr/vtcvr for many (request, candidate) rows.

A `Ranker` bundles the fitted feature builder, the DCN with its calibrators and the predicted lists
its LLM features read (indexed once, see `ranking.llm_features.PredictedLists`); one `score` call
featurises and scores a whole batch of candidates. Fresh predictions (the nightly re-inference)
join the indexed lists through `update_predictions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ranking.features import FeatureBuilder, FeatureTable
from ranking.train import FittedDCN

# Served and trained shares of users with a list further apart than this factor flag the LLM
# features as served outside the population they were learnt on (issue #13, fault 0).
MAX_COVERAGE_RATIO = 3.0


def llm_feature_coverage(table: FeatureTable, user_ids: np.ndarray) -> dict:
    """What a feature table's LLM features cover: users and rows with a list, rows whose advertiser is
    listed, and positives per task among those rows (`user_ids` aligned with the rows)."""
    if "has_prediction" not in table.dense_names:
        return {}
    has_list = table.dense[:, table.dense_names.index("has_prediction")] > 0
    is_listed = table.dense[:, table.dense_names.index("is_predicted_advertiser")] > 0
    users = np.asarray(user_ids)
    return {"users_with_list_share": float(np.isin(np.unique(users), users[has_list]).mean()) if len(users) else 0.0,
            "rows_with_list_share": float(has_list.mean()) if len(has_list) else 0.0,
            "rows_listed_share": float(is_listed.mean()) if len(is_listed) else 0.0,
            "listed_positives": {task: int(labels[is_listed].sum()) for task, labels in table.labels.items()}}


@dataclass
class Ranker:
    """Feature builder + DCN(s) + the prediction tables behind its LLM features (None: no LLM features).

    Single-task configs hold one DCN per task, multi-task configs one DCN with a head per task.
    """

    builder: FeatureBuilder
    models: list[FittedDCN]
    predictions: pl.DataFrame | None = None
    interests: pl.DataFrame | None = None
    # what the LLM features' training rows held (`llm_feature_coverage`); empty without LLM features
    training_coverage: dict = field(default_factory=dict)

    def __post_init__(self):
        self._index_predictions()

    def _index_predictions(self) -> None:
        self.initial_lists_ = (None if self.predictions is None
                               else self.builder.predicted_lists(self.predictions, self.interests))
        self.lists_ = self.initial_lists_

    def update_predictions(self, predictions: pl.DataFrame) -> None:
        """Add fresh lists (new anchor dates) to those the LLM features read; a ranker without LLM
        features has no use for them."""
        if self.lists_ is not None:
            self.lists_ = self.lists_.with_predictions(predictions)

    def serve_from(self, predictions: pl.DataFrame) -> None:
        """Make the lists a simulated market starts from (and resets to) the training lists plus
        `predictions`, e.g. the serving population's lists at the world's last day."""
        if self.initial_lists_ is not None:
            self.initial_lists_ = self.initial_lists_.with_predictions(predictions)
            self.lists_ = self.initial_lists_

    def reset_predictions(self) -> None:
        """Back to the lists it was trained with (each simulated market starts from them)."""
        self.lists_ = self.initial_lists_

    def coverage_check(self, user_ids: np.ndarray) -> dict:
        """The share of `user_ids` (a market's population) with a served list beside the share of
        training users that had one; `is_mismatch` when they differ by more than
        `MAX_COVERAGE_RATIO` either way (the features would be served where they were not learnt)."""
        if self.lists_ is None:
            return {}
        served = (float(np.isin(np.asarray(user_ids, dtype=np.int64), self.lists_.user_ids()).mean())
                  if len(user_ids) else 0.0)
        trained = float(self.training_coverage.get("users_with_list_share", float("nan")))
        ratio = max(served, trained) / max(min(served, trained), 1e-12)
        return {"trained_users_with_list_share": trained, "served_users_with_list_share": served,
                "coverage_ratio": ratio, "is_mismatch": bool(not ratio <= MAX_COVERAGE_RATIO)}

    def score(self, candidates: pl.DataFrame) -> pl.DataFrame:
        """`request_id, item_id, p_<task>` per candidate row; rows need `SCORING_COLUMNS`.

        Without a `position` column candidates are scored at the top slot (0): the auction applies
        position effects after it has placed them.
        """
        probabilities = self.table_probabilities(self.featurise(candidates))
        return candidates.select("request_id", "item_id").with_columns(
            pl.Series(f"p_{task}", values, dtype=pl.Float32) for task, values in probabilities.items())

    def featurise(self, candidates: pl.DataFrame) -> FeatureTable:
        """The features `score` scores (position 0 where the rows have none)."""
        if "position" not in candidates.columns:
            candidates = candidates.with_columns(position=pl.lit(0, dtype=pl.Int16))
        return self.builder.transform(candidates, self.lists_)

    def table_probabilities(self, table: FeatureTable) -> dict[str, np.ndarray]:
        """Calibrated probabilities per task ([rows] float64) of featurised rows (`featurise`)."""
        return {task: values for model in self.models for task, values in model.probabilities(table).items()}

    def save(self, path: Path) -> Path:
        torch.save(self, path)
        return path

    def __getstate__(self) -> dict:  # the indexes are rebuilt on load, not written
        return {name: value for name, value in self.__dict__.items() if name not in ("initial_lists_", "lists_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index_predictions()


def load_ranker(path: Path) -> Ranker:
    """Load a ranker written by `Ranker.save` (a pickle: load only files this project wrote)."""
    ranker = torch.load(path, weights_only=False)
    if not isinstance(ranker, Ranker):
        raise TypeError(f"{path} holds a {type(ranker).__name__}, not a Ranker; write it with `adsim rank train`")
    return ranker


