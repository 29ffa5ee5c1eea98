"""Fixtures: the tiny world's true response and the model-free reference stack."""

from __future__ import annotations

import pytest

from simulator.baselines import (AdvertiserFilterGenerator, HistoryScorer, PopularityGenerator,
                                 history_predictions)


@pytest.fixture(scope="session")
def tiny_response(tiny_world):
    from simulator.world_response import WorldResponse
    from synthetic_data.presets import preset

    return WorldResponse.from_world(tiny_world, preset("tiny"))


@pytest.fixture(scope="session")
def tiny_stack(tiny_world, tiny_response):
    from simulator.engine import Stack

    predictions = history_predictions(tiny_world.events)
    return Stack(generators=(PopularityGenerator(tiny_world), AdvertiserFilterGenerator(tiny_world, predictions)),
                 scorer=HistoryScorer(tiny_world), response=tiny_response)
