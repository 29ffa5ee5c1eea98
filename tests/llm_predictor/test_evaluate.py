"""Tests of llm_predictor/evaluate.py: eval sets, the results and ablation tables, files written."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import polars as pl
import pytest

from synthetic_data.config_io import ConfigError
from synthetic_data.intervals import paired_difference_interval

from llm_predictor.baselines import BaselineConfig
from llm_predictor.evaluate import (EvalConfig, ablation_table, allowed_names_ceiling, baseline_predictions,
                                    evaluate_methods, evaluation_labels, evaluation_requests, labelled_users,
                                    paired_effects_table, results_table, to_markdown)
from llm_predictor.features import FeatureConfig
from llm_predictor.predict import build_prompts
from llm_predictor.prompts import list_target

CONFIG = EvalConfig()


def test_eval_sets_hold_only_eval_users_at_the_eval_anchor(tiny_world):
    labels = evaluation_labels(tiny_world, CONFIG)
    eval_users = tiny_world.splits.filter(pl.col("split") == "eval")["user_id"]
    anchor = tiny_world.labels["anchor_date"].max()
    for name, table in labels.items():
        assert table["user_id"].is_in(eval_users.implode()).all()
        assert (table["anchor_date"] == anchor).all()
        flags = tiny_world.labels.join(table, on=["user_id", "anchor_date"], how="semi")[f"in_{name}"]
        assert flags.all()
    requests = evaluation_requests(tiny_world, CONFIG)
    assert requests.height == pl.concat([t.select("user_id") for t in labels.values()]).n_unique()


def test_a_sampled_method_is_scored_on_its_sample_only(tiny_world):
    """A method that predicted half the users, perfectly, recalls 1 on their labels (the others would count
    as misses were it scored on every label); the rest are still scored on every label."""
    v1 = evaluation_labels(tiny_world, CONFIG)["v1"]
    sample = v1.select("user_id", "anchor_date").unique().sort("user_id").head(v1.height // 2)
    half = v1.join(sample, on=["user_id", "anchor_date"], how="semi").with_columns(pl.lit(1, dtype=pl.Int32)
                                                                                    .alias("rank"))
    table = results_table({"half": half, "everyone": half}, {"v1": v1}, CONFIG, sampled_methods=("half",),
                          sample=sample)
    rows = {r["method"]: r for r in table.iter_rows(named=True)}
    assert rows["half"]["recall_at_1"] == 1.0 and rows["half"]["n_labels"] == half.height < v1.height
    assert rows["everyone"]["n_labels"] == v1.height and rows["everyone"]["recall_at_1"] < 1.0


def test_results_table_scores_perfect_and_empty_methods(tiny_world):
    labels = evaluation_labels(tiny_world, CONFIG)
    v1 = labels["v1"]
    oracle = v1.with_columns(pl.lit(1, dtype=pl.Int32).alias("rank"))
    empty = oracle.clear()
    table = results_table({"oracle": oracle, "nothing": empty}, {"v1": v1}, CONFIG)
    rows = {r["method"]: r for r in table.iter_rows(named=True)}
    n = v1.height
    z2 = 1.959963984540054**2
    # Wilson bounds at all hits and at none: (n / (n + z²), 1) and (0, z² / (n + z²)), never a point
    assert rows["oracle"]["recall_at_1"] == 1.0 and rows["oracle"]["recall_at_1_high"] == 1.0
    assert rows["oracle"]["recall_at_1_low"] == pytest.approx(n / (n + z2))
    assert rows["nothing"]["recall_at_20"] == 0.0 and rows["nothing"]["recall_at_20_low"] == 0.0
    assert rows["nothing"]["recall_at_20_high"] == pytest.approx(z2 / (n + z2))
    assert rows["oracle"]["parse_rate"] is None and rows["oracle"]["n_labels"] == v1.height


def test_the_ceiling_is_the_share_of_labels_among_the_allowed_names(tiny_world):
    """Recall of the ceiling = the share of labels whose advertiser the prompt allows, counted by hand."""
    requests = evaluation_requests(tiny_world, CONFIG)
    prompts = build_prompts(tiny_world, requests, FeatureConfig(), 5, "inference")
    labels = evaluation_labels(tiny_world, CONFIG)
    v1 = labels["v1"]
    names = dict(tiny_world.advertisers.select("advertiser_id", "name").iter_rows())
    allowed = {(u, d): set(found) for u, d, found in prompts.select("user_id", "anchor_date", "allowed_names").iter_rows()}
    covered = sum(names[a] in allowed[(u, d)] for u, d, a in v1.select("user_id", "anchor_date", "advertiser_id")
                  .iter_rows())
    assert 0 < covered < v1.height  # the tiny world has labels on both sides of the ceiling
    ceiling = allowed_names_ceiling(tiny_world, prompts, labels)
    [row] = results_table({"ceiling": ceiling}, {"v1": v1}, CONFIG).to_dicts()
    assert row["recall_at_1"] == row["recall_at_20"] == pytest.approx(covered / v1.height)


def test_a_baseline_held_to_the_allowed_names_keeps_their_order_and_stays_under_the_ceiling(tiny_world):
    from llm_predictor.baselines import most_recent_predictions
    from llm_predictor.evaluate import restricted_to_allowed

    requests = evaluation_requests(tiny_world, CONFIG)
    prompts = build_prompts(tiny_world, requests, FeatureConfig(), 5, "inference")
    recent = most_recent_predictions(tiny_world, requests)
    held = restricted_to_allowed(recent, prompts, "most_recent_allowed")
    allowed = {(u, d): set(found)
               for u, d, found in prompts.select("user_id", "anchor_date", "allowed_names").iter_rows()}
    assert all(name in allowed[(u, d)] for u, d, name in held.select("user_id", "anchor_date", "advertiser_name")
               .iter_rows())
    assert 0 < held.height < recent.height  # some of the recent advertisers are outside the allowed names
    for (user, day), group in held.group_by("user_id", "anchor_date"):
        assert group.sort("rank")["rank"].to_list() == list(range(1, group.height + 1))
        kept = recent.filter((pl.col("user_id") == user) & (pl.col("anchor_date") == day)).sort("rank")
        order = [name for name in kept["advertiser_name"] if name in allowed[(user, day)]]
        assert group.sort("rank")["advertiser_name"].to_list() == order
    labels = evaluation_labels(tiny_world, CONFIG)
    rows = {row["method"]: row for row in results_table(
        {"held": held, "ceiling": allowed_names_ceiling(tiny_world, prompts, labels)}, {"v1": labels["v1"]},
        CONFIG).to_dicts()}
    assert rows["held"]["recall_at_20"] <= rows["ceiling"]["recall_at_20"]


def test_ablation_deltas_are_paired_differences(tiny_world):
    v1 = evaluation_labels(tiny_world, CONFIG)["v1"]
    oracle = v1.with_columns(pl.lit(1, dtype=pl.Int32).alias("rank"))
    half = oracle.head(v1.height // 2)
    table = ablation_table("full", {"full": oracle, "remove_half": half}, v1, CONFIG, k=5)
    [row] = table.to_dicts()
    expected = half.height / v1.height - 1.0
    assert row["delta_recall_at_5"] == pytest.approx(expected)
    assert row["discordant"] == v1.height - half.height  # labels only the full list hits
    assert (row["delta_recall_at_5_low"], row["delta_recall_at_5_high"]) == pytest.approx(
        paired_difference_interval(np.arange(v1.height) < half.height, np.ones(v1.height)))
    assert row["delta_recall_at_5_low"] < expected < row["delta_recall_at_5_high"]
    same = ablation_table("full", {"full": oracle, "copy": oracle}, v1, CONFIG, k=5).row(0, named=True)
    assert same["discordant"] == 0 and same["delta_recall_at_5_low"] < 0 < same["delta_recall_at_5_high"]
    assert "Tango score interval" in to_markdown(table, "ablation")
    with pytest.raises(ValueError, match="reference"):
        ablation_table("missing", {"full": oracle}, v1, CONFIG)


def test_paired_effects_resample_users_when_a_user_has_labels_at_several_anchors():
    from llm_predictor.evaluate import CLUSTERED

    anchors = [date(2026, 3, 2), date(2026, 3, 9)]
    labels = pl.DataFrame({"user_id": [u for u in range(40) for _ in anchors], "anchor_date": anchors * 40,
                           "advertiser_id": pl.Series(range(80), dtype=pl.Int32)})
    oracle = labels.with_columns(rank=pl.lit(1, dtype=pl.Int32))
    half = oracle.filter(pl.col("user_id") < 20)  # hits both labels of half the users
    repeated = paired_effects_table([("half", "oracle")], {"oracle": oracle, "half": half}, labels, CONFIG).row(
        0, named=True)
    assert (repeated["n_labels"], repeated["n_users"], repeated["interval"]) == (80, 40, CLUSTERED)
    assert repeated["delta_recall_at_1"] == pytest.approx(-0.5)
    # 40 independent users' outcomes, each counted twice: as wide as on one label a user, not narrower
    once = labels.filter(pl.col("anchor_date") == anchors[0])
    single = paired_effects_table([("half", "oracle")], {"oracle": oracle, "half": half}, once, CONFIG).row(
        0, named=True)
    assert single["interval"] == "Tango" and single["n_users"] == 40
    assert repeated["delta_recall_at_1_high"] - repeated["delta_recall_at_1_low"] > 0.8 * (
        single["delta_recall_at_1_high"] - single["delta_recall_at_1_low"])
    markdown = to_markdown(pl.DataFrame([repeated]), "effects")
    assert CLUSTERED in markdown and "Tango score interval" not in markdown  # only the notes of the rows' intervals
    assert "Tango score interval" in to_markdown(pl.DataFrame([repeated, single]), "effects")


def test_evaluate_methods_writes_tables_with_llm_rates_and_baselines(tiny_world, tmp_path):
    requests = evaluation_requests(tiny_world, CONFIG)
    names = tiny_world.advertisers["name"].to_list()
    # A fake "model" that lists the first 20 advertisers, with one unknown name, for every user.
    text = list_target(names[:19] + ["Not An Advertiser Anywhere"], ["x"])
    generations = {"llm_fixed_list": requests.with_columns(pl.lit(text).alias("text"))}
    table = evaluate_methods(tiny_world, generations, tmp_path, CONFIG, replace(BaselineConfig(), n_estimators=20))
    assert set(table["method"]) == {"llm_fixed_list", "popularity", "most_recent", "lightgbm_pairs", "lightgbm_pairs_prompt"}
    assert set(table["eval_set"]) == {"v0", "v1"}
    llm = table.filter(pl.col("method") == "llm_fixed_list").row(0, named=True)
    assert llm["parse_rate"] == 1.0 and llm["exact_count_rate"] == 1.0
    assert llm["unmapped_rate"] == pytest.approx(1 / 20)
    assert (tmp_path / "results.parquet").exists()
    markdown = (tmp_path / "results.md").read_text()
    assert "| llm_fixed_list | v0 |" in markdown and "recall_at_20" in markdown
    assert pl.read_parquet(tmp_path / "results.parquet").equals(table)


def test_markdown_shows_intervals():
    table = pl.DataFrame({"method": ["a"], "recall_at_1": [0.5], "recall_at_1_low": [0.25],
                          "recall_at_1_high": [0.75], "parse_rate": [None]}, schema_overrides={"parse_rate": pl.Float64})
    markdown = to_markdown(table, "t")
    assert "| a | 0.500 [0.250, 0.750] | — |" in markdown and "Wilson score interval" in markdown


def test_config_validation():
    with pytest.raises(ConfigError, match="eval.anchor_date"):
        EvalConfig(anchor_date="March")
    with pytest.raises(ConfigError, match="eval.ks"):
        EvalConfig(ks=())


def _leave_one_out(world):
    """The world with leave-one-out labels as synthetic_data.real writes them: each user labelled at
    the last anchor has a test label there, a validation label a day before and a train label two
    days before (same advertiser); every such user is in the eval split."""
    last = world.labels.filter(pl.col("anchor_date") == pl.col("anchor_date").max())
    labels = pl.concat([
        last.with_columns(pl.col("anchor_date") - pl.duration(days=days_before), pl.lit(role).alias("role"))
        for days_before, role in ((2, "train"), (1, "validation"), (0, "test"))
    ])
    splits = world.splits.with_columns(
        pl.when(pl.col("user_id").is_in(last["user_id"].implode())).then(pl.lit("eval"))
        .otherwise(pl.col("split").cast(pl.String)).cast(world.splits.schema["split"]).alias("split"))
    return replace(world, labels=labels, splits=splits)


def test_labelled_users_follow_the_role_on_a_leave_one_out_world(tiny_world):
    world = _leave_one_out(tiny_world)
    assert world.labels["role"].value_counts().height == 3  # the hand-built world has every role
    for split, role in (("train", "train"), ("eval", "test"), ("validation", "validation")):
        chosen = labelled_users(world, split)
        assert chosen.height == (world.labels["role"] == role).sum() > 0
        assert (chosen["role"] == role).all()
    # Train labels come from eval-split users too: the split would have left no training examples.
    assert labelled_users(world, "train")["user_id"].is_in(
        world.splits.filter(pl.col("split") == "eval")["user_id"].implode()).all()
    eval_sets = evaluation_labels(world, CONFIG)
    test = world.labels.filter(pl.col("role") == "test")
    for table in eval_sets.values():
        assert table.join(test, on=["user_id", "anchor_date", "advertiser_id"], how="anti").is_empty()


def test_labelled_users_keep_the_split_on_a_synthetic_world(tiny_world):
    for split in ("train", "eval"):
        users = tiny_world.splits.filter(pl.col("split") == split)["user_id"].implode()
        assert labelled_users(tiny_world, split).equals(tiny_world.labels.filter(pl.col("user_id").is_in(users)))
    with pytest.raises(ValueError, match="validation"):
        labelled_users(tiny_world, "validation")


def test_pair_ranker_trains_on_train_role_labels(tiny_world):
    world = _leave_one_out(tiny_world)
    requests = evaluation_requests(world, CONFIG)
    predictions = baseline_predictions(world, requests, replace(BaselineConfig(), n_estimators=10))
    ranked = predictions["lightgbm_pairs"].select("user_id", "anchor_date").unique()
    assert ranked.join(requests, on=["user_id", "anchor_date"], how="anti").is_empty()
    assert ranked.height == requests.height


def test_the_baselines_effect_table_pairs_each_ranked_method_with_its_rules_yardsticks(tmp_path):
    from llm_predictor.config import resolve_config
    from llm_predictor.evaluate import CLUSTERED
    from llm_predictor.stages import baselines_effect_table

    config = resolve_config("nano", None, ['eval.methods=["behaviour_ranked","behaviour_ranked_open","zero_shot"]'])
    anchors = [date(2026, 2, 23), date(2026, 3, 2)]
    keys = pl.DataFrame({"user_id": [1, 2, 3, 4] * 2, "anchor_date": [a for a in anchors for _ in range(4)]})
    every_labels = keys.with_columns(advertiser_id=pl.Series([10, 11, 12, 13] * 2, dtype=pl.Int32))
    labels = every_labels.filter(pl.col("anchor_date") == anchors[1])

    def ranked(hits: list[bool], source: str) -> pl.DataFrame:  # rank 1 = the label where `hits`, else another
        return every_labels.with_columns(
            rank=pl.lit(1, pl.Int32), advertiser_id=pl.when(pl.Series(hits * 2)).then("advertiser_id").otherwise(99),
            advertiser_name=pl.lit("x"), source=pl.lit(source))

    every = {"behaviour_ranked_open": ranked([True] * 4, "o"), "behaviour_ranked": ranked([True, False] * 2, "a"),
             "most_recent": ranked([True, False, False, False], "m"),
             "lightgbm_pairs_prompt": ranked([True] * 4, "l"), "most_recent_allowed": ranked([False] * 4, "r")}
    predictions = {name: table.filter(pl.col("anchor_date") == anchors[1]) for name, table in every.items()}
    del every["behaviour_ranked"]  # a method left out of eval.every_anchor_methods
    written = baselines_effect_table(config, predictions, labels, every, every_labels, tmp_path,
                                     sampled_methods=("zero_shot",))
    assert sorted(written) == ["baselines_effect.md", "baselines_effect.parquet"]
    table = pl.read_parquet(tmp_path / "baselines_effect.parquet")
    deltas = {(a, m, r): d for a, m, r, d in table.select("anchors", "method", "reference", "delta_recall_at_1")
              .iter_rows()}
    assert deltas == {("evaluation", "behaviour_ranked", "most_recent_allowed"): 0.5,
                      ("evaluation", "behaviour_ranked_open", "most_recent"): 0.75,
                      ("evaluation", "behaviour_ranked_open", "lightgbm_pairs_prompt"): 0.0,
                      ("every", "behaviour_ranked_open", "most_recent"): 0.75,
                      ("every", "behaviour_ranked_open", "lightgbm_pairs_prompt"): 0.0}
    assert table.select("anchors", "n_labels", "n_users", "interval").unique().sort("anchors").rows() == [
        ("evaluation", 4, 4, "Tango"), ("every", 8, 4, CLUSTERED)]
