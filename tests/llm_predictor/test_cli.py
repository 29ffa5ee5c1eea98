"""`adsim llm` stages on the tiny world with the `nano` preset, and the CLI's config handling."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from llm_predictor.cli import app
from llm_predictor.config import METHODS, resolve_config
from llm_predictor.evaluate import labelled_users
from llm_predictor.stages import (_ablation_variants, list_completion, method_decoding, prediction_keys,
                                   run_world)
from llm_predictor.decoding import DecodingConfig
from llm_predictor.features import GROUPS
from llm_predictor.parse import parse_output
from synthetic_data.config_io import ConfigError

runner = CliRunner()


@pytest.fixture(scope="module")
def run_root(tiny_world_dir, tmp_path_factory):
    """A run folder holding the tiny world, recorded as `adsim world --preset tiny` records it."""
    from synthetic_data.config_io import to_dict
    from synthetic_data.presets import preset
    from synthetic_data.run_folder import RunFolder
    from synthetic_data.schema import WORLD_TABLES

    root = tmp_path_factory.mktemp("llm_run")
    shutil.copytree(tiny_world_dir, root / "world")
    RunFolder(root).complete("world", to_dict(preset("tiny")), [f"{name}.parquet" for name in WORLD_TABLES])
    return root


def _invoke(*args: str):
    result = runner.invoke(app, [*args, "--preset", "nano", "--quiet"])
    assert result.exit_code == 0, result.output
    return result


def test_presets_and_overrides_resolve():
    small, nano = resolve_config("small", None, None), resolve_config("nano", None, ["sft.train.max_steps=7"])
    assert small.model.size == "small" and nano.model.size == "nano"
    assert nano.sft.train.max_steps == 7 and nano.grpo.num_generations == 4


@pytest.mark.parametrize("override, field", [("sft.train.max_step=3", "sft.train.max_step"),
                                             ("grpo.beta=-0.1", "beta"),
                                             ("eval.methods=['nope']", "eval.methods")])
def test_bad_config_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        resolve_config("nano", None, [override])


def test_bad_override_exits_2_with_the_field(tmp_path):
    result = runner.invoke(app, ["pretrain", "--run", str(tmp_path), "--set", "pretrain.block_size=2"])
    assert result.exit_code == 2 and "block_size" in result.output


def test_list_completion_puts_the_label_first_and_keeps_twenty_distinct_names():
    allowed = [f"Advertiser {i}" for i in range(30)]
    text = list_completion("Advertiser 7", allowed, ["rugs", "", "speakers"])
    parsed = parse_output(text)
    assert parsed.advertisers[0] == "Advertiser 7" and len(parsed.advertisers) == 20
    assert parsed.advertisers[1:4] == ["Advertiser 0", "Advertiser 1", "Advertiser 2"]
    assert parsed.interests == ["rugs", "speakers"]


def test_ablation_variants_follow_the_measured_deltas():
    removals = _ablation_variants(None)
    assert len(removals) == len(GROUPS)
    assert all(group not in removals[f"remove_{group}"] for group in GROUPS)
    deltas = {group: 0.0 for group in GROUPS} | {"offsite_urls": -0.2, "profile": -0.1, "top_categories": 0.05}
    derived = _ablation_variants(deltas)
    assert derived["reorder_by_performance"][:2] == ("offsite_urls", "profile")
    assert "top_categories" not in derived["delete_negative"] and len(derived["delete_negative"]) == len(GROUPS) - 1
    assert derived["reorder_and_delete_negative"][:2] == ("offsite_urls", "profile")


def test_single_advertiser_methods_decode_twenty_ranked_names():
    base = DecodingConfig(num_beams=4, max_new_tokens=200, is_name_constrained=True)
    beam = method_decoding(METHODS["sft_single_beam"], base)
    assert (beam.num_beams, beam.num_return_sequences, beam.is_name_constrained) == (20, 20, False)
    ranked = method_decoding(METHODS["sft_single_ranked"], base)
    assert (ranked.strategy, ranked.num_return_sequences, ranked.is_name_constrained) == ("rank", 20, True)
    assert ranked.name_end == "eos"  # the 1-advertiser answer ends the sequence
    assert method_decoding(METHODS["behaviour_ranked_open"], base).name_end == "separator"  # '|' or the end
    assert method_decoding(METHODS["grpo_constrained"], DecodingConfig()).is_name_constrained
    assert method_decoding(METHODS["grpo"], base) == base


@pytest.mark.slow
def test_pretrain_sft_predict_chain_and_skip_on_rerun(run_root):
    _invoke("pretrain", "--run", str(run_root))
    _invoke("behaviour", "--run", str(run_root))
    _invoke("sft", "--run", str(run_root), "--target", "single")
    _invoke("predict", "--run", str(run_root), "--method", "sft_single_beam", "--users", "eval")
    stage = run_root / "llm_predict_sft_single_beam_eval"
    record = json.loads((stage / "stage.json").read_text())
    predictions = pl.read_parquet(stage / "predictions.parquet")
    generations = pl.read_parquet(stage / "generations.parquet")
    assert generations.group_by("user_id").len()["len"].unique().to_list() == [20]  # 20 beams per user
    assert predictions.is_empty() or predictions["rank"].max() <= 20  # 4 SFT steps may map no name yet
    assert record["summary"]["users"] == record["summary"]["outputs"] == generations["user_id"].n_unique()
    _invoke("predict", "--run", str(run_root), "--method", "sft_single_ranked", "--users", "eval")
    ranked = pl.read_parquet(run_root / "llm_predict_sft_single_ranked_eval" / "predictions.parquet")
    assert ranked.height > 0 and ranked["rank"].max() <= 20
    assert not ranked.select("user_id", "anchor_date", "advertiser_id").is_duplicated().any()
    again = _invoke("sft", "--run", str(run_root), "--target", "single")
    assert "skipping" in again.output
    changed = _invoke("sft", "--run", str(run_root), "--target", "single", "--set", "sft.train.learning_rate=0.002")
    assert "skipping" not in changed.output


@pytest.mark.slow
def test_full_chain_writes_tables_2_3_4_with_baselines(run_root):
    for command in (["pretrain"], ["behaviour"], ["sft", "--target", "single"], ["sft", "--target", "list"], ["grpo"],
                    ["eval"], ["choose"], ["predict", "--method", "chosen", "--users", "serving"], ["fuse"]):
        _invoke(*command, "--run", str(run_root))
    choice = json.loads((run_root / "llm_choice" / "stage.json").read_text())["summary"]
    scores = choice["validation_recall_at_20"]
    assert choice["method"] in scores and scores[choice["method"]] == max(scores.values())
    served = json.loads((run_root / "llm_predict_chosen_serving" / "stage.json").read_text())["summary"]
    assert served["method"] == choice["method"]
    served_lists = pl.read_parquet(run_root / "llm_predict_chosen_serving" / "predictions.parquet")
    assert served_lists["source"].unique().to_list() == [f"llm_{choice['method']}"]
    results = pl.read_parquet(run_root / "llm_eval" / "results.parquet")
    methods = set(resolve_config("nano", None, None).eval.methods) | {
        "popularity", "most_recent", "lightgbm_pairs", "lightgbm_pairs_prompt", "allowed_names_ceiling",
        "most_recent_allowed", "next_conversion_ceiling"}
    assert set(results["method"]) == methods and set(results["eval_set"]) == {"v0", "v1"}
    recall = {(m, e): r for m, e, r in results.select("method", "eval_set", "recall_at_20").iter_rows()}
    labelled = results.filter(pl.col("n_labels") > 0)["eval_set"].unique().to_list()
    assert labelled
    for eval_set in labelled:  # the methods that choose among the allowed names stay under their ceiling
        for method in ("behaviour_ranked", "sft_single_ranked", "most_recent_allowed"):
            assert recall[(method, eval_set)] <= recall[("allowed_names_ceiling", eval_set)]
    # ranked methods and baselines see every eval label; the methods that generate text the sampled users'
    n_labels = {m: n for m, e, n in results.select("method", "eval_set", "n_labels").iter_rows() if e == "v1"}
    assert n_labels["behaviour_ranked_open"] == n_labels["sft_single_ranked"] == n_labels["most_recent"]
    assert n_labels["sft_single_beam"] < n_labels["most_recent"]  # the nano preset samples 6 eval users
    ablation = pl.read_parquet(run_root / "llm_eval" / "ablation.parquet")
    assert ablation.height == len(GROUPS) + 3
    assert (run_root / "llm_eval" / "results.md").read_text().startswith("### ")
    beside = pl.read_parquet(run_root / "llm_eval" / "complementarity.parquet")
    assert set(beside["method"]) == methods and beside.filter(pl.col("method") == "most_recent")[
        "hits_reference_misses"].item() == 0
    v1_labels = results.filter((pl.col("method") == "most_recent") & (pl.col("eval_set") == "v1"))["n_labels"].item()
    mechanisms = beside.filter(pl.col("method") == "most_recent").select(pl.sum_horizontal(pl.col("^labels_.*$")))
    assert mechanisms.item() == v1_labels  # every label's mechanism
    assert beside.filter(pl.col("method") == "sft_single_beam")["labels"].item() == n_labels["sft_single_beam"]
    effect = pl.read_parquet(run_root / "llm_eval" / "grpo_effect.parquet")  # GRPO beside its initialisation
    pairs = [("grpo_ranked", "sft_single_ranked"), ("grpo_ranked_open", "sft_single_ranked_open")]
    assert effect.select("method", "reference").rows() == [*pairs, pairs[0]]  # every anchor: the allowed rule's
    assert effect["anchors"].to_list() == ["evaluation"] * 2 + ["every"]
    every_anchor = labelled_users(run_world(run_root), "eval").filter(pl.col("in_v1"))
    assert effect["n_labels"].to_list() == [n_labels["most_recent"]] * 2 + [every_anchor.height]
    assert effect["n_users"][2] == every_anchor["user_id"].n_unique() < every_anchor.height  # users repeat
    against = pl.read_parquet(run_root / "llm_eval" / "baselines_effect.parquet").filter(pl.col("anchors") == "every")
    assert set(against.select("method", "reference").rows()) == {  # eval.every_anchor_methods' pairs
        ("behaviour_ranked", "most_recent_allowed"), ("behaviour_ranked_open", "most_recent"),
        ("behaviour_ranked_open", "lightgbm_pairs_prompt"), ("sft_single_ranked", "most_recent_allowed"),
        ("grpo_ranked", "most_recent_allowed")}
    assert (against["n_labels"] == every_anchor.height).all()
    gap = pl.read_parquet(run_root / "llm_eval" / "ceiling_gap.parquet")  # the generated world's own ceiling
    ranked = [name for name in resolve_config("nano", None, None).eval.methods if METHODS[name].is_ranked]
    assert gap["method"].to_list() == [*ranked, "most_recent", "lightgbm_pairs", "lightgbm_pairs_prompt"]
    assert set(gap["reference"]) == {"next_conversion_ceiling"} and (gap["n_labels"] == n_labels["most_recent"]).all()
    fused = pl.read_parquet(run_root / "llm_fusion" / "fusion.parquet")  # the chosen method beside LightGBM
    assert fused["method"].to_list() == [choice["method"], "other users' lists (negative control)",
                                         "oracle (positive control)"]
    assert (fused["n_labels"] == every_anchor.height).all() and fused["weight"].is_between(0, 1).all()
    assert fused["delta_recall_at_1_low"][2] > 0  # the oracle's gain is detected


@pytest.mark.slow
def test_semantic_id_chain_predicts_from_sid_prompts(run_root):
    for command in (["pretrain"], ["sid"], ["sft", "--target", "sid"],
                    ["predict", "--method", "sid_sft_single_beam", "--users", "eval"]):
        _invoke(*command, "--run", str(run_root))
    sids = pl.read_parquet(run_root / "llm_sid" / "item_sids.parquet")
    assert sids["sid"].str.starts_with("<a_").all()
    record = json.loads((run_root / "llm_predict_sid_sft_single_beam_eval" / "stage.json").read_text())
    assert record["summary"]["outputs"] == record["summary"]["users"] > 0


def test_prediction_keys_serve_fresh_lists_and_hold_out_trained_users(tiny_world):
    config = resolve_config("nano", None, ["heldout_max_users=3", "serving_max_users=5"])
    serving = prediction_keys(tiny_world, config, "serving")
    assert serving["anchor_date"].unique().to_list() == [tiny_world.events["ts"].max().date()]
    assert serving.height == 5 and serving["user_id"].is_unique().all()
    heldout = prediction_keys(tiny_world, config, "heldout")
    eval_users = set(tiny_world.splits.filter(pl.col("split") == "eval")["user_id"])
    assert set(heldout["user_id"]) <= eval_users and heldout["user_id"].n_unique() == 3  # never a trained user
    assert heldout.group_by("user_id").len()["len"].unique().to_list() == [tiny_world.labels["anchor_date"].n_unique()]


def test_the_small_preset_predicts_every_serving_user(tiny_world):
    """Paper 3.2.1's serving population: every user with a conversion in the 90 days before the world's
    last day (no sample); unset, `heldout_max_users` gives every eval-split user at every label anchor."""
    config = resolve_config("small", None, None)
    assert config.serving_max_users is None  # the tiny world has fewer serving users than any cap would
    config = replace(config, heldout_max_users=None)
    keys = {users: prediction_keys(tiny_world, config, users) for users in ("serving", "heldout")}
    last = tiny_world.events["ts"].max()
    recent = tiny_world.events.filter(pl.col("kind").is_in(["attributed_conversion", "matched_conversion"]),
                                      pl.col("ts") >= last.replace(hour=0, minute=0, second=0, microsecond=0)
                                      - timedelta(days=89))
    assert set(keys["serving"]["user_id"]) == set(recent["user_id"]) and keys["serving"].height > 10
    eval_users = tiny_world.splits.filter(pl.col("split") == "eval")
    assert keys["heldout"].height == eval_users.height * tiny_world.labels["anchor_date"].n_unique()
    with pytest.raises(ConfigError, match="serving_max_users"):
        resolve_config("small", None, ["serving_max_users=0"])


def test_predict_rejects_an_unknown_user_set(run_root):
    result = runner.invoke(app, ["predict", "--run", str(run_root), "--users", "everyone", "--preset", "nano"])
    assert result.exit_code == 2 and "heldout" in result.output


@pytest.mark.parametrize("command", [["pretrain"], ["behaviour"], ["sft"], ["sid"], ["grpo"], ["choose"], ["fuse"],
                                     ["eval"], ["predict", "--method", "chosen", "--users", "serving"]])
def test_a_stage_on_a_folder_that_is_not_a_run_says_so_in_one_line(command, tmp_path):
    result = runner.invoke(app, [*command, "--run", str(tmp_path), "--preset", "nano", "--quiet"])
    assert result.exit_code == 2 and "is not a run folder (it has no world/)" in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
