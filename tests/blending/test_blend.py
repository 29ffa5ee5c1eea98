import polars as pl
import pytest

from blending.blend import BlendConfig, blend
from synthetic_data import schema
from synthetic_data.config_io import ConfigError


def _candidates(rows):
    columns = ["request_id", "item_id", "advertiser_id", "source", "score"]
    return schema.conform(pl.DataFrame(rows, schema=columns, orient="row"), schema.CANDIDATES)


def test_quota_interleave_dedup_and_advertiser_cap():
    candidates = _candidates([
        (1, 10, 1, "main", 0.9), (1, 11, 1, "main", 0.8), (1, 12, 1, "main", 0.7),
        (1, 10, 1, "llm", 0.95), (1, 13, 3, "llm", 0.5), (1, 14, 4, "llm", 0.1),
        (2, 10, 1, "main", 0.1),
    ])
    result = blend(candidates, BlendConfig({"main": 3, "llm": 2}))
    # llm keeps its top 2 (item 14 is over quota); item 10 is credited to main (priority 1/6 < 1/4);
    # item 12 is advertiser 1's third candidate (cap 2).
    assert result.select("request_id", "item_id", "source").rows() == [
        (1, 10, "main"), (1, 11, "main"), (1, 13, "llm"), (2, 10, "main")]
    assert result["blend_position"].to_list() == [0, 1, 2, 0]


def test_quota_zero_switches_source_off_and_total_cap_prefers_bigger_quota():
    candidates = _candidates(
        [(1, i, i, "main", 1.0 - i / 100) for i in range(10)]
        + [(1, 100 + i, 100 + i, "llm", 1.0 - i / 100) for i in range(10)])
    off = blend(candidates, BlendConfig({"main": 10, "llm": 0}))
    assert set(off["source"]) == {"main"}
    capped = blend(candidates, BlendConfig({"main": 2, "llm": 8}, max_candidates=5))
    assert capped.height == 5
    assert capped["source"].to_list().count("llm") == 4  # proportional interleave: 8:2 shares


def test_no_duplicate_items_and_cap_hold_per_request():
    rows = [(r, i % 7, i % 3, s, float(i)) for r in range(5) for i in range(30) for s in ("main", "llm")]
    result = blend(_candidates(rows), BlendConfig({"main": 20, "llm": 20}, max_per_advertiser=1))
    assert result.group_by("request_id", "item_id").len()["len"].max() == 1
    assert result.group_by("request_id", "advertiser_id").len()["len"].max() == 1


def test_unknown_source_and_bad_quota_are_clear_errors():
    candidates = _candidates([(1, 1, 1, "mystery", 0.5)])
    with pytest.raises(ValueError, match="blend.quotas.mystery"):
        blend(candidates, BlendConfig({"main": 3}))
    with pytest.raises(ConfigError, match="blend.quotas.llm"):
        BlendConfig({"llm": -1})
