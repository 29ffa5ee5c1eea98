"""Semantic IDs: residual codes, SID sequences, SID tokens and the phase-1 freeze (paper 3.5)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import numpy as np
import polars as pl
import pytest
import torch

from llm_predictor.features import compile_features, preset_pool_names
from llm_predictor.model import ModelConfig, load_model, prepare_base_model
from llm_predictor.pretrain import PretrainConfig, TrainConfig
from llm_predictor.prompts import render
from llm_predictor.semantic_ids import (
    SemanticIDConfig, add_sid_tokens, assign_codes, fit_codebooks, item_sids, sid_documents, sid_sequences,
    sid_tokens, train_phases,
)
from llm_predictor.tokenizer import TokenizerConfig, load_tokenizer


def test_each_level_explains_more_of_the_embedding():
    points = np.random.default_rng(0).normal(size=(300, 8))
    config = SemanticIDConfig(levels=3, codebook_size=8)
    codebooks = fit_codebooks(points, config)
    codes = assign_codes(points, codebooks)
    assert codes.shape == (300, 3) and codes.min() >= 0 and codes.max() < 8
    errors, reconstruction = [], np.zeros_like(points)
    for level, centroids in enumerate(codebooks):
        reconstruction = reconstruction + centroids[codes[:, level]]
        errors.append(((points - reconstruction) ** 2).sum())
    assert errors[0] > errors[1] > errors[2]
    assert (assign_codes(points, fit_codebooks(points, config)) == codes).all()  # seeded


def test_first_level_separates_well_separated_clusters():
    points = np.array([[0, 0], [0.1, 0], [10, 10], [10, 10.1]], dtype=float)
    codes = assign_codes(points, fit_codebooks(points, SemanticIDConfig(levels=1, codebook_size=2)))
    assert codes[0, 0] == codes[1, 0] != codes[2, 0] == codes[3, 0]


def test_sid_sequences_are_recent_first_capped_and_cut_at_the_anchor():
    ts = [datetime(2026, 1, day, tzinfo=timezone.utc) for day in (1, 2, 3, 4, 9)]
    events = pl.DataFrame({"user_id": [1, 1, 1, 1, 1], "ts": ts, "item_id": [10, 11, None, 12, 13]})
    sids = pl.DataFrame({"item_id": [10, 11, 12, 13], "sid": ["<a_0>", "<a_1>", "<a_2>", "<a_3>"]})
    out = sid_sequences(events, sids, date(2026, 1, 5), [1, 2], SemanticIDConfig(max_sequence_items=2))
    assert out.to_dict(as_series=False) == {"user_id": [1, 2], "sid_sequences": ["<a_2>|<a_1>", ""]}


def test_sid_prompt_renders_on_the_tiny_world(tiny_world):
    config = SemanticIDConfig(levels=2, codebook_size=4)
    sids = item_sids(tiny_world.items, config)
    assert sids["sid"].str.count_matches("<").unique().to_list() == [2]
    anchor = tiny_world.labels["anchor_date"].min()
    users = tiny_world.labels.filter(pl.col("anchor_date") == anchor)["user_id"].head(5)
    features = compile_features(tiny_world, anchor, users).join(
        sid_sequences(tiny_world.events, sids, anchor, users, config), on="user_id")
    prompts = render(features, preset_pool_names(tiny_world, anchor, 5), "sft_sid")
    assert prompts.str.contains("SID Sequences [<a_", literal=True).any()
    assert len(sid_documents(tiny_world.items, sids, tiny_world.advertisers)) == tiny_world.items.height


def test_phase_one_moves_only_the_new_sid_embeddings(tmp_path):
    config = SemanticIDConfig(levels=2, codebook_size=4)
    texts = [f"item {i} is a rug from Potean Collective" for i in range(40)]
    base = prepare_base_model(ModelConfig(size="nano"), TokenizerConfig(vocab_size=320), texts, tmp_path / "base")
    first_new = add_sid_tokens(base, config, tmp_path / "sid")
    tokenizer = load_tokenizer(tmp_path / "sid")
    assert len(tokenizer) == first_new + len(sid_tokens(config))
    assert tokenizer("<a_3><b_1>", add_special_tokens=False)["input_ids"] == [first_new + 3, first_new + 4 + 1]
    documents = [f"<a_{i % 4}><b_{i % 3}> is item {i} from Potean Collective." for i in range(60)]
    train = TrainConfig(max_steps=15, batch_size=4, learning_rate=1e-2, warmup_steps=0, logging_steps=5, save_steps=15)
    summary = train_phases(tmp_path / "sid", documents, texts, PretrainConfig(train=train, block_size=32),
                           tmp_path / "phases", first_new, show_progress=False)
    before = load_model(tmp_path / "sid").state_dict()
    after_1 = load_model(summary["phase_1"]["model_dir"]).state_dict()
    after_2 = load_model(summary["phase_2"]["model_dir"]).state_dict()
    embedding = "model.embed_tokens.weight"
    assert torch.equal(before[embedding][:first_new], after_1[embedding][:first_new])
    assert not torch.equal(before[embedding][first_new:], after_1[embedding][first_new:])
    for name in before:
        if name != embedding and "lm_head" not in name:
            assert torch.equal(before[name], after_1[name]), name
    assert not torch.equal(after_1["model.layers.0.mlp.up_proj.weight"], after_2["model.layers.0.mlp.up_proj.weight"])
    assert summary["phase_1"]["last_loss"] < summary["phase_1"]["first_loss"]


def test_bad_levels_names_the_field():
    with pytest.raises(Exception, match="levels"):
        SemanticIDConfig(levels=0)
