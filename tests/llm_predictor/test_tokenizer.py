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
