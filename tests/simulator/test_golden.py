"""Golden run: a short fixed-seed market whose totals are recorded; a change in them must be deliberate.

If you changed the world generator, the response model or the simulator on purpose, re-record
GOLDEN from the failure message (and say why in the commit).
"""

import pytest

from blending.blend import BlendConfig
from simulator.config import SimulationConfig
from simulator.engine import simulate
from simulator.stack import baseline_stack, load_predictions

GOLDEN = {"requests": 833.0, "impressions": 2569.0, "clicks": 129.0, "spend": 687.4214, "conversions": 33.0,
          "click_conversions": 26.0, "conversion_value": 1642.5566}


def test_fixed_seed_market_reproduces_its_recorded_totals(tiny_world):
    from synthetic_data.presets import preset

    stack = baseline_stack(tiny_world, preset("tiny"), load_predictions(None, tiny_world)[0])
    result = simulate(tiny_world, stack, BlendConfig({"main": 30, "llm": 10}, max_candidates=30),
                      tiny_world.users["user_id"].to_numpy()[:200], SimulationConfig(days=1, seed=11))
    totals = {k: round(v, 4) for k, v in result.user_metrics.drop("user_id").sum().row(0, named=True).items()}
    assert totals == pytest.approx(GOLDEN, rel=1e-6), f"golden totals changed: {totals}"
