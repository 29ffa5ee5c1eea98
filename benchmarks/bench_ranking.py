"""Ranking throughput on CPU: DCN-v2 and LightGBM training and scoring examples/s (issue 6).

Builds logged impressions on a generated world, then times: DCN training (fp32 vs bf16 autocast),
DCN scoring of prebuilt features, end-to-end `Ranker.score` (featurise + score, the simulator's
call), and LightGBM training and scoring. Also checks bf16 against fp32 (AUC and max |Δp|).
Usage: python benchmarks/bench_ranking.py [--preset tiny] [--requests-per-user-day 6]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from datetime import date

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ranking.config import RankingConfig, TrainConfig
from ranking.features import split_by_time
from ranking.gbdt import feature_matrix, fit_lightgbm
from ranking.metrics import evaluate
from ranking.pipeline import fit_builder
from ranking.recency_predictions import recent_advertiser_predictions
from ranking.scoring import Ranker
from ranking.train import fit_dcn, predict_logits
from synthetic_data.impressions import ImpressionConfig, generate_impressions
from synthetic_data.presets import preset
from synthetic_data.response import build_response_state
from synthetic_data.world import generate_world


def _timed(function, repeats: int = 1):
    """Result, wall seconds and process CPU seconds per call (CPU time is what a shared machine's
    load does not inflate: rows per CPU-second estimate the rate of an idle single core)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        result = function()
    return result, ((time.perf_counter() - started) / repeats, (time.process_time() - cpu_started) / repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--requests-per-user-day", type=float, default=6.0)
    args = parser.parse_args()

    world_config = preset(args.preset)
    world = generate_world(world_config, progress=False)
    state = build_response_state(world, date.fromisoformat(world_config.start_date),
                                 world_config.users.drift_period_days)
    impressions, _ = generate_impressions(world, state, ImpressionConfig(
        n_days=20, requests_per_user_day=args.requests_per_user_day))
    predictions = recent_advertiser_predictions(world.events, world.advertisers,
                                                world.labels["anchor_date"].unique().to_list(), 20)
    config = RankingConfig(tasks=("ctcvr", "vtcvr"), multi_task=True)
    builder = fit_builder(world, config)
    splits = split_by_time(impressions, config.features)
    tables = {name: builder.transform(rows, predictions, tasks=config.tasks) for name, rows in splits.items()}
    train, validation, test = tables["train"], tables["validation"], tables["test"]
    rows = []

    fitted = {}
    for use_bf16 in (False, True):
        train_config = TrainConfig(epochs=1, use_bf16=use_bf16)
        fitted[use_bf16], seconds = _timed(lambda: fit_dcn(train, validation, builder.vocab_sizes_, config.tasks,
                                                           config.dcn, train_config, seed=0))
        rows.append((f"DCN train 1 epoch ({'bf16' if use_bf16 else 'fp32'})", len(train), seconds))
        _, seconds = _timed(lambda: fitted[use_bf16].logits(test), repeats=3)  # as the Ranker scores
        rows.append((f"DCN score, features prebuilt ({'bf16' if use_bf16 else 'fp32'})", len(test), seconds))

    candidates = splits["test"].select("request_id", "user_id", "ts", "surface", "position", "item_id")
    ranker = Ranker(builder=builder, models=[fitted[True]], predictions=predictions)
    _, seconds = _timed(lambda: ranker.score(candidates), repeats=3)
    rows.append(("Ranker.score end to end (featurise + bf16 DCN)", len(candidates), seconds))
    _, seconds = _timed(lambda: builder.transform(candidates, predictions), repeats=3)
    rows.append(("  of which featurise", len(candidates), seconds))

    lightgbm_config = replace(config.lightgbm, max_rounds=200, early_stopping_rounds=200)
    booster, seconds = _timed(lambda: fit_lightgbm(train, validation, ("ctcvr",), lightgbm_config, seed=0))
    rounds = booster.boosters["ctcvr"].current_iteration()
    rows.append((f"LightGBM train ({rounds} rounds, ctcvr)", len(train), seconds))
    matrix, _, _ = feature_matrix(test)
    _, seconds = _timed(lambda: booster.boosters["ctcvr"].predict(matrix, raw_score=True), repeats=3)
    rows.append((f"LightGBM score ({rounds} trees)", len(test), seconds))

    table = Table(title=f"bench_ranking: {args.preset} world, {len(impressions):,} impressions, "
                        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    for column in ("what", "rows", "wall s", "examples/s", "CPU s", "examples/CPU-s"):
        table.add_column(column, justify="right" if column != "what" else "left")
    for what, count, (wall, cpu) in rows:
        table.add_row(what, f"{count:,}", f"{wall:.3f}", f"{count / wall:,.0f}", f"{cpu:.3f}", f"{count / cpu:,.0f}")
    console = Console(width=130)
    console.print(table)

    # bf16 accuracy: the same weights scored in fp32 and with bf16 layers, and a model trained in fp32.
    model = fitted[True].model
    logits = {name: predict_logits(model, test, 8192, use_bf16=name == "bf16") for name in ("fp32", "bf16")}
    probabilities = {name: 1 / (1 + np.exp(-values[:, 0])) for name, values in logits.items()}
    auc = {name: evaluate(test.labels["ctcvr"], values)["auc"] for name, values in probabilities.items()}
    trained_fp32_auc = evaluate(test.labels["ctcvr"], fitted[False].probabilities(test)["ctcvr"])["auc"]
    console.print(f"bf16 vs fp32 inference of the same weights: max |Δp| "
                  f"{np.abs(probabilities['fp32'] - probabilities['bf16']).max():.2e}, ctcvr AUC "
                  f"{auc['fp32']:.4f} (fp32) vs {auc['bf16']:.4f} (bf16); trained with fp32 instead of bf16 "
                  f"autocast: AUC {trained_fp32_auc:.4f}")


if __name__ == "__main__":
    main()
