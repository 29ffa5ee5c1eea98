"""Batch scoring for the simulator's auction: calibrated ctcvr/vtcvr for many (request, candidate) rows.

A `Ranker` bundles the fitted feature builder, the DCN with its calibrators and the predicted lists
its LLM features read (indexed once, see `ranking.llm_features.PredictedLists`); one `score` call
featurises and scores a whole batch of candidates. Fresh predictions (the nightly re-inference)
join the indexed lists through `update_predictions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from ranking.features import FeatureBuilder
from ranking.train import FittedDCN


@dataclass
class Ranker:
    """Feature builder + DCN(s) + the prediction tables behind its LLM features (None: no LLM features).

    Single-task configs hold one DCN per task, multi-task configs one DCN with a head per task.
    """

    builder: FeatureBuilder
    models: list[FittedDCN]
    predictions: pl.DataFrame | None = None
    interests: pl.DataFrame | None = None

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

    def score(self, candidates: pl.DataFrame) -> pl.DataFrame:
        """`request_id, item_id, p_<task>` per candidate row; rows need `SCORING_COLUMNS`.

        Without a `position` column candidates are scored at the top slot (0): the auction applies
        position effects after it has placed them.
        """
        if "position" not in candidates.columns:
            candidates = candidates.with_columns(position=pl.lit(0, dtype=pl.Int16))
        table = self.builder.transform(candidates, self.lists_)
        probabilities = {task: values for model in self.models for task, values in model.probabilities(table).items()}
        return candidates.select("request_id", "item_id").with_columns(
            pl.Series(f"p_{task}", values, dtype=pl.Float32) for task, values in probabilities.items())

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


