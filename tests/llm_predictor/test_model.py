"""The default causal LM: Llama with head_dim 64, seeded builds, bf16 autocast close to fp32."""

from __future__ import annotations

import pytest
import torch

from llm_predictor.model import HEAD_DIM, SIZES, ModelConfig, autocast, build_model, load_model, parameter_count
from llm_predictor.tokenizer import TokenizerConfig, train_tokenizer
from synthetic_data.config_io import ConfigError

TEXTS = ["Shop Potean Collective at potean.shop|Tratrea Co.|gaming speakers\n"] * 50


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, TokenizerConfig(vocab_size=320))


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_size_is_llama_with_head_dim_64(tokenizer, size):
    config = build_model(ModelConfig(size=size), tokenizer).config
    hidden, layers, heads, _ = SIZES[size]
    assert config.model_type == "llama"
    assert config.head_dim == HEAD_DIM == hidden // heads
    assert config.num_hidden_layers == layers and config.vocab_size == len(tokenizer)
    assert config.eos_token_id == tokenizer.eos_token_id and config.pad_token_id == tokenizer.pad_token_id


def test_build_is_seeded_and_leaves_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_model(ModelConfig(size="nano", seed=1), tokenizer)
    assert torch.rand(1) == expected_next  # the global generator did not move
    second = build_model(ModelConfig(size="nano", seed=1), tokenizer)
    other = build_model(ModelConfig(size="nano", seed=2), tokenizer)
    weight = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_saved_model_reloads_with_identical_logits(tokenizer, tmp_path):
    model = build_model(ModelConfig(size="nano"), tokenizer).eval()
    model.save_pretrained(tmp_path)
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, load_model(tmp_path)(ids).logits)


def test_bf16_autocast_matches_fp32(tokenizer):
    model = build_model(ModelConfig(size="small"), tokenizer).eval()
    ids = torch.tensor([tokenizer(TEXTS[0] * 4)["input_ids"]])
    with torch.no_grad():
        full = model(ids, labels=ids)
        with autocast(True):
            half = model(ids, labels=ids)
    assert half.logits.dtype == torch.bfloat16
    assert abs(half.loss.item() - full.loss.item()) / full.loss.item() < 0.01
    agreement = (half.logits.argmax(-1) == full.logits.argmax(-1)).float().mean().item()
    assert agreement > 0.9
    assert parameter_count(model) < 10_000_000


def test_base_model_dir_must_be_a_model_directory(tmp_path):
    with pytest.raises(ConfigError, match="base_model_dir"):
        ModelConfig(base_model_dir=str(tmp_path))


def test_throughput_rows_count_the_tokens_of_every_measure(monkeypatch):
    from llm_predictor import throughput
    from llm_predictor.throughput import measure

    monkeypatch.setattr(throughput, "matmul_ceiling", lambda: 4.2e11)  # timed in its own test

    rows = measure(size="nano", vocab_size=300, batch_size=2, seq_len=32, train_steps=1, n_prompts=2,
                   prompt_len=16, new_tokens=4, num_beams=2, is_compiled=False)
    assert [row["measure"] for row in rows] == [
        "train tokens/s (fp32)", "train tokens/s (bf16 autocast)",
        "generate tokens/s (beam, 2 beams, prefill per beam)", "generate tokens/s (beam, 2 beams, prompt cache)",
        "generate tokens/s (beam, 2 beams, packed)", "generate tokens/s (sampling, 2 a prompt, prompt cache)",
        "generate tokens/s (sampling, 2 a prompt, packed)", "generate tokens/s (sampling, 1 a prompt)"]
    assert [row["tokens"] for row in rows] == [64, 64, 16, 16, 16, 16, 16, 8]
    assert all(row["tokens_per_second"] > 0 and row["share_of_bf16_ceiling"] > 0 for row in rows)
    assert {row["bf16_ceiling_gflops"] for row in rows} == {420}  # the measured ceiling, not a constant


@pytest.mark.slow
def test_the_compiled_training_row_steps_the_same_parameters():
    """The compiled row (inductor compiles in the untimed first step) trains the model it measures."""
    import torch

    from llm_predictor.throughput import _Vocabulary, training_rows

    model = build_model(ModelConfig(size="nano"), _Vocabulary(300))
    before = [p.detach().clone() for p in model.parameters()]
    rows = training_rows(model, 2, 32, 2, torch.Generator().manual_seed(0), 4.2e11, variants=((True, True),))
    assert [row["measure"] for row in rows] == ["train tokens/s (bf16 autocast, torch.compile)"]
    assert rows[0]["tokens"] == 2 * 2 * 32 and rows[0]["share_of_bf16_ceiling"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_matmul_ceiling_counts_two_flops_per_multiply_add(monkeypatch):
    from llm_predictor import throughput

    clock = iter([0.0, 0.5] * 3)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    assert throughput.matmul_ceiling("float32", size=8, repeats=3) == 2 * 8 ** 3 / 0.5
