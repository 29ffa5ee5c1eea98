"""The Table 5 experiment: paired statistics, and an informative list beats its random-list control."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from ranking.config import LightGBMConfig, RankingConfig, TrainConfig
from ranking.lift import lift_markdown, paired_change, run_lift, summarize_lift
from synthetic_data.schema import PREDICTIONS, conform


def test_paired_change_gives_the_mean_relative_change_its_t_interval_and_p_value():
    result = paired_change(np.array([1.1, 1.2, 1.3]), np.array([1.0, 1.0, 1.0]))
    half = stats.t.ppf(0.975, 2) * 10 / np.sqrt(3)  # changes 10, 20, 30 %: sd 10
    assert result["change_pct"] == pytest.approx(20)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((20 - half, 20 + half))
    assert result["p_value"] == pytest.approx(stats.ttest_rel([1.1, 1.2, 1.3], [1, 1, 1]).pvalue)
    assert result["seeds"] == 3


def _results(arm: str, auc: list[float]) -> list[dict]:
    return [{"seed": seed, "arm": arm, "model": "dcn", "task": "ctcvr", "log_loss": 0.1, "auc": value,
             "pr_auc": 0.2} for seed, value in enumerate(auc)]


def test_summary_pairs_arms_by_seed_and_renders_the_table():
    results = pl.DataFrame(_results("without_llm", [0.80, 0.82]) + _results("with_llm", [0.84, 0.83])
                           + _results("random_control", [0.80, 0.82]))
    summary = summarize_lift(results)
    assert summary.height == 3 * 3  # three comparisons x three metrics
    row = summary.filter((pl.col("comparison") == "with_llm vs without_llm") & (pl.col("metric") == "auc"))
    assert row["change_pct"].item() == pytest.approx(np.mean([0.04 / 0.80, 0.01 / 0.82]) * 100)
    control = summary.filter((pl.col("comparison") == "random_control vs without_llm") & (pl.col("metric") == "auc"))
    assert control["change_pct"].item() == pytest.approx(0.0)
    markdown = lift_markdown(summary, "recent_advertisers")
    assert "`recent_advertisers`" in markdown and "| dcn | ctcvr | with_llm vs without_llm |" in markdown
    mismatched = results.with_columns(seed=pl.when(pl.col("arm") == "with_llm").then(pl.col("seed") + 5)
                                      .otherwise(pl.col("seed")))
    with pytest.raises(ValueError, match="different seeds"):
        summarize_lift(mismatched)


def _oracle_predictions(impressions: pl.DataFrame) -> pl.DataFrame:
    """A planted list: the advertisers each user converts with on the next day (an oracle, not an LLM)."""
    converted = (impressions.filter("is_ctcvr")
                 .select("user_id", "advertiser_id", anchor_date=pl.col("ts").dt.date() - pl.duration(days=1))
                 .unique().sort("user_id", "anchor_date", "advertiser_id"))
    return conform(converted.with_columns(rank=pl.col("advertiser_id").rank("ordinal").over("user_id", "anchor_date"),
                                          advertiser_name=pl.lit(None, dtype=pl.String), source=pl.lit("planted_oracle")),
                   PREDICTIONS)


@pytest.mark.slow  # ~3 minutes on an idle 2-core machine (9 under load): five seeds x three feature sets
def test_informative_lists_lift_the_model_and_random_lists_of_the_same_length_do_not(tiny_tables, tiny_impressions):
    builder, splits, _ = tiny_tables
    splits = {**splits, "train": splits["train"].head(40_000)}
    config = RankingConfig(tasks=("ctcvr",), seeds=(0, 1), train=TrainConfig(epochs=1),
                           lightgbm=LightGBMConfig(max_rounds=100, learning_rate=0.1))
    results = run_lift(builder, splits, _oracle_predictions(tiny_impressions), None, config)
    assert results.height == 2 * 3 * 2  # seeds x arms x models
    auc = results.group_by("model", "arm").agg(pl.col("auc").min().alias("worst"), pl.col("auc").max().alias("best"),
                                               pl.col("auc").mean().alias("mean"))
    auc = {(row["model"], row["arm"]): row for row in auc.iter_rows(named=True)}
    # The DCN gains on every seed; LightGBM on 40k rows with ~150 positives varies more across seeds.
    assert auc[("dcn", "with_llm")]["worst"] > auc[("dcn", "without_llm")]["best"] + 0.02
    assert auc[("dcn", "with_llm")]["worst"] > auc[("dcn", "random_control")]["best"] + 0.02
    assert auc[("lightgbm", "with_llm")]["mean"] > auc[("lightgbm", "random_control")]["mean"] + 0.02
