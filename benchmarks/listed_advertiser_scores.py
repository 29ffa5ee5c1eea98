"""Issue #13 fault 0 on a run folder: does the market's ranker score listed advertisers above unlisted ones?

`lists` writes most-recent-advertiser lists (a non-LLM source): for `--heldout-users` eval-split
users at every label anchor (`<run>/heldout_recent.parquet`, the coverage of the demo's held-out
LLM lists) and for every serving user at the world's last day (`<run>/serving_recent.parquet`).
`score` simulates one day of the LLM-generator arm for `--users` serving users through the run's
trained stack and prints, per source and listed-ness, the ranked candidates' predicted conversion
(p_ctcvr + p_vtcvr) and the stack's LLM-feature coverage check.

    python benchmarks/listed_advertiser_scores.py lists --run R
    adsim rank train --run R --predictions R/heldout_recent.parquet
    python benchmarks/listed_advertiser_scores.py score --run R
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl


def write_lists(run: Path, heldout_users: int, seed: int) -> None:
    from llm_predictor.baselines import most_recent_predictions
    from synthetic_data.schema import load_world

    world = load_world(run / "world", include_truth=False)
    heldout = (world.splits.filter(pl.col("split") == "eval").select("user_id").sort("user_id")
               .sample(heldout_users, seed=seed))
    anchors = world.labels.select("anchor_date").unique()
    most_recent_predictions(world, heldout.join(anchors, how="cross")).write_parquet(run / "heldout_recent.parquet")
    anchor = world.events["ts"].max().date()
    since = pl.datetime(anchor.year, anchor.month, anchor.day, time_zone="UTC") - pl.duration(days=89)
    serving = (world.events.filter(pl.col("kind").is_in(["attributed_conversion", "matched_conversion"]),
                                   pl.col("ts") >= since)
               .select("user_id").unique().sort("user_id").with_columns(pl.lit(anchor).alias("anchor_date")))
    lists = most_recent_predictions(world, serving)
    lists.write_parquet(run / "serving_recent.parquet")
    print(f"{heldout.height} held-out users at {anchors.height} anchors; {serving.height:,} serving users "
          f"({lists.height:,} rows)")


def score(run: Path, users: int, seed: int) -> None:
    from simulator import engine
    from simulator.config import ExperimentConfig, SimulationConfig
    from simulator.stack import largest_quotas, trained_arms, trained_stack
    from synthetic_data.config import WorldConfig
    from synthetic_data.config_io import from_dict, load_config
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.schema import load_world

    world = load_world(run / "world")
    world_config = from_dict(WorldConfig, RunFolder(run).stage_record("world")["config"])
    serving = pl.read_parquet(run / "serving_recent.parquet")
    experiment = load_config(ExperimentConfig, base={"arms": trained_arms()})
    stack = trained_stack(run, world, world_config, serving, "clicks", largest_quotas(experiment.arms))
    print("LLM-feature coverage:", stack.llm_feature_coverage)
    ranked = []
    auction = engine.Market._auction

    def recording_auction(market, candidates):  # the ranked candidates each auction receives
        ranked.append(candidates.select("user_id", "source", "advertiser_id", "p_conversion_predicted"))
        return auction(market, candidates)

    engine.Market._auction = recording_auction
    sample = np.sort(serving["user_id"].unique().sample(users, seed=seed).to_numpy())
    engine.simulate(world, stack, experiment.arms[1].blend, sample, SimulationConfig(days=1, seed=seed))
    engine.Market._auction = auction
    listed = serving.select("user_id", "advertiser_id", is_listed=pl.lit(True)).unique()
    rows = (pl.concat(ranked).join(listed, on=["user_id", "advertiser_id"], how="left")
            .with_columns(pl.col("is_listed").fill_null(False)))
    with pl.Config(tbl_rows=20):
        print(rows.group_by("source", "is_listed").agg(
            rows=pl.len(), median=pl.col("p_conversion_predicted").median(),
            mean=pl.col("p_conversion_predicted").mean(),
            share_below_1e7=(pl.col("p_conversion_predicted") < 1e-7).mean()).sort("source", "is_listed"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("lists", "score"))
    parser.add_argument("--run", type=Path, required=True, help="run folder with world/ (and, to score, the "
                        "retrieval_*_clicks and ranking stages)")
    parser.add_argument("--heldout-users", type=int, default=150, help="lists: eval-split users with lists")
    parser.add_argument("--users", type=int, default=3000, help="score: serving users simulated for one day")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.step == "lists":
        write_lists(args.run, args.heldout_users, args.seed)
    else:
        score(args.run, args.users, args.seed)


if __name__ == "__main__":
    main()
