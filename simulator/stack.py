"""Assembles the models a simulated market runs (DESIGN: `simulator/` is the only package that wires
every stage): the world's true response, candidate generators, the scorer, the nightly job.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from simulator.baselines import AdvertiserFilterGenerator, HistoryScorer, PopularityGenerator, history_predictions
from simulator.engine import Stack
from simulator.world_response import WorldResponse
from synthetic_data import schema
from synthetic_data.config import WorldConfig
from synthetic_data.schema import World

BASELINE_SOURCES = ("main", "llm")  # main: category popularity; llm: items of predicted advertisers


def load_predictions(path: Path | None, world: World) -> tuple[pl.DataFrame, str]:
    """A PREDICTIONS table from `path`, or the history baseline (each user's most-converted advertisers)."""
    if path is None:
        return history_predictions(world), "history baseline (most-converted advertisers)"
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `adsim llm predict` first or drop --predictions")
    return schema.validate(pl.read_parquet(path), schema.PREDICTIONS, str(path)), str(path)


def baseline_stack(world: World, world_config: WorldConfig, predictions: pl.DataFrame) -> Stack:
    """The model-free stack: popularity + predicted-advertiser generators, history scorer, true response."""
    return Stack(generators=(PopularityGenerator(world, source=BASELINE_SOURCES[0]),
                             AdvertiserFilterGenerator(world, predictions, source=BASELINE_SOURCES[1])),
                 scorer=HistoryScorer(world), response=WorldResponse.from_world(world, world_config))
