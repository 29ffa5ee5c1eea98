"""The paper's prompt templates, word for word (appendix A.1-A.4; inference = GRPO, paper 3.3).

Each prompt is a user-independent header (role, requirements, preset pool, output format) followed
by the user's `#Input`, so a prefix cache serves the header once per anchor date. Line breaks are
the appendix's; the page-break code fences inside listing A.1 are typesetting, not prompt text.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from llm_predictor.features import GROUPS, ITEM_SEPARATOR

TEMPLATES = ("sft", "sft_sid", "grpo", "grpo_sid", "inference")
N_ADVERTISERS = 20  # paper 3.3: GRPO and inference ask for exactly 20 advertisers
N_INTERESTS = 5  # ... and up to 5 interests

_ROLE = {
    "sft": """#Role
You are an ad-matching assistant for a commerce/discovery platform.
Your task is to predict 1 advertiser most likely to convert
and identify user interests based on their profile and
behavior.
""",
    "grpo": """#Role
You are an ad-matching assistant for a commerce/discovery platform.
Your task is to predict top advertisers most likely to
convert and identify user interests based on their profile
and behavior.
""",
}

_ADVERTISER_REQUIREMENTS = {
    "sft": """##Mandatory Requirements
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
""",
    "grpo": """#Mandatory Requirements
**Advertiser Mining Requirements**
1) Predict advertisers likely to convert using user behavior and
profile. Relate to user interests but don't limit to them.
2) Select up to 4 advertisers from the Active Advertisers with
Past Conversions; choose others from the Preset Advertiser
List.
3) Ensure diverse interests; cover dominant ones; avoid duplicates
within brand groups.
4) Examine URLs for advertiser and item information.
""",
}

_SID_ADVERTISER_REQUIREMENT = {
    "sft": """6) Use the most recent Semantic ID (SID) sequences as the primary
intent signal.
""",
    "grpo": """5) Consider the most recent Semantic ID (SID) sequences as a high-
priority signal when selecting advertisers.
""",
}

_INTEREST_REQUIREMENTS = """
**Interest Mining Requirements**
1) Group behaviors into user interests; evaluate by recency,
frequency, and diversity (R/F/D).
2) Prioritize consistent multi-session patterns; reduce emphasis
on short-term spikes.
3) Create a ranked list of user interests from all behavioral
signals.
4) Use URLs to find top interests, removing noise from top
categories.
"""

_SID_INTEREST_REQUIREMENT = """5) Use the most recent Semantic ID (SID) sequences as the primary
intent signal.
"""

_QUANTITY = {
    "sft": """
**Quantity Requirements**
- Provide 1 advertiser.
""",
    "grpo": """
**Quantity Requirements**
- Provide up to 5 unique user interests and exactly 20 advertisers.
""",
}

# Our wording for the Table 2 "reasoning" rows (the paper does not print its instruction). It sits
# in the shared header so the prefix cache still serves it; the parser skips the <think> block.
REASONING_REQUIREMENTS = """
**Reasoning Requirements**
- Think step by step before answering: weigh the user's most
recent conversions, searches and URLs against older activity.
- Write your reasoning inside <think></think> first, then give
the answer.
"""

_PRESET_POOL = """
#Preset Pool
- Preset Advertiser List: """

OUTPUT_FORMAT = """
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
"""

# Behaviour lines of "#Input": (feature group, label); SID sequences follow them in SID prompts.
_BEHAVIOR_LINES = {
    "attributed_conversions": "Attributed Conversions",
    "matched_conversions": "Matched Conversions",
    "onsite_searches": "Onsite Searches",
    "offsite_searches": "Offsite Searches",
    "offsite_urls": "Offsite URLs",
    "top_categories": "Top Categories",
    "top_brands": "Top Brands",
}


def _check_template(template: str) -> tuple[str, bool]:
    if template not in TEMPLATES:
        raise ValueError(f"template {template!r} is unknown; choose one of {list(TEMPLATES)}")
    kind = "sft" if template.startswith("sft") else "grpo"
    return kind, template.endswith("_sid")


def header(preset_pool: Sequence[str], template: str, reasoning: bool = False) -> str:
    """The user-independent prompt prefix: role, requirements, preset pool (and output format)."""
    kind, has_sid = _check_template(template)
    parts = [_ROLE[kind], "\n", _ADVERTISER_REQUIREMENTS[kind]]
    if has_sid:
        parts.append(_SID_ADVERTISER_REQUIREMENT[kind])
    if kind == "grpo":
        parts.append(_INTEREST_REQUIREMENTS)
        if has_sid:
            parts.append(_SID_INTEREST_REQUIREMENT)
    parts.append(_QUANTITY[kind])
    if reasoning:
        parts.append(REASONING_REQUIREMENTS)
    parts += [_PRESET_POOL, ITEM_SEPARATOR.join(preset_pool), "\n"]
    if kind == "grpo":
        parts.append(OUTPUT_FORMAT)
    parts.append("\n#Input\n")
    return "".join(parts)


def _input_pieces(groups: Sequence[str], has_sid: bool) -> list[str | pl.Expr]:
    """The `#Input` section as literal strings and field columns, groups in the given order."""
    pieces: list[str | pl.Expr] = []
    has_behavior_header = False
    for group in groups:
        if group == "active_advertisers_with_past_conversions":
            pieces += ["- Active Advertisers with Past Conversions:\n", pl.col(group), "\n"]
        elif group == "profile":
            pieces += ["- Profile:\nGender: ", pl.col("gender"), ", Age: ", pl.col("age"),
                       ", User Type: ", pl.col("userstate"), "\n"]
        else:
            if not has_behavior_header:
                pieces.append("- Behavior:\n")
                has_behavior_header = True
            pieces += [f"{_BEHAVIOR_LINES[group]} [", pl.col(group), "]\n"]
    if has_sid:
        if not has_behavior_header:
            pieces.append("- Behavior:\n")
        pieces += ["SID Sequences [", pl.col("sid_sequences"), "]\n"]
    return pieces


def render(features_df: pl.DataFrame, preset_pool: Sequence[str], template: str,
           reasoning: bool = False, groups: Sequence[str] = GROUPS) -> pl.Series:
    """One prompt per row of `features_df` (from `features.compile_features`), vectorised.

    `groups` are the enabled feature groups in prompt order (Table 4 ablations remove or reorder).
    """
    kind, has_sid = _check_template(template)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"groups: unknown group(s) {unknown}; valid: {list(GROUPS)}")
    pieces = _input_pieces(groups, has_sid)
    needed = sorted({p.meta.output_name() for p in pieces if isinstance(p, pl.Expr)})
    missing = [c for c in needed if c not in features_df.columns]
    if missing:
        fix = ("add SID sequences as column 'sid_sequences'" if "sid_sequences" in missing
               else "compile them with features.compile_features")
        raise ValueError(f"features_df lacks prompt field column(s) {missing}: {fix}")
    # Literal pieces are merged with their neighbours so concat_str sees as few inputs as possible.
    exprs: list[pl.Expr] = []
    pending = header(preset_pool, template, reasoning)
    for piece in pieces:
        if isinstance(piece, str):
            pending += piece
        else:
            exprs += [pl.lit(pending), piece.cast(pl.String).fill_null("")]
            pending = ""
    exprs.append(pl.lit(pending.removesuffix("\n")))
    return features_df.select(pl.concat_str(exprs).alias("prompt")).to_series()


def sft_target(advertiser_name: str) -> str:
    """The completion of the 1-advertiser SFT prompt (paper Table 1: free text, one name)."""
    name = advertiser_name.strip()
    if not name or "\n" in name:
        raise ValueError(f"advertiser name {advertiser_name!r} must be one non-empty line")
    return name


def list_target(names: Sequence[str], interests: Sequence[str]) -> str:
    """The XML completion of the GRPO/inference format (appendix A.3), for the 20-advertiser SFT."""
    for value in (*names, *interests):
        if not value.strip() or any(c in value for c in f"{ITEM_SEPARATOR}<>\n"):
            raise ValueError(f"name or interest {value!r} is empty or holds '|', '<', '>' or a newline")
    return (
        "<answer>\n<interests>\n[" + ITEM_SEPARATOR.join(interests) + "]\n</interests>\n"
        "<advertiser_names>\n" + ITEM_SEPARATOR.join(names) + "\n</advertiser_names>\n</answer>"
    )
