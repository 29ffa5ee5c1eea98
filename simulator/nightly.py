"""The nightly batch job of the simulated market (paper 3.7): re-infer only users with new activity.

`NightlyRefresh` keeps the event log growing with the market's clicks and conversions and, each
midnight, asks a predictor for the users active that day; the market passes the fresh
predictions to the generators (and the ranker) that serve them, so tomorrow's LLM candidates
follow today's behaviour. The predictor is any `(day, user_ids, events) -> PREDICTIONS` callable:
the LLM's batch inference (`LlmPredictor`), or the history baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from simulator.baselines import history_predictions
from synthetic_data import schema
from synthetic_data.schema import World

Predictor = Callable[[date, np.ndarray, pl.DataFrame], pl.DataFrame]


class NightlyRefresh:
    """`NightlyJob` that re-infers the day's active users with `predict` over all events so far."""

    def __init__(self, predict: Predictor, events: pl.DataFrame):
        self.predict = predict
        self.initial_events = self.events_ = events.select(list(schema.EVENTS))

    def reset(self) -> None:
        """Forget simulated events (each simulated market starts from the world's log)."""
        self.events_ = self.initial_events

    def __call__(self, day: date, new_events: pl.DataFrame) -> pl.DataFrame:
        if new_events.height == 0:
            return schema.empty(schema.PREDICTIONS)
        offset = int(self.events_["event_id"].max() or 0) + 1
        self.events_ = pl.concat([self.events_, new_events.select(list(schema.EVENTS))
                                  .with_columns(pl.col("event_id") + offset)])
        users = new_events["user_id"].unique().sort().to_numpy()
        fresh = schema.validate(self.predict(day, users, self.events_), schema.PREDICTIONS, "nightly predictions")
        return fresh.filter(pl.col("user_id").is_in(users.tolist())).with_columns(pl.lit(day).alias("anchor_date"))


class LlmPredictor:
    """The LLM's batch inference as a nightly predictor (paper 3.7): prompts compiled from world +
    simulated events at the day that ended, for at most `max_users` of the day's active users (a
    seeded sample: the inference budget), decoded with the run's trained model of `method`.

    Users not re-inferred keep their last list; parse and name-mapping counts add up in `counts_`.
    """

    def __init__(self, run: Path, world: World, preset: str = "small", method: str = "grpo_ranked",
                 max_users: int = 100, seed: int = 0):
        from llm_predictor.config import trained_config
        from llm_predictor.predict import predict_backend
        from llm_predictor.stages import model_dir
        from synthetic_data.run_folder import RunFolder

        from llm_predictor.choice import resolve_method

        self.folder, self.world = RunFolder(run), world
        self.method = resolve_method(self.folder, method)
        self.max_users, self.seed = max_users, seed
        directory = model_dir(self.folder, self.method)
        if not directory.exists():
            raise FileNotFoundError(f"{directory} is missing: train the LLM (`adsim llm ...`) before --nightly llm")
        self.config = trained_config(self.folder, self.method, preset)  # prompts as the model was trained on
        self.backend = predict_backend(directory, self.config.predict)
        self.counts_: dict[str, int] = {}

    def __call__(self, day: date, user_ids: np.ndarray, events: pl.DataFrame) -> pl.DataFrame:
        from llm_predictor.stages import predict_users

        chosen = np.sort(np.random.default_rng([self.seed, day.toordinal()]).permutation(user_ids)[:self.max_users])
        keys = pl.DataFrame({"user_id": chosen, "anchor_date": [day] * len(chosen)},
                            schema={"user_id": pl.Int64, "anchor_date": pl.Date})
        _, predictions, counts = predict_users(self.folder, replace(self.world, events=events), self.config,
                                               self.method, keys, None, show_progress=False, backend=self.backend)
        found = asdict(counts)
        for name, value in {**found.pop("issues"), **found}.items():  # issue kinds, then the totals
            self.counts_[name] = self.counts_.get(name, 0) + value
        return predictions


def history_predictor(k: int = 5) -> Predictor:
    """The history baseline as a nightly predictor: each active user's most-converted advertisers (a
    partial of a module function, so a stack holding it pickles for a Ray worker)."""
    return partial(_history_predict, k=k)


def _history_predict(day: date, user_ids: np.ndarray, events: pl.DataFrame, k: int) -> pl.DataFrame:
    return history_predictions(events, k=k, user_ids=user_ids)
