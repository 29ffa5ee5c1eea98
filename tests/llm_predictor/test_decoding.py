"""Decoding: strategy arguments, and the name constraint that never lets a name outside the allowed
set, a repeat, or more than `max_names` names into the advertiser list."""

from __future__ import annotations

import pytest

from llm_predictor.decoding import (
    ANSWER_TAIL, CLOSE_TAG, OPEN_TAG, DecodingConfig, NameConstraint, NameTrie, generate_kwargs, generate_texts,
    prompt_cache,
)
from llm_predictor.model import ModelConfig, build_model
from llm_predictor.parse import parse_output
from llm_predictor.tokenizer import TokenizerConfig, train_tokenizer
from synthetic_data.config_io import ConfigError

NAMES = ["Potean Collective", "Potean", "Tratrea Co.", "Deachigrin House", "Vowis Labs", "Levi's", "Tystol Co."]
PREFIX = f"<answer>\n<interests>\n[rugs]\n</interests>\n{OPEN_TAG}\n"


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"{a}|{b} sells rugs {OPEN_TAG}\n{CLOSE_TAG}" for a in NAMES for b in NAMES] * 3
    return train_tokenizer(texts, TokenizerConfig(vocab_size=400))


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(ModelConfig(size="nano", seed=3), tokenizer).eval()


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_generate_kwargs_per_strategy():
    assert generate_kwargs(DecodingConfig(strategy="beam", num_beams=5, num_return_sequences=3)) == dict(
        do_sample=False, num_beams=5, early_stopping=True, num_return_sequences=3)
    sampling = generate_kwargs(DecodingConfig(strategy="sampling", temperature=0.7, top_p=0.9))
    assert sampling["do_sample"] and sampling["temperature"] == 0.7 and sampling["top_p"] == 0.9
    assert generate_kwargs(DecodingConfig(strategy="greedy"))["num_beams"] == 1


def test_more_beams_returned_than_searched_is_a_config_error():
    with pytest.raises(ConfigError, match="num_return_sequences"):
        DecodingConfig(strategy="beam", num_beams=2, num_return_sequences=4)


def test_constraint_walk_on_hand_written_lists(tokenizer):
    constraint = NameConstraint(tokenizer, max_names=3)
    trie = NameTrie.from_names(NAMES, tokenizer)
    pipe, newline = _ids(tokenizer, "|")[0], _ids(tokenizer, "\n")[0]
    close = _ids(tokenizer, CLOSE_TAG)[0]
    potean = _ids(tokenizer, "Potean")
    assert constraint.allowed(trie, _ids(tokenizer, "free text before the list")) is None
    at_start = constraint.allowed(trie, _ids(tokenizer, OPEN_TAG + "\n"))
    assert {_ids(tokenizer, name)[0] for name in NAMES} <= at_start and pipe not in at_start
    assert close not in at_start  # an empty list cannot be closed
    # "Potean" is a whole name and the prefix of "Potean Collective": both ways stay open, but one
    # name of max_names=3 cannot close the list
    after_potean = constraint.allowed(trie, _ids(tokenizer, OPEN_TAG + "\nPotean"))
    assert {pipe, newline, _ids(tokenizer, "Potean Collective")[len(potean)]} <= after_potean
    assert close not in after_potean
    third = constraint.allowed(trie, _ids(tokenizer, OPEN_TAG + "\nPotean|Vowis Labs|Levi's"))
    assert close in third  # the third name may end the list right away
    # once both Potean names are used, no Potean token is allowed again
    used = constraint.allowed(trie, _ids(tokenizer, OPEN_TAG + "\nPotean|Potean Collective|"))
    assert potean[0] not in used and pipe not in used and newline in used
    # three names written (max_names=3): only the closing tag may follow
    full = constraint.allowed(trie, _ids(tokenizer, OPEN_TAG + "\nPotean|Vowis Labs|Levi's|"))
    assert full == {close, newline}
    # a closed list: the answer's closing tag, then only the end of the sequence
    closed, tail = _ids(tokenizer, OPEN_TAG + "\nLevi's\n" + CLOSE_TAG), _ids(tokenizer, ANSWER_TAIL)
    assert constraint.allowed(trie, closed) == {tail[0]}
    assert constraint.allowed(trie, closed + tail[:1]) == {tail[1]}
    assert constraint.allowed(trie, closed + tail) == {tokenizer.eos_token_id}


@pytest.mark.parametrize("params", [
    dict(strategy="beam", num_beams=4),
    dict(strategy="beam", num_beams=4, num_return_sequences=3),
    dict(strategy="sampling", temperature=1.5, num_return_sequences=2),
    dict(strategy="greedy"),
])
def test_constrained_outputs_only_hold_allowed_distinct_names(model, tokenizer, params):
    allowed = [NAMES[:4], NAMES[3:], ["Levi's"]]
    config = DecodingConfig(max_new_tokens=60, is_name_constrained=True, max_names=3, response_prefix=PREFIX,
                            **params)
    texts, counts = generate_texts(model, tokenizer, ["user a", "user b likes rugs", "c"], config, allowed)
    per_prompt = config.num_return_sequences
    assert len(texts) == 3 * per_prompt and all(0 < count <= 60 for count in counts)
    for row, text in enumerate(texts):
        assert text.startswith(PREFIX)
        section = text[len(PREFIX):].split(CLOSE_TAG)[0]
        names = [name for name in section.replace("\n", "|").split("|") if name]
        assert set(names) <= set(allowed[row // per_prompt]), text
        assert len(names) == len(set(names)) <= 3
        if CLOSE_TAG in text:  # a closed list ends the answer: the tail, then end-of-sequence
            assert text.endswith(CLOSE_TAG + ANSWER_TAIL), text
    # the prompt allowed one name closes its list at once and stops there
    last = texts[2 * per_prompt]
    assert last.endswith(CLOSE_TAG + ANSWER_TAIL) and counts[2 * per_prompt] < 60, last


def test_unconstrained_untrained_model_does_emit_unknown_text(model, tokenizer):
    """The guard above is not vacuous: without the constraint the same model writes other strings."""
    config = DecodingConfig(strategy="sampling", temperature=1.5, max_new_tokens=40, response_prefix=PREFIX)
    texts, _ = generate_texts(model, tokenizer, ["user a", "user b"], config)
    parsed = [parse_output(text) for text in texts]
    assert any(set(p.advertisers) - set(NAMES) for p in parsed)


def test_sampling_is_reproducible_from_the_seed(model, tokenizer):
    config = DecodingConfig(strategy="sampling", temperature=1.5, max_new_tokens=20, seed=7)
    first, _ = generate_texts(model, tokenizer, ["user a", "user b"], config)
    again, _ = generate_texts(model, tokenizer, ["user a", "user b"], config)
    assert first == again


def test_the_constraint_opens_the_list_itself_once_its_budget_is_spent(tokenizer):
    constraint = NameConstraint(tokenizer, max_names=3, max_tokens_before_list=4)
    trie = NameTrie.from_names(NAMES, tokenizer)
    open_ids, junk = _ids(tokenizer, OPEN_TAG), _ids(tokenizer, "free text before the list")
    assert len(junk) >= 4 and constraint.allowed(trie, junk[:3]) is None  # free (but for the end) within budget
    assert constraint.allowed(trie, junk[:4]) == {open_ids[0]}
    assert constraint.allowed(trie, junk[:4] + open_ids[:1]) == ({open_ids[1]} if len(open_ids) > 1 else
                                                                 constraint.allowed(trie, open_ids))
    assert constraint.allowed(trie, junk[:4] + open_ids) == constraint.allowed(trie, open_ids)  # the names


def test_an_answer_cannot_end_before_its_list(model, tokenizer):
    """With the end of sequence made by far the likeliest token, the constrained answer still holds a list."""
    def favour_the_end(module, inputs, logits):
        logits = logits.clone()
        logits[..., tokenizer.eos_token_id] += 100.0
        return logits

    hook = model.lm_head.register_forward_hook(favour_the_end)
    try:
        _, counts = generate_texts(model, tokenizer, ["user a"], DecodingConfig(strategy="greedy"))
        config = DecodingConfig(strategy="greedy", max_new_tokens=60, is_name_constrained=True, max_names=2,
                                max_tokens_before_list=3)
        texts, _ = generate_texts(model, tokenizer, ["user a"], config, [NAMES[:3]])
    finally:
        hook.remove()
    assert counts == [0]  # left alone, the model ends at once
    assert OPEN_TAG in texts[0] and texts[0].endswith(CLOSE_TAG + ANSWER_TAIL), texts[0]


def test_incremental_walk_matches_the_walk_from_scratch(tokenizer):
    constraint = NameConstraint(tokenizer, max_names=3)
    trie = NameTrie.from_names(NAMES, tokenizer)
    sequence = _ids(tokenizer, "junk " + OPEN_TAG + "\nPotean|Vowis Labs\nLevi's\n" + CLOSE_TAG + "\nmore")
    state = constraint.walk(trie, sequence[:1])
    for end in range(2, len(sequence) + 1):
        state = constraint.advance(trie, state, sequence[:end])
        assert constraint.allowed_after(trie, state) == constraint.allowed(trie, sequence[:end]), end


@pytest.mark.parametrize("params", [
    dict(strategy="beam", num_beams=4, num_return_sequences=4),
    dict(strategy="sampling", temperature=1.5, num_return_sequences=3),
])
def test_the_prompt_cache_changes_no_output(model, tokenizer, params):
    """Beams and samples decoded by `generate` from one cached prefill per prompt (`prompt_cache`, what a
    name-constrained search of several sequences uses) equal `generate`'s own output, which runs every prompt
    once per sequence (prompts of different lengths: left padding)."""
    import torch

    config = DecodingConfig(max_new_tokens=12, **params)
    prompts = ["user a", "user b likes rugs and more rugs from Potean", "c"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    outputs = []
    for cache in (lambda: {"past_key_values": prompt_cache(model, batch, config.rows_per_prompt)}, dict):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(config.seed)
            outputs.append(model.generate(**batch, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id,
                                          eos_token_id=tokenizer.eos_token_id, **cache(), **generate_kwargs(config)))
    assert torch.equal(*outputs)
