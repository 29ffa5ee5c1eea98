"""The corpus-trained BPE tokenizer: separators and XML tags stay whole, names tokenise alike in lists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_predictor.tokenizer import XML_TAGS, TokenizerConfig, load_tokenizer, train_tokenizer
from synthetic_data.config_io import ConfigError

NAMES = ["Potean Collective", "Tratrea Co.", "Deachigrin House", "Levi's", "A&B Goods", "Nike"]
TEXTS = [f"Shop {name} at {name.split()[0].lower()}.shop|{other}|gaming speakers [rugs]\n"
         for name in NAMES for other in NAMES] * 5


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(TEXTS, TokenizerConfig(vocab_size=400), directory)
    return load_tokenizer(directory)


def test_saved_tokenizer_has_special_tokens_and_left_padding(tokenizer):
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    assert tokenizer.padding_side == "left"


def test_xml_tags_are_single_tokens(tokenizer):
    for tag in XML_TAGS:
        ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.decode(ids) == tag


@pytest.mark.parametrize("separator", ["|", "\n", "[", "]", "|\n"])
def test_names_tokenise_alike_alone_and_inside_a_list(tokenizer, separator):
    for name in NAMES:
        alone = tokenizer(name, add_special_tokens=False)["input_ids"]
        in_list = tokenizer(f"<advertiser_names>{separator}{name}{separator}", add_special_tokens=False)["input_ids"]
        separator_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
        start = 1 + len(separator_ids)
        assert in_list[start:start + len(alone)] == alone
        assert in_list[start + len(alone):] == separator_ids


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=60))
def test_any_text_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_bad_vocab_size_names_the_field():
    with pytest.raises(ConfigError, match="vocab_size"):
        TokenizerConfig(vocab_size=10)


@pytest.fixture(scope="module")
def name_tokenizer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("name_tokenizer")
    train_tokenizer(TEXTS, TokenizerConfig(vocab_size=400, advertiser_tokens=True), directory,
                    names=[*NAMES, " Nike ", ""])
    return load_tokenizer(directory)


def test_names_are_added_only_when_the_config_asks(tmp_path, tokenizer):
    train_tokenizer(TEXTS, TokenizerConfig(vocab_size=400), tmp_path, names=NAMES)
    assert len(load_tokenizer(tmp_path)) == len(tokenizer)


def test_advertiser_names_are_single_tokens_in_lists_and_prose(name_tokenizer, tokenizer):
    # stripped and deduplicated, the empty name dropped; a name the BPE already has as one token is not added
    assert len(tokenizer) < len(name_tokenizer) <= len(tokenizer) + len(NAMES)
    for name in NAMES:
        ids = name_tokenizer(name, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and name_tokenizer.decode(ids) == name
        in_list = name_tokenizer(f"<advertiser_names>|{name}|Nike\n", add_special_tokens=False)["input_ids"]
        assert in_list[2] == ids[0] and len(in_list) == 6
        prose = name_tokenizer(f"I bought {name} twice.", add_special_tokens=False)["input_ids"]
        assert ids[0] in prose


def test_an_advertiser_token_matches_whole_words_only(name_tokenizer):
    name = name_tokenizer.convert_tokens_to_ids("Potean Collective")
    assert name in name_tokenizer("a Potean Collective rug", add_special_tokens=False)["input_ids"]
    ids = name_tokenizer("Potean Collectives and Potean CollectiveLab", add_special_tokens=False)["input_ids"]
    assert name not in ids and name_tokenizer.decode(ids) == "Potean Collectives and Potean CollectiveLab"


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=60))
def test_any_text_round_trips_with_advertiser_tokens(name_tokenizer, text):
    assert name_tokenizer.decode(name_tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_advertiser_tokens_refuse_a_model_brought_with_its_own_tokenizer(tmp_path):
    from llm_predictor.config import resolve_config

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="tokenizer.advertiser_tokens"):
        resolve_config("nano", None, ["tokenizer.advertiser_tokens=true", f"model.base_model_dir={tmp_path}"])
