"""Tolerant parsing of model outputs into advertiser names and interests (paper 3.3, appendix A.5).

Generations can miss tags, wrap lists in brackets, add stray text or a <think> block, repeat names
or give more or fewer than 20: the parser recovers what it can and records every deviation as an
issue, so that malformed outputs are counted, never silently dropped. Issues: missing_/unclosed_/
repeated_ answer, advertiser and interests tags, stray_text, unclosed_think, duplicate_names,
empty_names, too_few_names, too_many_names, too_many_interests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llm_predictor.prompts import N_ADVERTISERS, N_INTERESTS
from synthetic_data.names import normalise_name

_FLAGS = re.IGNORECASE | re.DOTALL
_THINK = re.compile(r"<\s*think\s*>.*?<\s*/\s*think\s*>", _FLAGS)
_THINK_OPEN = re.compile(r"<\s*think\s*>", _FLAGS)
_TAG_NAMES = {"advertiser": r"advertiser[_ ]?names?|advertisers", "interests": r"interests?"}
_ANY_TAG = re.compile(r"<\s*/?\s*(?:answer|advertiser[_ ]?names?|advertisers|interests?)\s*>", _FLAGS)
_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", _FLAGS)
_ANSWER_CLOSE = re.compile(r"<\s*/\s*answer\s*>", _FLAGS)
_SEPARATOR = re.compile(r"\s*\|\s*|\s*\n\s*")
_LEADING_MARK = re.compile(r"^(?:[-*\u2022]\s*|\d{1,2}[.)]\s+)")
_EDGE_JUNK = " \t\"'`[]"


@dataclass(frozen=True)
class ParsedOutput:
    """Names in generated order (first occurrence of each kept) and the deviations found."""

    advertisers: list[str]
    interests: list[str]
    issues: list[str] = field(default_factory=list)
    duplicate_count: int = 0  # advertiser names dropped as repeats of an earlier name

    @property
    def is_parsed(self) -> bool:
        """The advertiser list was found inside its tag."""
        return "missing_advertiser_tag" not in self.issues

    @property
    def is_well_formed(self) -> bool:
        """No format issue and exactly the requested number of names."""
        return not self.issues


def _trim(name: str) -> str:
    """Strip quotes, brackets and any Unicode whitespace (e.g. \x1f) from both ends until stable."""
    trimmed = name.strip().strip(_EDGE_JUNK)
    return trimmed if trimmed == name else _trim(trimmed)


def split_names(text: str) -> tuple[list[str], int, bool]:
    """Split a list on '|' or newlines, strip brackets, bullets and quotes; dedupe by `normalise_name`.

    Returns the names, the number of repeats dropped and whether an empty entry was seen.
    """
    text = text.strip().strip("[]")
    names, seen, duplicates, has_empty = [], set(), 0, False
    if not text:
        return names, duplicates, has_empty
    for raw in _SEPARATOR.split(text):
        name = _trim(_LEADING_MARK.sub("", _trim(raw)))
        if not name:
            has_empty = True
            continue
        key = normalise_name(name)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        names.append(name)
    return names, duplicates, has_empty


def _section(text: str, tag: str, issues: list[str]) -> str | None:
    """Content of the first <tag>...</tag>; an unclosed tag runs to the next known tag or the end."""
    names = _TAG_NAMES[tag]
    opens = list(re.finditer(rf"<\s*(?:{names})\s*>", text, _FLAGS))
    if not opens:
        issues.append(f"missing_{tag}_tag")
        return None
    if len(opens) > 1:
        issues.append(f"repeated_{tag}_tag")
    start = opens[0].end()
    close = re.compile(rf"<\s*/\s*(?:{names})\s*>", _FLAGS).search(text, start)
    next_tag = _ANY_TAG.search(text, start)
    if close is not None and (next_tag is None or next_tag.start() >= close.start()):
        return text[start:close.start()]
    issues.append(f"unclosed_{tag}_tag")
    return text[start:next_tag.start()] if next_tag is not None else text[start:]


def _strip_think(text: str, issues: list[str]) -> str:
    text = _THINK.sub(" ", text)
    opened = _THINK_OPEN.search(text)
    if opened is not None:  # reasoning never closed: nothing after it is an answer
        issues.append("unclosed_think")
        text = text[:opened.start()]
    return text


def parse_output(text: str, expected_advertisers: int = N_ADVERTISERS,
                 max_interests: int = N_INTERESTS) -> ParsedOutput:
    """Parse the GRPO/inference XML answer (appendix A.3/A.5); never raises on any string.

    Without any known tag the whole text is read as a name list (issue `missing_advertiser_tag`).
    """
    issues: list[str] = []
    text = _strip_think(text, issues)
    answer_open = _ANSWER_OPEN.search(text)
    answer_close = _ANSWER_CLOSE.search(text, answer_open.end() if answer_open else 0)
    if answer_open is None:
        issues.append("missing_answer_tag")
    elif answer_close is None:
        issues.append("unclosed_answer_tag")
    outside = text
    if answer_open is not None:
        outside = text[:answer_open.start()] + (text[answer_close.end():] if answer_close else "")
    if outside.strip() and answer_open is not None:
        issues.append("stray_text")

    has_any_tag = _ANY_TAG.search(text) is not None
    advertiser_text = _section(text, "advertiser", issues)
    interest_text = _section(text, "interests", issues)
    if advertiser_text is None and not has_any_tag:
        advertiser_text = text  # plain list without XML: salvage the names, keep the issue
    advertisers, duplicates, has_empty = split_names(advertiser_text or "")
    interests, _, _ = split_names(interest_text or "")

    if duplicates:
        issues.append("duplicate_names")
    if has_empty:
        issues.append("empty_names")
    if len(advertisers) < expected_advertisers:
        issues.append("too_few_names")
    elif len(advertisers) > expected_advertisers:
        issues.append("too_many_names")
    if len(interests) > max_interests:
        issues.append("too_many_interests")
    return ParsedOutput(advertisers, interests, issues, duplicates)


def parse_single(text: str) -> ParsedOutput:
    """Parse the free-text answer of the 1-advertiser SFT prompt (paper Table 1): one name."""
    issues: list[str] = []
    text = _strip_think(text, issues)
    if _ANY_TAG.search(text):
        parsed = parse_output(text, expected_advertisers=1)
        return ParsedOutput(parsed.advertisers[:1], parsed.interests, issues + parsed.issues,
                            parsed.duplicate_count)
    lines = [line for line in text.splitlines() if line.strip()]
    names, duplicates, _ = split_names(lines[0] if lines else "")
    if not names:
        issues.append("too_few_names")
    elif len(names) > 1 or len(lines) > 1:
        issues.append("too_many_names" if len(names) > 1 else "stray_text")
    return ParsedOutput(names[:1], [], issues, duplicates)
