"""The nightly batch job of the simulated market (paper 3.7): re-infer only users with new activity.

`NightlyRefresh` keeps the event log growing with the market's clicks and conversions and, each
midnight, asks a predictor for the users active that day; the market passes the fresh
predictions to the generators that serve them, so tomorrow's LLM candidates follow today's
behaviour. The predictor is any `(day, user_ids, events) -> PREDICTIONS` function: the LLM's
batch inference, or the history baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import numpy as np
import polars as pl

from simulator.baselines import history_predictions
from synthetic_data import schema

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


def history_predictor(k: int = 5) -> Predictor:
    """The history baseline as a nightly predictor: each active user's most-converted advertisers."""
    def predict(day: date, user_ids: np.ndarray, events: pl.DataFrame) -> pl.DataFrame:
        return history_predictions(events, k=k, user_ids=user_ids)
    return predict
