"""Tests of llm_predictor/parse.py: a corpus of malformed outputs and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llm_predictor.parse import parse_output, parse_single, split_names
from llm_predictor.prompts import list_target
from synthetic_data.names import normalise_name

NAMES = [f"Brand {i}" for i in range(1, 21)]
WELL_FORMED = list_target(NAMES, ["rugs", "candles"])


def test_well_formed_output_has_no_issue():
    parsed = parse_output(WELL_FORMED)
    assert parsed.advertisers == NAMES and parsed.interests == ["rugs", "candles"]
    assert parsed.issues == [] and parsed.is_parsed and parsed.is_well_formed


def test_paper_example_layout_with_brackets_and_wrapped_lines():
    # Appendix A.5: advertisers first, in brackets, wrapped after '|'.
    text = ("<answer>\n<advertiser_names>\n[" + "|".join(NAMES[:5]) + "|\n" + "|".join(NAMES[5:]) + "]\n"
            "</advertiser_names>\n<interests>\n[a|b|c|d|e]\n</interests>\n</answer>")
    parsed = parse_output(text)
    assert parsed.advertisers == NAMES and parsed.interests == list("abcde") and parsed.issues == []


# (output, expected advertisers, issues that must be reported)
MALFORMED = [
    ("<answer><advertiser_names>Brand 1|Brand 2</advertiser_names></answer>",
     ["Brand 1", "Brand 2"], {"too_few_names", "missing_interests_tag"}),
    ("<advertiser_names>Brand 1|Brand 2",
     ["Brand 1", "Brand 2"], {"missing_answer_tag", "unclosed_advertiser_tag"}),
    ("<answer><advertiser_names>Brand 1|Brand 2<interests>x</interests></answer>",
     ["Brand 1", "Brand 2"], {"unclosed_advertiser_tag"}),
    ("Sure! Here you go: <answer><interests>[x]</interests><advertiser_names>Brand 1</advertiser_names>"
     "</answer> Hope it helps", ["Brand 1"], {"stray_text"}),
    ("<answer><interests>[x]</interests><advertiser_names>Brand 1|brand  1|Brand 2|Brand 1"
     "</advertiser_names></answer>", ["Brand 1", "Brand 2"], {"duplicate_names"}),
    ("<answer><interests>[x]</interests><advertiser_names>" + "|".join(NAMES + ["Brand 21"])
     + "</advertiser_names></answer>", NAMES + ["Brand 21"], {"too_many_names"}),
    ("<answer><interests>[a|b|c|d|e|f]</interests><advertiser_names>" + "|".join(NAMES)
     + "</advertiser_names></answer>", NAMES, {"too_many_interests"}),
    ("<answer><interests>[x]</interests><advertiser_names>Brand 1||Brand 2|</advertiser_names></answer>",
     ["Brand 1", "Brand 2"], {"empty_names"}),
    ("<answer><interests>[x]</interests><advertiser_names>\n1. Brand 1\n2) Brand 2\n- \"Brand 3\"\n"
     "</advertiser_names></answer>", ["Brand 1", "Brand 2", "Brand 3"], {"too_few_names"}),
    ("<think>Brand 9 looks likely</think><answer><interests>[x]</interests><advertiser_names>Brand 1"
     "</advertiser_names></answer>", ["Brand 1"], {"too_few_names"}),
    ("<think>I keep thinking about Brand 9", [], {"unclosed_think", "missing_advertiser_tag"}),
    ("Brand 1|Brand 2", ["Brand 1", "Brand 2"], {"missing_advertiser_tag", "missing_answer_tag"}),
    ("<answer><interests>[x]</interests></answer>", [], {"missing_advertiser_tag"}),
    ("<ANSWER><Advertiser_Names>Brand 1</ADVERTISER_NAMES><interests>x</interests></ANSWER>",
     ["Brand 1"], {"too_few_names"}),
    ("<answer><advertisers>Brand 1</advertisers><interests>x</interests></answer>", ["Brand 1"], set()),
    ("<answer><advertiser_names>Brand 1</advertiser_names><advertiser_names>Brand 2</advertiser_names>"
     "<interests>x</interests></answer>", ["Brand 1"], {"repeated_advertiser_tag"}),
    ("", [], {"missing_advertiser_tag", "too_few_names"}),
    ("<answer><interests>[x]</interests><advertiser_names>Foo (US)|3M|Levi's</advertiser_names></answer>",
     ["Foo (US)", "3M", "Levi's"], set()),
]


@pytest.mark.parametrize(("text", "advertisers", "issues"), MALFORMED)
def test_malformed_outputs_are_recovered_and_flagged(text, advertisers, issues):
    parsed = parse_output(text)
    assert parsed.advertisers == advertisers
    assert issues <= set(parsed.issues), parsed.issues
    assert not parsed.is_well_formed


def test_tag_without_advertiser_section_is_not_parsed():
    assert not parse_output("<answer><interests>x</interests></answer>").is_parsed
    assert not parse_output("Brand 1|Brand 2").is_parsed  # salvaged names, but not the format


def test_parse_single_reads_one_free_text_name():
    assert parse_single("Acme Outdoor").advertisers == ["Acme Outdoor"]
    assert parse_single("Acme Outdoor").issues == []
    assert parse_single("  Acme Outdoor\n\nextra words").issues == ["stray_text"]
    assert parse_single("Acme|Bluebird").advertisers == ["Acme"]
    assert "too_many_names" in parse_single("Acme|Bluebird").issues
    assert parse_single("").advertisers == [] and "too_few_names" in parse_single("").issues
    assert parse_single("<answer><advertiser_names>Acme</advertiser_names></answer>").advertisers == ["Acme"]


_NAME_CHARS = st.characters(codec="utf-8", exclude_characters="|<>[]\n\r\"'`\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
                            exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"))
_NAME = st.text(_NAME_CHARS, min_size=1, max_size=12).filter(lambda s: not s[0].isdigit() and s[0] not in "-*\u2022")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
@example('"\x1f0')  # a control character that str.strip() treats as whitespace (found by hypothesis)
def test_parser_never_raises_and_names_are_clean(text):
    parsed = parse_output(text)
    for name in parsed.advertisers + parsed.interests:
        assert name and name == name.strip() and "|" not in name and "\n" not in name
    assert len({n.casefold() for n in parsed.advertisers}) <= len(parsed.advertisers)
    parse_single(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(_NAME, min_size=1, max_size=25, unique_by=normalise_name),
       st.lists(_NAME, max_size=5), st.text(st.sampled_from("abc xyz.!?"), max_size=20))
def test_names_round_trip_through_the_target_format_with_stray_text(names, interests, noise):
    text = noise + list_target(names, interests) + noise
    parsed = parse_output(text)
    assert parsed.advertisers == names
    assert ("stray_text" in parsed.issues) == bool(noise.strip())
    assert ("too_few_names" in parsed.issues) == (len(names) < 20)


def test_split_names_counts_repeats():
    assert split_names("[A|a|B| b |C]") == (["A", "B", "C"], 2, False)


def test_spelling_variants_are_repeats():
    assert split_names("B&C Eagle|B & C Eagle|Oral-B|Oral B") == (["B&C Eagle", "Oral-B"], 2, False)
