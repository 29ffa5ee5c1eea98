"""Name ranking: each allowed name scored as the whole answer (its tokens, then the end), from one
cached prefill per prompt; checked against a plain forward pass over prompt + name, and the bounded
top-k against scoring every name."""

from __future__ import annotations

import numpy as np
import pytest

from llm_predictor.backends import TransformersBackend
from llm_predictor.decoding import DecodingConfig, generate_kwargs
from llm_predictor.model import ModelConfig, build_model
from llm_predictor.name_ranking import name_logprobs, rank_names, top_k_names
from llm_predictor.tokenizer import TokenizerConfig, train_tokenizer
from synthetic_data.config_io import ConfigError

NAMES = ["Potean Collective", "Potean", "Tratrea Co.", "Deachigrin House", "Vowis Labs", "Levi's"]
PROMPTS = ["user a", "user b likes rugs and more rugs from Potean and Vowis Labs", "c"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([f"{a} and {b} sell rugs to users|{a}|{b}" for a in NAMES for b in NAMES] * 3,
                           TokenizerConfig(vocab_size=300))


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(ModelConfig(size="nano", seed=5), tokenizer).eval()


def _plain_logprob(model, tokenizer, prompt: str, name: str, ends: tuple[str, ...] = ()) -> float:
    """log P(name, then the end of sequence or one of `ends` | prompt) from one unpadded forward pass
    over the prompt and the name."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = tokenizer(name, add_special_tokens=False)["input_ids"]
    end_ids = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(end) for end in ends]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + answer])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1:], dim=-1)
    name_part = logprobs[torch.arange(len(answer)), torch.tensor(answer)].sum()
    return float(name_part + torch.logsumexp(logprobs[-1, end_ids], dim=0))


@pytest.fixture(params=["eager", "sdpa"])
def any_attention(model, request):
    """The model under each attention kernel (CPU serving uses eager, which adds the 4D mask itself)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(request.param)
    yield model
    model.set_attn_implementation(previous)


# a template header the prompts share: it runs once and its cache serves every prompt
HEADER = "Potean and Vowis Labs and Tratrea Co. sell rugs to users; Deachigrin House sells rugs to users too.\n"


@pytest.mark.parametrize("header", ["", HEADER])
@pytest.mark.parametrize("name_end, ends", [("eos", ()), ("separator", ("|",))])
def test_scores_equal_a_plain_forward_pass(any_attention, tokenizer, name_end, ends, header):
    """Left-padded prompts of different lengths (after a shared header or not), names of different lengths
    packed into one row, split over forward passes: a wrong position, mask, token offset or end changes the
    scores."""
    model = any_attention
    prompts = [header + prompt for prompt in PROMPTS]
    names = [NAMES, NAMES[2:5], ["Levi's", "Potean"]]
    name_ids = [tokenizer(found, add_special_tokens=False)["input_ids"] for found in names]
    scores = name_logprobs(model, tokenizer, prompts, name_ids, names_per_forward=4, name_end=name_end)
    for prompt, found, got in zip(prompts, names, scores, strict=True):
        expected = [_plain_logprob(model, tokenizer, prompt, name, ends) for name in found]
        assert got == pytest.approx(expected, abs=1e-4)


def test_ranking_is_the_allowed_names_best_first(model, tokenizer):
    allowed = [NAMES + [" Potean ", ""], NAMES[:2], []]
    ranked = rank_names(model, tokenizer, PROMPTS, allowed, top_k=4)
    assert [len(r) for r in ranked] == [4, 2, 0]
    best = sorted(NAMES, key=lambda name: -_plain_logprob(model, tokenizer, PROMPTS[0], name))[:4]
    assert [found.name for found in ranked[0]] == best  # the stripped duplicate and the empty name are gone
    assert all(a.logprob >= b.logprob for a, b in zip(ranked[0], ranked[0][1:]))
    assert [found.num_tokens for found in ranked[0]] == [len(tokenizer(name, add_special_tokens=False)["input_ids"])
                                                         for name in best]
    assert rank_names(model, tokenizer, ["c"], [[""]], top_k=4) == [[]]


@pytest.mark.parametrize("top_k", [1, 2, 5, 20])
def test_bounded_top_k_is_the_top_k_of_every_name_scored(model, tokenizer, top_k):
    """Scoring names in the order of their first token's bound and stopping early must give the same
    names, order and scores as scoring all of them. 36 names, many sharing a first token, and an untrained
    model's loose bounds: several passes, prompts leaving at different passes (a wrong stopping rule, or a
    bound below a score, drops a name)."""
    many = [f"{a} {b}" for a in NAMES for b in NAMES]
    names = [many, many[5:30], ["Levi's", "Potean"], many[::-1]]
    prompts = PROMPTS + ["user d, again Potean"]
    name_ids = [tokenizer(found, add_special_tokens=False)["input_ids"] for found in names]
    full = name_logprobs(model, tokenizer, prompts, name_ids, names_per_forward=7)
    best, scores, scored = top_k_names(model, tokenizer, prompts, name_ids, top_k)
    for every, order, got in zip(full, best, scores, strict=True):
        expected = np.argsort(-every, kind="stable")[:top_k]
        assert order.tolist() == expected.tolist()
        assert got == pytest.approx(every[expected], rel=1e-6, abs=1e-5)  # float32 sums packed differently
    assert sum(min(top_k + 8, len(ids)) for ids in name_ids) <= scored <= sum(map(len, name_ids))
    with pytest.raises(ValueError, match="top_k"):
        top_k_names(model, tokenizer, prompts, name_ids, 0)


def test_prompts_prefilled_in_chunks_rank_as_one_batch(model, tokenizer):
    allowed = [NAMES, NAMES[2:5], NAMES[::-1]]
    one_by_one = rank_names(model, tokenizer, PROMPTS, allowed, 3, prompts_per_prefill=1)
    together = rank_names(model, tokenizer, PROMPTS, allowed, 3)
    assert [[found.name for found in r] for r in one_by_one] == [[found.name for found in r] for r in together]
    assert [found.logprob for r in one_by_one for found in r] == pytest.approx(
        [found.logprob for r in together for found in r], abs=1e-5)


@pytest.mark.parametrize("name_end", ["eos", "separator"])
def test_the_backend_returns_ranked_names(model, tokenizer, tmp_path, name_end):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    backend = TransformersBackend(tmp_path, batch_size=2, is_bf16=False)
    params = DecodingConfig(strategy="rank", num_return_sequences=3, is_name_constrained=True, name_end=name_end)
    generations = backend.generate(PROMPTS[:2], params, [NAMES, NAMES[:2]])
    expected = rank_names(backend.model_, backend.tokenizer_, PROMPTS[:2], [NAMES, NAMES[:2]], top_k=3,
                          name_end=name_end)
    assert [(g.prompt_index, g.rank, g.text, g.num_tokens) for g in generations] == [
        (p, rank, name.name, name.num_tokens) for p, found in enumerate(expected)
        for rank, name in enumerate(found, start=1)]


def test_an_unknown_name_end_is_refused(tokenizer):
    from llm_predictor.name_ranking import end_token_ids

    assert end_token_ids(tokenizer, "separator") == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("|")]
    with pytest.raises(ValueError, match="name_end"):
        end_token_ids(tokenizer, "newline")
    with pytest.raises(ConfigError, match="name_end"):
        DecodingConfig(strategy="rank", is_name_constrained=True, name_end="newline")


def test_rank_needs_the_name_constraint_and_does_not_generate():
    with pytest.raises(ConfigError, match="is_name_constrained"):
        DecodingConfig(strategy="rank")
    with pytest.raises(ValueError, match="rank_names"):
        generate_kwargs(DecodingConfig(strategy="rank", is_name_constrained=True))


def test_the_shared_header_is_found_and_each_prompt_keeps_a_token(tokenizer):
    from llm_predictor.name_ranking import SHARED_PREFIX_MIN_TOKENS, _shared_prefix

    ids = tokenizer([HEADER + prompt for prompt in PROMPTS], add_special_tokens=False)["input_ids"]
    header = tokenizer(HEADER, add_special_tokens=False)["input_ids"]
    assert len(header) >= SHARED_PREFIX_MIN_TOKENS  # the test above exercises the shared path
    assert len(header) - 1 <= _shared_prefix(ids) <= len(header)  # a token may merge across the boundary
    assert _shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2 and _shared_prefix([[1, 2], [3, 2]]) == 0
