"""Tests of the SASRec baseline (llm_predictor/sasrec.py) on hand-built conversion sequences."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
import torch

from llm_predictor.sasrec import (
    SASRecConfig,
    SASRecPredictor,
    bucketed_batches,
    padded_histories,
    run_sasrec,
)
from synthetic_data import schema
from synthetic_data.config_io import ConfigError

DAY0 = datetime(2020, 1, 1, 12, tzinfo=timezone.utc)


def make_events(rows: list[tuple[int, int, int | None, str]]) -> pl.DataFrame:
    """EVENTS from (user_id, day offset, advertiser_id, kind) tuples."""
    return schema.conform(pl.DataFrame({
        "event_id": list(range(len(rows))),
        "user_id": [r[0] for r in rows],
        "ts": [DAY0 + timedelta(days=r[1]) for r in rows],
        "kind": [r[3] for r in rows],
        "text": ["x"] * len(rows),
        "advertiser_id": [r[2] for r in rows],
        "brand_id": [r[2] for r in rows],
        "item_id": [0] * len(rows),
        "category_id": [0] * len(rows),
        "conversion_type": ["purchase"] * len(rows),
        "is_high_priority": [True] * len(rows),
        "value": [None] * len(rows),
    }, schema_overrides={"value": pl.Float64}), schema.EVENTS, "events")


def advertisers_table(ids) -> pl.DataFrame:
    return pl.DataFrame({"advertiser_id": list(ids), "name": [f"brand {i}" for i in ids]},
                        schema={"advertiser_id": pl.Int32, "name": pl.String})


def test_padded_histories_keep_the_latest_conversions_up_to_each_anchor():
    conversion = "attributed_conversion"
    events = make_events([
        (1, 0, 10, conversion), (1, 1, 11, "engagement"), (1, 2, 12, "matched_conversion"),
        (1, 3, None, conversion), (1, 4, 13, conversion), (1, 5, 14, conversion),
        (2, 0, 12, conversion),
    ])
    token_of = pl.DataFrame({"advertiser_id": [10, 12, 13, 14], "token": [1, 2, 3, 4]},
                            schema={"advertiser_id": pl.Int32, "token": pl.Int64})
    requests = pl.DataFrame({"user_id": [1, 1, 2, 3],
                             "anchor_date": [date(2020, 1, 5), date(2020, 1, 6), date(2020, 1, 1), date(2020, 1, 9)]})
    tokens = padded_histories(events, requests, token_of, length=3)
    assert tokens.tolist() == [[1, 2, 3], [2, 3, 4], [0, 0, 2], [0, 0, 0]]


def test_bucketed_batches_cover_every_row_once_and_are_seeded():
    lengths = torch.tensor(np.random.default_rng(0).integers(1, 30, size=1000))
    batches = bucketed_batches(lengths, 32, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 32
    again = bucketed_batches(lengths, 32, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    spread = np.mean([float(lengths[b].max() - lengths[b].min()) for b in batches])
    assert spread < 5  # sorted pools: similar lengths within a batch


def cyclic_world(users: int = 240, advertisers: int = 8, length: int = 8, seed: int = 0):
    """Each user buys advertisers in a cycle a, a+1, ... (mod n) from a random start: the next
    advertiser is a function of the last one, which popularity cannot learn and SASRec should."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        start = int(rng.integers(advertisers))
        rows += [(user, day, 100 + (start + day) % advertisers, "attributed_conversion")
                 for day in range(length)]
    events = make_events(rows)
    labels = (
        events.with_columns(pl.col("ts").dt.date().alias("day"))
        .filter(pl.col("day") >= date(2020, 1, 1) + timedelta(days=length - 2))
        .select("user_id", (pl.col("day") - pl.duration(days=1)).cast(pl.Date).alias("anchor_date"),
                "advertiser_id")
    )
    validation = labels.filter(pl.col("anchor_date") == labels["anchor_date"].min())
    test = labels.filter(pl.col("anchor_date") == labels["anchor_date"].max())
    return events, validation, test, advertisers_table(range(100, 100 + advertisers))


CONFIG = SASRecConfig(hidden_dim=16, num_layers=1, num_heads=1, dropout=0.0, learning_rate=0.01,
                      batch_size=32, max_epochs=15, patience=15, top_k=3)


@pytest.fixture(scope="module")
def fitted():
    events, validation, test, advertisers = cyclic_world()
    predictor = SASRecPredictor(CONFIG).fit(events, validation, advertisers, progress=False)
    return predictor, events, test


def test_sasrec_learns_the_next_advertiser(fitted):
    predictor, events, test = fitted
    losses = [row["train_loss"] for row in predictor.history_]
    assert losses[-1] < 0.5 * losses[0]
    predictions = predictor.predict(events, test)
    top1 = predictions.filter(pl.col("rank") == 1).join(test, on=["user_id", "anchor_date"], suffix="_label")
    accuracy = (top1["advertiser_id"] == top1["advertiser_id_label"]).mean()
    assert accuracy > 0.9  # popularity would be near 1/8 on this world


def test_predictions_follow_the_contract(fitted):
    predictor, events, test = fitted
    predictions = predictor.predict(events, test)
    schema.validate(predictions, schema.PREDICTIONS, "predictions")
    assert predictions.height == test.height * 3
    per_request = predictions.group_by("user_id", "anchor_date").agg(
        pl.col("rank").sort(), pl.col("advertiser_id").n_unique().alias("distinct"))
    assert all(ranks == [1, 2, 3] for ranks in per_request["rank"].to_list())
    assert (per_request["distinct"] == 3).all()
    assert predictions["advertiser_id"].is_between(100, 107).all()
    assert (predictions["advertiser_name"] == "brand " + predictions["advertiser_id"].cast(pl.String)).all()
    assert (predictions["source"] == "sasrec").all()


def test_fit_is_reproducible_and_leaves_global_rng_alone():
    events, validation, test, advertisers = cyclic_world(users=60)
    config = SASRecConfig(hidden_dim=8, num_layers=1, num_heads=1, max_epochs=2, top_k=3)
    state = torch.get_rng_state()
    first = SASRecPredictor(config).fit(events, validation, advertisers, progress=False).predict(events, test)
    assert torch.equal(torch.get_rng_state(), state)
    second = SASRecPredictor(config).fit(events, validation, advertisers, progress=False).predict(events, test)
    assert first.equals(second)


def test_config_and_input_errors_name_the_problem():
    with pytest.raises(ConfigError, match="hidden_dim"):
        SASRecConfig(hidden_dim=30, num_heads=4)
    events, validation, _, advertisers = cyclic_world(users=10)
    with pytest.raises(ValueError, match="validation_labels is empty"):
        SASRecPredictor(CONFIG).fit(events, validation.head(0), advertisers, progress=False)


def _leave_one_out_run(tmp_path):
    """A run folder with a leave-one-out world adapted from 30 hand-made purchase sequences."""
    from synthetic_data.real.amazon import AmazonConfig, write_amazon_world

    data = tmp_path / "data"
    data.mkdir()
    items = {str(i): {"title": f"item {i}", "description": "", "brand": f"Brand{i % 4}",
                      "categories": "Dept,Tools"} for i in range(12)}
    sequences = {str(u): [(u + j) % 12 for j in range(5)] for u in range(30)}
    (data / "T.item.json").write_text(json.dumps(items))
    (data / "T.inter.json").write_text(json.dumps(sequences))
    run = tmp_path / "run"
    write_amazon_world(data, run, AmazonConfig(embedding_dim=4))
    return run


def test_adsim_real_sasrec_command_fits_and_predicts(tmp_path):
    from typer.testing import CliRunner

    from synthetic_data.real.cli import app

    run = _leave_one_out_run(tmp_path)
    result = CliRunner().invoke(app, ["sasrec", "--run", str(run), "--set", "hidden_dim=8", "--set", "num_heads=1",
                                      "--set", "num_layers=1", "--set", "max_epochs=1", "--set", "top_k=4"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(run / "sasrec" / "predictions.parquet").group_by("user_id").len()["len"].to_list() == [8] * 30


def test_run_sasrec_writes_predictions_and_skips_when_complete(tmp_path):
    run = _leave_one_out_run(tmp_path)
    config = SASRecConfig(hidden_dim=8, num_layers=1, num_heads=1, max_epochs=2, top_k=4)
    predictions = run_sasrec(run / "world", run, config, progress=False)
    assert set(predictions["anchor_date"].unique()) == {date(2018, 9, 29), date(2018, 9, 30)}
    assert predictions.group_by("user_id").len()["len"].to_list() == [8] * 30
    record = json.loads((run / "sasrec" / "stage.json").read_text())
    assert record["summary"]["epochs"] == 2
    mtime = (run / "sasrec" / "stage.json").stat().st_mtime_ns
    run_sasrec(run / "world", run, config, progress=False)
    assert (run / "sasrec" / "stage.json").stat().st_mtime_ns == mtime
