"""The world's true response model (synthetic_data/response.py) behind the simulator's protocol.

Converts the simulator's calendar days to the world's day indices; drift epochs past the
world's horizon keep the user's last interests.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from synthetic_data import response
from synthetic_data.config import WorldConfig
from synthetic_data.schema import World
from simulator.protocols import TrueRates


class WorldResponse:
    """`ResponseModel` over a built `synthetic_data.response.ResponseState`."""

    def __init__(self, state: response.ResponseState):
        self.state = state

    @classmethod
    def from_world(cls, world: World, world_config: WorldConfig) -> WorldResponse:
        start = date.fromisoformat(world_config.start_date)
        return cls(response.build_response_state(world, start, world_config.users.drift_period_days))

    def true_rates(self, user_ids: np.ndarray, item_ids: np.ndarray, surfaces: np.ndarray,
                   positions: np.ndarray, days: np.ndarray) -> TrueRates:
        day_index = (np.asarray(days, dtype="datetime64[D]") - np.datetime64(self.state.start_date, "D")).astype(np.int64)
        rates = response.true_rates(self.state, user_ids, item_ids, np.asarray(surfaces, dtype=np.int64),
                                    positions, day_index)
        return TrueRates(p_click=rates.p_click, p_conversion=rates.p_conversion,
                         p_view_conversion=rates.p_view_conversion, dwell_log_mean=rates.dwell_log_mean,
                         dwell_log_sd=self.state.config.dwell_log_sd)
