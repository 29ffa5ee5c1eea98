"""Fixtures: the tiny world's true response and a small real stack of test components."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from components import (AdvertiserFilterGenerator, LogisticScorer, PopularityGenerator,  # noqa: E402
                        popularity_predictions)


@pytest.fixture(scope="session")
def tiny_response(tiny_world):
    from simulator.world_response import WorldResponse
    from synthetic_data.presets import preset

    return WorldResponse.from_world(tiny_world, preset("tiny"))


@pytest.fixture(scope="session")
def tiny_stack(tiny_world, tiny_response):
    from simulator.engine import Stack

    predictions = popularity_predictions(tiny_world)
    return Stack(generators=(PopularityGenerator(tiny_world), AdvertiserFilterGenerator(tiny_world, predictions)),
                 scorer=LogisticScorer(tiny_world), response=tiny_response)
