"""What the simulator calls: candidate generators, a scorer, the true user response, the nightly job.

Small `typing.Protocol`s (STYLE: small explicit interfaces) so that retrieval, ranking, the world's
response model and the LLM batch job plug in without the simulator importing their internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl

from synthetic_data import schema

# One ad request per row, the input of every candidate generator (built by simulator/traffic.py).
REQUESTS = {
    "request_id": pl.Int64,
    "user_id": pl.Int64,
    "ts": schema.UTC_TS,
    "day": pl.Date,  # the request's calendar day; predictions of anchor dates before it are usable
    "surface": schema.Surface,
    "query_category_id": pl.Int32,  # search: the category searched for; null elsewhere
    "context_item_id": pl.Int32,  # related pins: the Pin being viewed; null elsewhere
}


class CandidateGenerator(Protocol):
    """A retrieval source: candidates (schema.CANDIDATES, column `source` = its `source`) for a batch.

    Its answer may depend only on the requests and on its own state, and that state may change only
    between days (`update_predictions`, `reset_predictions`): the market asks for a day's next batch
    on another thread while the current one is auctioned (simulator/engine.py, `Market.retrieve`).
    """

    source: str

    def generate(self, requests: pl.DataFrame) -> pl.DataFrame: ...


class Scorer(Protocol):
    """The ranking models: calibrated per-impression ctcvr and vtcvr probabilities.

    `candidates` holds the CANDIDATES columns joined with their request's REQUESTS columns;
    the answer is a frame with `ctcvr` and `vtcvr` (Float64), one row per candidate, same order.
    """

    def score(self, candidates: pl.DataFrame) -> pl.DataFrame: ...


class PreparingScorer(Scorer, Protocol):
    """A scorer with work it can do ahead: `prepare` gets a batch's blended candidates (the rows
    `score` will get are among them, fewer where an advertiser is out of budget) on the market's
    lookahead thread, before the current batch's auction, so it may read no market state; `score`
    then gets its result as `prepared`. Its answers must equal those of `score` alone."""

    def prepare(self, candidates: pl.DataFrame) -> object: ...

    def score(self, candidates: pl.DataFrame, prepared: object = None) -> pl.DataFrame: ...


@dataclass(frozen=True)
class TrueRates:
    """Hidden response of users to shown ads (never shown to a model), aligned with the request."""

    p_click: np.ndarray  # P(click) of a seen ad at its position (position bias included)
    p_conversion: np.ndarray  # P(conversion | click)
    p_view_conversion: np.ndarray  # P(view-through conversion | seen, no click)
    dwell_log_mean: np.ndarray  # log-normal dwell seconds after a click: log-mean ...
    dwell_log_sd: float  # ... and log-sd


class ResponseModel(Protocol):
    """The world's true user response to an ad (reads `*_truth` tables; only the simulator calls it).

    `surfaces` are indices into schema.SURFACES, `positions` 0-based slots, `days` datetime64[D].
    """

    def true_rates(self, user_ids: np.ndarray, item_ids: np.ndarray, surfaces: np.ndarray,
                   positions: np.ndarray, days: np.ndarray) -> TrueRates: ...


class PredictionConsumer(Protocol):
    """A candidate generator or scorer that reads advertiser predictions and takes fresh ones nightly
    (the LLM-advertiser generator's targeting, the ranker's LLM features); `reset_predictions`
    restores its initial ones when a new market (arm) starts."""

    def update_predictions(self, predictions: pl.DataFrame) -> None: ...

    def reset_predictions(self) -> None: ...


class NightlyJob(Protocol):
    """The nightly LLM batch job: re-infer users with new activity (paper 3.7, incremental updates).

    Called at each simulated midnight with the day that ended and that day's new events
    (schema.EVENTS: clicks as `engagement`, arrived conversions as `attributed_conversion`);
    returns the fresh predictions (schema.PREDICTIONS, anchored at that day), which the market
    hands to every generator, and the scorer, that is a `PredictionConsumer`. `reset` forgets simulated activity
    when a new market (arm) starts, so arms never see each other's events.
    """

    def __call__(self, day, new_events: pl.DataFrame) -> pl.DataFrame: ...

    def reset(self) -> None: ...
