"""Tests of llm_predictor/prompts.py: the templates render the paper's appendix A text exactly."""

from __future__ import annotations

import polars as pl
import pytest

from llm_predictor.features import FIELDS, GROUPS
from llm_predictor.parse import parse_output
from llm_predictor.prompts import REASONING_REQUIREMENTS, header, list_target, render, sft_target

# Appendix A.1-A.4 as printed in the paper (the page-break code fences inside A.1 and A.4 removed).
APPENDIX = {
    "sft": """\
#Role
You are an ad-matching assistant for a commerce/discovery platform.
Your task is to predict 1 advertiser most likely to convert
and identify user interests based on their profile and
behavior.

##Mandatory Requirements
**Advertiser Mining Requirements**
1) Predict 1 advertiser likely to convert using user behavior and
profile. Relate to user interests but don't limit to them.
2) Select exactly 1 advertiser from either the Active Advertisers
with Past Conversions or the Preset Advertiser List.
3) Ensure diverse interests; cover dominant ones; avoid duplicates
within brand groups.
4) Examine URLs for advertiser and item information.
5) Prioritize the most recent data when evaluating signals (weight
recency strongly and de-emphasize stale activity).

**Quantity Requirements**
- Provide 1 advertiser.

#Preset Pool
- Preset Advertiser List: {preset_advertiser_pool}

#Input
- Active Advertisers with Past Conversions:
{active_advertisers_with_past_conversions}
- Profile:
Gender: {gender}, Age: {age}, User Type: {userstate}
- Behavior:
Attributed Conversions [{attributed_conversions}]
Matched Conversions [{matched_conversions}]
Onsite Searches [{onsite_searches}]
Offsite Searches [{offsite_searches}]
Offsite URLs [{offsite_urls}]
Top Categories [{top_categories}]
Top Brands [{top_brands}]""",
    "sft_sid": """\
#Role
You are an ad-matching assistant for a commerce/discovery platform.
Your task is to predict 1 advertiser most likely to convert
and identify user interests based on their profile and
behavior.

##Mandatory Requirements
**Advertiser Mining Requirements**
1) Predict 1 advertiser likely to convert using user behavior and
profile. Relate to user interests but don't limit to them.
2) Select exactly 1 advertiser from either the Active Advertisers
with Past Conversions or the Preset Advertiser List.
3) Ensure diverse interests; cover dominant ones; avoid duplicates
within brand groups.
4) Examine URLs for advertiser and item information.
5) Prioritize the most recent data when evaluating signals (weight
recency strongly and de-emphasize stale activity).
6) Use the most recent Semantic ID (SID) sequences as the primary
intent signal.

**Quantity Requirements**
- Provide 1 advertiser.

#Preset Pool
- Preset Advertiser List: {preset_advertiser_pool}

#Input
- Active Advertisers with Past Conversions:
{active_advertisers_with_past_conversions}
- Profile:
Gender: {gender}, Age: {age}, User Type: {userstate}
- Behavior:
Attributed Conversions [{attributed_conversions}]
Matched Conversions [{matched_conversions}]
Onsite Searches [{onsite_searches}]
Offsite Searches [{offsite_searches}]
Offsite URLs [{offsite_urls}]
Top Categories [{top_categories}]
Top Brands [{top_brands}]
SID Sequences [{sid_sequences}]""",
    "grpo": """\
#Role
You are an ad-matching assistant for a commerce/discovery platform.
Your task is to predict top advertisers most likely to
convert and identify user interests based on their profile
and behavior.

#Mandatory Requirements
**Advertiser Mining Requirements**
1) Predict advertisers likely to convert using user behavior and
profile. Relate to user interests but don't limit to them.
2) Select up to 4 advertisers from the Active Advertisers with
Past Conversions; choose others from the Preset Advertiser
List.
3) Ensure diverse interests; cover dominant ones; avoid duplicates
within brand groups.
4) Examine URLs for advertiser and item information.

**Interest Mining Requirements**
1) Group behaviors into user interests; evaluate by recency,
frequency, and diversity (R/F/D).
2) Prioritize consistent multi-session patterns; reduce emphasis
on short-term spikes.
3) Create a ranked list of user interests from all behavioral
signals.
4) Use URLs to find top interests, removing noise from top
categories.

**Quantity Requirements**
- Provide up to 5 unique user interests and exactly 20 advertisers.

#Preset Pool
- Preset Advertiser List: {preset_advertiser_pool}

#Output Format
- Return ONLY the following XML.

<answer>
<interests>
[interest 1|interest 2|interest 3|interest 4|interest 5]
</interests>
<advertiser_names>
Advertiser 1|Advertiser 2|Advertiser 3|Advertiser 4|Advertiser 5|
Advertiser 6|Advertiser 7|Advertiser 8|Advertiser 9|
Advertiser 10|Advertiser 11|Advertiser 12|Advertiser 13|
Advertiser 14|Advertiser 15|Advertiser 16|Advertiser 17|
Advertiser 18|Advertiser 19|Advertiser 20
</advertiser_names>
</answer>

#Input
- Active Advertisers with Past Conversions:
{active_advertisers_with_past_conversions}
- Profile:
Gender: {gender}, Age: {age}, User Type: {userstate}
- Behavior:
Attributed Conversions [{attributed_conversions}]
Matched Conversions [{matched_conversions}]
Onsite Searches [{onsite_searches}]
Offsite Searches [{offsite_searches}]
Offsite URLs [{offsite_urls}]
Top Categories [{top_categories}]
Top Brands [{top_brands}]""",
    "grpo_sid": """\
#Role
You are an ad-matching assistant for a commerce/discovery platform.
Your task is to predict top advertisers most likely to
convert and identify user interests based on their profile
and behavior.

#Mandatory Requirements
**Advertiser Mining Requirements**
1) Predict advertisers likely to convert using user behavior and
profile. Relate to user interests but don't limit to them.
2) Select up to 4 advertisers from the Active Advertisers with
Past Conversions; choose others from the Preset Advertiser
List.
3) Ensure diverse interests; cover dominant ones; avoid duplicates
within brand groups.
4) Examine URLs for advertiser and item information.
5) Consider the most recent Semantic ID (SID) sequences as a high-
priority signal when selecting advertisers.

**Interest Mining Requirements**
1) Group behaviors into user interests; evaluate by recency,
frequency, and diversity (R/F/D).
2) Prioritize consistent multi-session patterns; reduce emphasis
on short-term spikes.
3) Create a ranked list of user interests from all behavioral
signals.
4) Use URLs to find top interests, removing noise from top
categories.
5) Use the most recent Semantic ID (SID) sequences as the primary
intent signal.

**Quantity Requirements**
- Provide up to 5 unique user interests and exactly 20 advertisers.

#Preset Pool
- Preset Advertiser List: {preset_advertiser_pool}

#Output Format
- Return ONLY the following XML.

<answer>
<interests>
[interest 1|interest 2|interest 3|interest 4|interest 5]
</interests>
<advertiser_names>
Advertiser 1|Advertiser 2|Advertiser 3|Advertiser 4|Advertiser 5|
Advertiser 6|Advertiser 7|Advertiser 8|Advertiser 9|
Advertiser 10|Advertiser 11|Advertiser 12|Advertiser 13|
Advertiser 14|Advertiser 15|Advertiser 16|Advertiser 17|
Advertiser 18|Advertiser 19|Advertiser 20
</advertiser_names>
</answer>

#Input
- Active Advertisers with Past Conversions:
{active_advertisers_with_past_conversions}
- Profile:
Gender: {gender}, Age: {age}, User Type: {userstate}
- Behavior:
Attributed Conversions [{attributed_conversions}]
Matched Conversions [{matched_conversions}]
Onsite Searches [{onsite_searches}]
Offsite Searches [{offsite_searches}]
Offsite URLs [{offsite_urls}]
Top Categories [{top_categories}]
Top Brands [{top_brands}]
SID Sequences [{sid_sequences}]""",
}

POOL = ["Acme Outdoor", "Bluebird Co.", "Cedar & Sons"]
ROW = {
    "user_id": 7,
    "active_advertisers_with_past_conversions": "Bluebird Co.|Acme Outdoor",
    "gender": "female", "age": "25-34", "userstate": "core",
    "attributed_conversions": "Acme trail shoes",
    "matched_conversions": "Bluebird linen shirt|Acme tent",
    "onsite_searches": "trail shoes|rain jacket",
    "offsite_searches": "best tents",
    "offsite_urls": "https://acme.com/products/tent",
    "top_categories": "shoes|tents",
    "top_brands": "Acme|Bluebird",
    "sid_sequences": "<a_1><b_2>|<a_3><b_4>",
}


def _features(row=ROW) -> pl.DataFrame:
    return pl.DataFrame([row])


@pytest.mark.parametrize("template", ["sft", "sft_sid", "grpo", "grpo_sid"])
def test_render_is_the_appendix_text_with_fields_filled(template):
    expected = APPENDIX[template].format(preset_advertiser_pool="|".join(POOL), **ROW)
    assert render(_features(), POOL, template)[0] == expected


def test_inference_prompt_is_the_grpo_prompt():
    assert render(_features(), POOL, "inference")[0] == render(_features(), POOL, "grpo")[0]


def test_every_prompt_starts_with_the_shared_header():
    rows = _features(ROW).vstack(_features({**ROW, "user_id": 8, "gender": "male", "top_brands": "Zed"}))
    for template in ("sft", "grpo"):
        prompts = render(rows, POOL, template)
        prefix = header(POOL, template)
        assert all(p.startswith(prefix) for p in prompts)
        assert prefix.endswith("#Input\n") and "Gender" not in prefix
        assert prompts[0] != prompts[1]


def test_reasoning_instruction_is_in_the_header_only_when_asked():
    plain = render(_features(), POOL, "grpo")[0]
    reasoning = render(_features(), POOL, "grpo", reasoning=True)[0]
    assert REASONING_REQUIREMENTS not in plain
    assert reasoning.replace(REASONING_REQUIREMENTS, "") == plain
    assert header(POOL, "grpo", reasoning=True) in reasoning


def test_removed_group_drops_its_line_and_reordering_moves_it():
    no_urls = render(_features(), POOL, "sft", groups=tuple(g for g in GROUPS if g != "offsite_urls"))[0]
    assert "Offsite URLs" not in no_urls
    assert no_urls == render(_features(), POOL, "sft")[0].replace("Offsite URLs [https://acme.com/products/tent]\n", "")
    no_profile = render(_features(), POOL, "sft", groups=tuple(g for g in GROUPS if g != "profile"))[0]
    assert "- Profile:" not in no_profile and "Gender:" not in no_profile
    reordered = ("top_brands", "profile", "onsite_searches")
    text = render(_features(), POOL, "sft", groups=reordered)[0]
    assert text.endswith("#Input\n- Behavior:\nTop Brands [Acme|Bluebird]\n- Profile:\n"
                         "Gender: female, Age: 25-34, User Type: core\nOnsite Searches [trail shoes|rain jacket]")


def test_missing_field_and_unknown_template_fail_clearly():
    with pytest.raises(ValueError, match="sid_sequences"):
        render(_features().drop("sid_sequences"), POOL, "grpo_sid")
    with pytest.raises(ValueError, match="top_brands"):
        render(_features().drop("top_brands"), POOL, "grpo")
    with pytest.raises(ValueError, match="choose one of"):
        render(_features(), POOL, "rlhf")


def test_null_fields_render_as_empty():
    row = {**ROW, "offsite_urls": None}
    frame = pl.DataFrame([row], schema={c: pl.String for c in ROW} | {"user_id": pl.Int64})
    assert "Offsite URLs []" in render(frame, POOL, "grpo")[0]


def test_targets_round_trip_through_the_parser():
    names = [f"Advertiser {i}" for i in range(1, 21)]
    text = list_target(names, ["rugs", "candles"])
    parsed = parse_output(text)
    assert parsed.advertisers == names and parsed.interests == ["rugs", "candles"]
    assert parsed.is_well_formed
    assert sft_target("  Acme Outdoor ") == "Acme Outdoor"
    with pytest.raises(ValueError):
        list_target(["A|B"], [])
    with pytest.raises(ValueError):
        sft_target("")


def test_fields_constant_matches_the_templates():
    assert set(FIELDS) == set(ROW) - {"user_id", "sid_sequences"}
