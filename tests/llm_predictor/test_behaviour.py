"""Behaviour-sequence documents and the capability they teach: a `nano` model trained on them for a few
seconds puts a held-out user's own most recent advertiser first far more often than popularity does."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import numpy as np
import polars as pl
import pytest

from llm_predictor.behaviour import (BehaviourConfig, behaviour_documents, behaviour_sequences, sequence_prompt,
                                     validation_users)
from llm_predictor.pretrain import TrainConfig
from llm_predictor.sft import rehearsal_pairs
from synthetic_data.config_io import ConfigError


class _World:
    """The tables `behaviour_sequences` reads, written by hand: events are (user, ts, kind, advertiser) or
    (user, ts, kind, advertiser, text)."""

    def __init__(self, events: list[tuple]):
        self.advertisers = pl.DataFrame({"advertiser_id": [1, 2, 3], "name": ["Alpha Co.", "Beta Labs", "Gamma"]},
                                        schema={"advertiser_id": pl.Int32, "name": pl.String})
        self.brands = pl.DataFrame({"brand_id": [10], "name": ["Zeta"], "advertiser_id": [3]},
                                   schema={"brand_id": pl.Int32, "name": pl.String, "advertiser_id": pl.Int32})
        self.events = pl.DataFrame(
            [(user, datetime.fromisoformat(ts).replace(tzinfo=timezone.utc), kind, advertiser, text, None)
             for user, ts, kind, advertiser, text in (event + (None,) * (5 - len(event)) for event in events)],
            schema={"user_id": pl.Int64, "ts": pl.Datetime("us", "UTC"), "kind": pl.String,
                    "advertiser_id": pl.Int32, "text": pl.String, "brand_id": pl.Int32}, orient="row")


def _plain(max_conversions: int = 10, window_days: int = 0) -> BehaviourConfig:
    """Sequences of names only: no age markers, and URLs and searches only when asked for."""
    return BehaviourConfig(max_conversions=max_conversions, url_window_days=window_days, search_window_days=window_days,
                           age_buckets_days=())


def test_age_markers_open_each_buckets_run_and_close_a_sequence_that_ends_before_the_last_day():
    world = _World([
        (7, "2026-02-01T10:00", "attributed_conversion", 1),  # 29.6 days before the end (Mar 3, 00:00)
        (7, "2026-02-25T10:00", "offsite_url", 3),  # 5.6 days
        (7, "2026-02-26T10:00", "onsite_search", None, "cheap beta labs shoes"),  # 4.6 days: same bucket
        (7, "2026-03-01T10:00", "matched_conversion", 2),  # 1.6 days
        (7, "2026-03-02T10:00", "matched_conversion", 3),  # 0.6 days: the newest bucket, no closing marker
        (8, "2026-02-20T00:00", "matched_conversion", 3),  # exactly 11 days
        (8, "2026-02-21T00:00", "matched_conversion", 1),  # 10 days: same bucket; closed by @0
    ])
    keys = pl.DataFrame({"user_id": [7, 8], "anchor_date": [date(2026, 3, 2)] * 2})
    config = BehaviourConfig(max_conversions=10, age_buckets_days=(1, 2, 4, 8, 16, 32))
    table = behaviour_sequences(world, keys, config)
    assert table["sequence"].to_list() == ["@16|Alpha Co.|@4|~Gamma|?Beta Labs|@1|Beta Labs|@0|Gamma",
                                           "@8|Gamma|Alpha Co.|@0"]
    assert table["items"].to_list() == [5, 2]  # markers are not items
    # ages are counted from the end of the key's own anchor date
    later = behaviour_sequences(world, keys.with_columns(anchor_date=pl.lit(date(2026, 3, 30))), config)
    assert later["sequence"][1] == "@32|Gamma|Alpha Co.|@0"
    with pytest.raises(ConfigError, match="behaviour.age_buckets_days"):
        BehaviourConfig(age_buckets_days=(4, 2))
    with pytest.raises(ConfigError, match="behaviour.age_buckets_days"):
        BehaviourConfig(age_buckets_days=(0, 2))


def test_behaviour_sequences_are_oldest_first_cut_at_the_anchor_day_and_capped():
    world = _World([
        (7, "2026-03-01T10:00", "matched_conversion", 2),
        (7, "2026-02-01T10:00", "attributed_conversion", 1),
        (7, "2026-02-15T10:00", "offsite_url", 3),  # not a conversion
        (7, "2026-03-02T23:59", "attributed_conversion", 3),  # on the anchor day: kept
        (7, "2026-03-03T00:00", "attributed_conversion", 1),  # after the anchor day: cut
        (8, "2026-03-05T00:00", "attributed_conversion", 1),  # only after the anchor
    ])
    keys = pl.DataFrame({"user_id": [8, 7], "anchor_date": [date(2026, 3, 2)] * 2})
    table = behaviour_sequences(world, keys, _plain(max_conversions=10))
    assert table["user_id"].to_list() == [8, 7]  # the keys' order
    assert table["sequence"].to_list() == ["", "Alpha Co.|Beta Labs|Gamma"]
    assert table["items"].to_list() == [0, 3]
    assert behaviour_sequences(world, keys, _plain(max_conversions=2))["sequence"][1] == "Beta Labs|Gamma"
    assert sequence_prompt(table["sequence"]).to_list() == ["|", "Alpha Co.|Beta Labs|Gamma|"]


def test_browse_items_are_the_windows_searches_and_urls_marked_before_their_advertisers_name():
    world = _World([
        (7, "2026-02-01T10:00", "attributed_conversion", 1),
        (7, "2026-02-01T11:00", "offsite_url", 2),  # before the 14-day window: left out
        (7, "2026-02-25T10:00", "offsite_url", 3),
        (7, "2026-02-26T10:00", "onsite_search", None, "cheap beta labs shoes"),  # names an advertiser
        (7, "2026-02-26T11:00", "offsite_search", None, "zeta boots"),  # names a brand of advertiser 3
        (7, "2026-02-26T12:00", "offsite_search", None, "boots"),  # names none: left out
        (7, "2026-02-27T10:00", "engagement", 2),  # not a prompt event
        (7, "2026-03-01T10:00", "matched_conversion", 2),
        (7, "2026-03-03T10:00", "offsite_url", 1),  # after the anchor day
    ])
    keys = pl.DataFrame({"user_id": [7], "anchor_date": [date(2026, 3, 2)]})
    assert behaviour_sequences(world, keys, _plain(window_days=14))["sequence"].to_list() == [
        "Alpha Co.|~Gamma|?Beta Labs|?Gamma|Beta Labs"]
    assert behaviour_sequences(world, keys, _plain())["sequence"].to_list() == ["Alpha Co.|Beta Labs"]
    assert behaviour_sequences(world, keys, _plain(max_conversions=1, window_days=14))["sequence"].to_list() == [
        "~Gamma|?Beta Labs|?Gamma|Beta Labs"]  # the conversion cap leaves the browses alone
    # each kind its own window: URLs of 3 days drop the URL of Feb 25, 6 days of searches keep both searches
    windows = BehaviourConfig(max_conversions=10, url_window_days=3, search_window_days=6)
    assert behaviour_sequences(world, keys, windows)["sequence"].to_list() == [
        "Alpha Co.|?Beta Labs|?Gamma|Beta Labs"]
    assert behaviour_sequences(world, keys, replace(windows, search_window_days=0))["sequence"].to_list() == [
        "Alpha Co.|Beta Labs"]
    with pytest.raises(ConfigError, match="behaviour.url_window_days"):
        BehaviourConfig(url_window_days=-1)
    with pytest.raises(ConfigError, match="behaviour.search_window_days"):
        BehaviourConfig(search_window_days=-1)


def test_validation_users_are_train_users_and_documents_leave_them_and_eval_users_out(tiny_world):
    config = BehaviourConfig(validation_users=40)
    held_out = validation_users(tiny_world, 40, seed=0)
    train_users = tiny_world.splits.filter(pl.col("split") == "train")["user_id"]
    assert held_out.height == 40 and held_out["user_id"].is_in(train_users.to_list()).all()
    assert held_out.equals(validation_users(tiny_world, 40, seed=0))
    anchor = tiny_world.labels["anchor_date"].max()
    train, validation = behaviour_documents(tiny_world, config, seed=0)
    everyone = behaviour_sequences(tiny_world, tiny_world.users.select("user_id").with_columns(
        anchor_date=pl.lit(anchor)), config).filter(pl.col("items") >= 2)
    is_held_out = pl.col("user_id").is_in(held_out["user_id"].to_list())
    is_train = pl.col("user_id").is_in(train_users.to_list())
    assert sorted(train) == sorted(everyone.filter(is_train & ~is_held_out)["sequence"].to_list())
    assert sorted(validation) == sorted(everyone.filter(is_held_out)["sequence"].to_list())
    assert validation and len(train) > len(validation)
    with pytest.raises(ValueError, match="validation_users"):
        validation_users(tiny_world, train_users.len(), seed=0)
    with pytest.raises(ConfigError, match="behaviour.max_conversions"):
        BehaviourConfig(max_conversions=0)


def test_document_anchors_add_a_train_document_per_earlier_anchor_and_keep_validation_at_the_latest(tiny_world):
    anchors = tiny_world.labels["anchor_date"].unique().sort(descending=True).to_list()
    assert len(anchors) >= 2
    one = BehaviourConfig(validation_users=40)
    two = replace(one, document_anchors=2)
    train_one, validation_one = behaviour_documents(tiny_world, one, seed=0)
    train_two, validation_two = behaviour_documents(tiny_world, two, seed=0)
    assert validation_two == validation_one  # the validation loss stays comparable across settings
    held_out = validation_users(tiny_world, 40, seed=0)["user_id"].to_list()
    train_users = tiny_world.splits.filter(pl.col("split") == "train", ~pl.col("user_id").is_in(held_out))
    earlier = behaviour_sequences(tiny_world, train_users.select("user_id").with_columns(
        anchor_date=pl.lit(anchors[1])), one).filter(pl.col("items") >= 2)["sequence"].to_list()
    assert sorted(train_two) == sorted(train_one + earlier) and len(earlier) > 0
    assert set(earlier) - set(train_one)  # an earlier anchor's sequence is another document, not a copy
    with pytest.raises(ValueError, match="behaviour.document_anchors"):
        behaviour_documents(tiny_world, replace(one, document_anchors=len(anchors) + 1), seed=0)
    with pytest.raises(ConfigError, match="behaviour.document_anchors"):
        BehaviourConfig(document_anchors=0)


def test_rehearsal_pairs_put_every_later_name_in_the_completion():
    prompts, completions = rehearsal_pairs(["A|B|C", "single", "D|E"], "|")
    assert prompts == ["A|", "D|"] and completions == ["B|C", "E"]


@pytest.mark.parametrize("advertiser_tokens", [False, True], ids=["text_names", "advertiser_tokens"])
def test_a_nano_model_trained_on_sequences_for_seconds_puts_the_users_own_latest_advertiser_first(
        tmp_path, advertiser_tokens):
    """The capability issue 14 found missing: reading the user's own advertisers. Held-out eval users, every
    advertiser a label can name ranked; popularity puts a user's latest advertiser first for ~6% of them. With
    names spelt in subwords, and with each name one token (`tokenizer.advertiser_tokens`): at a learning rate of
    3e-3 they put it first for 46% and 35% of users; at 1e-2 the advertiser-token model had not settled by step
    400 (10%; 58% at step 800).
    Conversion sequences only: with the default browse items the latest conversion is no longer the best first
    guess (a browsed advertiser often is), and a nano model learns that mixture too slowly for a fast test
    (400 steps: the latest advertiser first for 11.5% of users against popularity's 5.8%)."""
    from synthetic_data.presets import preset
    from synthetic_data.world import generate_world

    from llm_predictor.baselines import eligible_advertisers, popularity_predictions
    from llm_predictor.model import ModelConfig, load_model, prepare_base_model
    from llm_predictor.name_ranking import name_logprobs, prepare_names, rank_names, top_k_names
    from llm_predictor.pretrain import PretrainConfig, pretrain
    from llm_predictor.tokenizer import TokenizerConfig, load_tokenizer

    world = generate_world(preset("tiny", ["users.n_users=2000"]), progress=False)
    anchor = world.labels["anchor_date"].max()
    config = BehaviourConfig(train=TrainConfig(max_steps=400, batch_size=16, learning_rate=3e-3, warmup_steps=5,
                                               save_steps=400, logging_steps=100), block_size=64, validation_users=50,
                             url_window_days=0, search_window_days=0, eval_steps=200)
    train, validation = behaviour_documents(world, config, seed=0)
    advertisers = world.advertisers["name"].to_list()
    tokenizer_config = TokenizerConfig(vocab_size=600, advertiser_tokens=advertiser_tokens)
    base = prepare_base_model(ModelConfig(size="nano"), tokenizer_config, train + advertisers, tmp_path / "base",
                              names=advertisers)
    summary = pretrain(base, train, PretrainConfig(train=config.train, block_size=config.block_size), tmp_path / "cpt",
                       show_progress=False, validation_texts=validation, eval_steps=config.eval_steps)
    assert [step for step, _ in summary["validation_losses"]] == [200, 400]

    eval_users = world.splits.filter(pl.col("split") == "eval").select("user_id", anchor_date=pl.lit(anchor))
    # the prompts carry the browse items the documents did; `latest`: the last item without a browse marker
    sequences = behaviour_sequences(world, eval_users, config).with_columns(
        latest=pl.col("sequence").str.split("|").list.eval(pl.element().filter(~pl.element().str.contains(r"^[~?@]")))
        .list.last()).filter(pl.col("latest").is_not_null() & (pl.col("latest") != ""))
    latest = sequences["latest"].to_numpy()
    names = eligible_advertisers(world)["name"].to_list()
    model_dir = tmp_path / "cpt" / "model"
    prompts = sequence_prompt(sequences["sequence"]).to_list()
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    name_lengths = {len(ids) for ids in tokenizer(names, add_special_tokens=False)["input_ids"]}
    assert (name_lengths == {1}) == advertiser_tokens, name_lengths
    ranked = rank_names(model, tokenizer, prompts, [names] * sequences.height, top_k=1, name_end="separator")
    model_share = np.mean([found[0].name == name for found, name in zip(ranked, latest)])
    popular_first = popularity_predictions(world, sequences.select("user_id", "anchor_date")).filter(
        pl.col("rank") == 1)
    first = sequences.join(popular_first, on=["user_id", "anchor_date"], how="left", maintain_order="left")
    popularity_share = np.mean(latest == first["advertiser_name"].to_numpy())
    assert sequences.height >= 100
    print(f"latest advertiser first: model {model_share:.3f}, popularity {popularity_share:.3f}")
    # a model that learnt only the popularity prior scores about the latter
    assert model_share >= popularity_share + 0.2, (model_share, popularity_share)

    # bounded ranking on a trained model stops early, and its top 5 is that of every name scored (the tiny
    # world's 26 names leave a top 20 no room to stop early)
    _, name_ids = prepare_names(tokenizer, [names] * 32)
    best, _, scored = top_k_names(model, tokenizer, prompts[:32], name_ids, 5, name_end="separator")
    every = name_logprobs(model, tokenizer, prompts[:32], name_ids, name_end="separator")
    assert [b.tolist() for b in best] == [np.argsort(-e, kind="stable")[:5].tolist() for e in every]
    print(f"names scored: {scored} of {32 * len(names)}")
    assert scored < 0.6 * 32 * len(names)


def test_sequence_prompts_name_the_allowed_or_every_eligible_advertiser(tiny_world, tmp_path):
    from llm_predictor.baselines import eligible_advertisers
    from llm_predictor.config import METHODS, resolve_config
    from llm_predictor.predict import build_prompts
    from llm_predictor.stages import method_prompts
    from synthetic_data.run_folder import RunFolder

    run = RunFolder(tmp_path)
    config = resolve_config("nano", None, None)
    anchor = tiny_world.labels["anchor_date"].max()
    keys = tiny_world.labels.filter(pl.col("anchor_date") == anchor).select("user_id", "anchor_date").head(12)
    sequences = behaviour_sequences(tiny_world, keys, config.behaviour)
    expected = dict(zip(sequences["user_id"], sequence_prompt(sequences["sequence"])))
    allowed = method_prompts(run, tiny_world, config, METHODS["behaviour_ranked"], keys, config.features)
    paper = build_prompts(tiny_world, keys, config.features, config.preset_pool_size, "sft")
    assert dict(zip(allowed["user_id"], allowed["prompt"])) == expected
    assert allowed.select("user_id", "allowed_names").equals(paper.select("user_id", "allowed_names"))
    open_rule = method_prompts(run, tiny_world, config, METHODS["behaviour_ranked_open"], keys, config.features)
    assert dict(zip(open_rule["user_id"], open_rule["prompt"])) == expected
    names = eligible_advertisers(tiny_world)["name"].to_list()
    assert open_rule.height == keys.height and all(found.to_list() == names for found in open_rule["allowed_names"])


def test_sft_rehearsal_needs_the_behaviour_stages_documents(tmp_path):
    from llm_predictor.stages import _rehearsal
    from synthetic_data.run_folder import RunFolder

    with pytest.raises(ConfigError, match="adsim llm behaviour --force"):
        _rehearsal(RunFolder(tmp_path), 0.5, 10)
