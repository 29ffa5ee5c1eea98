"""Data contracts: validation names the column and the fix (synthetic_data/schema.py)."""

import polars as pl
import pytest
from hypothesis import given, strategies as st

from synthetic_data import schema


def test_missing_column_is_named_with_the_fix():
    frame = pl.DataFrame({"user_id": [1]})
    with pytest.raises(schema.SchemaError, match=r"labels: missing column 'anchor_date'.*add it"):
        schema.validate(frame, schema.LABELS, "labels")


def test_wrong_dtype_is_named_with_the_cast():
    frame = schema.empty(schema.SPLITS).with_columns(pl.col("user_id").cast(pl.String))
    with pytest.raises(schema.SchemaError, match=r"column 'user_id' has dtype String, expected Int64.*cast"):
        schema.validate(frame, schema.SPLITS, "splits")


def test_conform_casts_hand_built_frames_and_keeps_extra_columns():
    frame = schema.conform(pl.DataFrame({
        "user_id": [1], "anchor_date": ["2026-01-01"], "rank": [1], "advertiser_id": [3],
        "advertiser_name": ["A"], "source": ["hand"], "extra": [0.5]}).with_columns(
        pl.col("anchor_date").str.to_date()), schema.PREDICTIONS, "predictions")
    assert frame.schema["user_id"] == pl.Int64 and frame.schema["rank"] == pl.Int32
    assert "extra" in frame.columns


def test_embedding_column_accepts_any_width_of_float32_only():
    good = pl.DataFrame({"e": [[0.1, 0.2]]}, schema={"e": pl.Array(pl.Float32, 2)})
    schema.validate(good, {"e": schema.EMBEDDING})
    bad = pl.DataFrame({"e": [[0.1, 0.2]]}, schema={"e": pl.Array(pl.Float64, 2)})
    with pytest.raises(schema.SchemaError, match="Array\\(Float32, embedding_dim\\)"):
        schema.validate(bad, {"e": schema.EMBEDDING})


@given(st.sampled_from(sorted(schema.SCHEMAS)))
def test_every_contract_accepts_its_empty_frame(name):
    schema.validate(schema.empty(schema.SCHEMAS[name]), schema.SCHEMAS[name], name)


def test_load_world_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="adsim world"):
        schema.load_world(tmp_path)
