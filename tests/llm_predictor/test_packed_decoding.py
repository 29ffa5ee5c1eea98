"""Packed decoding (one KV cache row per prompt for all its beams or samples) against `generate`, which
decodes each sequence in its own row: the same texts, on prompts of different lengths, with sequences that
end at different steps."""

from __future__ import annotations

import pytest
import torch

from llm_predictor.decoding import DecodingConfig, generate_kwargs, generate_texts
from llm_predictor.model import ModelConfig, build_model
from llm_predictor.packed_decoding import is_packable, packed_generate
from llm_predictor.tokenizer import TokenizerConfig, train_tokenizer

NAMES = ["Potean Collective", "Potean", "Tratrea Co.", "Deachigrin House", "Vowis Labs", "Levi's", "Tystol Co."]
PROMPTS = ["user a", "user b likes rugs and more rugs from Potean", "c", "Vowis Labs|Levi's|Potean"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([f"{a}|{b} sells rugs\n" for a in NAMES for b in NAMES] * 3, TokenizerConfig(vocab_size=400))


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(ModelConfig(size="nano", seed=3), tokenizer).eval()


@pytest.fixture
def ends_after_some_tokens(model, tokenizer):
    """An untrained model never ends; this one makes the end likely after a quarter of the tokens (a function of
    the token fed, so every way of running the model sees the same distribution), so sequences end at
    different steps, some before the first, some never."""
    def favour_the_end(module, args, kwargs, output):
        fed = kwargs["input_ids"][:, -output.logits.shape[1]:]
        output.logits[..., tokenizer.eos_token_id] += 5.0 * (fed % 4 == 0).to(output.logits.dtype)
        return output

    hook = model.register_forward_hook(favour_the_end, with_kwargs=True)
    yield
    hook.remove()


def _generate(model, tokenizer, config: DecodingConfig) -> tuple[list[str], list[int]]:
    """`generate`'s texts and generated tokens (neither padding nor the end) for `PROMPTS`."""
    batch = tokenizer([prompt + config.response_prefix for prompt in PROMPTS], return_tensors="pt", padding=True,
                      add_special_tokens=False)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(config.seed)
        output = model.generate(**batch, max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id, **generate_kwargs(config))
    generated = output[:, batch["input_ids"].shape[1]:]
    counts = (~torch.isin(generated, torch.tensor([tokenizer.pad_token_id, tokenizer.eos_token_id]))).sum(1)
    texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [config.response_prefix + text for text in texts], counts.tolist()


@pytest.mark.parametrize("params", [
    dict(strategy="beam", num_beams=5, num_return_sequences=3),
    dict(strategy="beam", num_beams=6, num_return_sequences=6),
    dict(strategy="sampling", num_return_sequences=5),
    dict(strategy="sampling", temperature=0.7, top_p=0.8, num_return_sequences=4, seed=11),
])
def test_packed_decoding_equals_generate(model, tokenizer, ends_after_some_tokens, params):
    config = DecodingConfig(max_new_tokens=16, response_prefix=" Potean", **params)
    packed = packed_generate(model, tokenizer, PROMPTS, config)
    assert packed == _generate(model, tokenizer, config)
    counts = packed[1]
    assert len(set(counts)) > 2 and max(counts) == 16  # sequences ended at several steps, some not at all


def test_packed_greedy_decoding_equals_generate_as_prompts_leave_the_batch(model, tokenizer):
    """Greedy answers end at different steps (the end made the likeliest token where the fed token plus its
    position is a multiple of 13), and each prompt leaves the packed batch when its answer ends."""
    def end_now_and_then(module, args, kwargs, output):
        width = output.logits.shape[1]
        fed, position = kwargs["input_ids"][:, -width:], kwargs["position_ids"][:, -width:]
        output.logits[..., tokenizer.eos_token_id] += 50.0 * ((fed + position) % 13 == 0).to(output.logits.dtype)
        return output

    hook = model.register_forward_hook(end_now_and_then, with_kwargs=True)
    try:
        config = DecodingConfig(strategy="greedy", max_new_tokens=16)
        packed = packed_generate(model, tokenizer, PROMPTS, config)
        assert packed == _generate(model, tokenizer, config)
    finally:
        hook.remove()
    assert len(set(packed[1])) > 2, packed[1]


@pytest.mark.parametrize("params", [dict(strategy="greedy"),
                                    dict(strategy="beam", num_beams=4, num_return_sequences=4)])
def test_packed_decoding_equals_generate_when_no_sequence_ends(model, tokenizer, params):
    config = DecodingConfig(max_new_tokens=9, **params)
    packed = packed_generate(model, tokenizer, PROMPTS, config)
    assert packed == _generate(model, tokenizer, config)
    assert packed[1] == [9] * len(PROMPTS) * config.num_return_sequences


def test_generate_texts_packs_only_what_packs_identically(model, tokenizer, monkeypatch):
    beams = DecodingConfig(strategy="beam", num_beams=3, num_return_sequences=2, max_new_tokens=4)
    assert is_packable(model, beams)
    assert is_packable(model, DecodingConfig(strategy="greedy"))
    assert not is_packable(model, DecodingConfig(strategy="beam", num_beams=1))
    assert not is_packable(model, DecodingConfig(strategy="sampling"))  # one sample a prompt: `generate`
    assert not is_packable(model, DecodingConfig(strategy="beam", num_beams=3, is_name_constrained=True))
    calls = []
    monkeypatch.setattr("llm_predictor.packed_decoding.packed_generate",
                        lambda *args: calls.append(args) or ([], []))
    generate_texts(model, tokenizer, PROMPTS, beams)
    assert len(calls) == 1
    penalised = build_model(ModelConfig(size="nano", seed=3), tokenizer).eval()
    penalised.generation_config.repetition_penalty = 1.3  # a user's model may set a processor of its own
    assert not is_packable(penalised, beams)
    with pytest.raises(ValueError, match="decode with generate_texts"):
        packed_generate(penalised, tokenizer, PROMPTS, beams)
    generate_texts(penalised, tokenizer, PROMPTS, beams)
    assert len(calls) == 1
