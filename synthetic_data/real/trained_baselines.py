"""The llm_predictor baselines on a leave-one-out world: most recent brand filled with popular ones,
and the LightGBM pair ranker fit on the 'train'-role labels (issue 4; paper 4.2's non-LLM rows).

They score the 'test'-role requests only; popularity and the unfilled most-recent list are the
exact baselines of `amazon_baselines`. Settings default to the ones of the published table.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl

from synthetic_data import schema
from synthetic_data.config_io import to_dict
from synthetic_data.run_folder import RunFolder

STAGE = "llm_baselines"
# 90-day windows cover the whole leave-one-out history (purchases are placed one day apart).
AMAZON_SETTINGS = {"popularity_window_days": 90, "n_estimators": 300, "learning_rate": 0.05}


def default_config():
    """The BaselineConfig of the Amazon results table."""
    from llm_predictor.baselines import BaselineConfig

    return replace(BaselineConfig(), **AMAZON_SETTINGS)


def write_trained_baselines(run_dir: Path, config=None) -> pl.DataFrame:
    """Most-recent (popularity-filled) and LightGBM-pair predictions for the test labels, written to
    `<run>/llm_baselines/predictions.parquet`; skips when complete with the same config and world."""
    from llm_predictor.baselines import PairRanker, most_recent_predictions
    from llm_predictor.evaluate import labelled_users

    config = config or default_config()
    run = RunFolder(run_dir)
    world = schema.load_world(run.root / "world", include_truth=False)
    if "role" not in world.labels.columns:
        raise ValueError(f"{run.root}/world: labels have no 'role' column; adapt the data with "
                         f"`python -m synthetic_data.real.cli world` first")
    world_hash = (run.stage_record("world") or {}).get("config_hash")
    stage_config = {"baselines": to_dict(config), "train_labels": "role == train", "requests": "role == test",
                    "world_config_hash": world_hash}
    output = run.root / STAGE / "predictions.parquet"
    if run.is_complete(STAGE, stage_config):
        return pl.read_parquet(output)
    requests = labelled_users(world, "eval").select("user_id", "anchor_date")
    ranker = PairRanker(config).fit(world, labelled_users(world, "train"))
    predictions = pl.concat([most_recent_predictions(world, requests, config), ranker.predict(world, requests)])
    predictions.write_parquet(run.stage_dir(STAGE) / "predictions.parquet")
    run.complete(STAGE, stage_config, ["predictions.parquet"],
                 {"rows": predictions.height, "requests": requests.height,
                  "sources": sorted(predictions["source"].unique().to_list()),
                  "train_labels_with_label_among_candidates": ranker.candidate_recall_})
    return predictions
