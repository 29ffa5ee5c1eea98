"""Tests of llm_predictor/reward.py: paper eq. 1-5 against hand-computed values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic_data.names import normalise_name
from llm_predictor.prompts import list_target
from llm_predictor.reward import (RewardConfig, completion_reward, grpo_reward_fn, length_penalty,
                                  make_reward_fn, match_reward, total_reward)

NAMES = [f"Brand {i}" for i in range(1, 21)]
INTERESTS = ["rugs", "candles", "lipstick", "sneakers", "tents"]


@pytest.mark.parametrize(("position", "expected"), [
    (1, 0.1 * 19 + 2.0),  # 3.9: base 1.9 plus the bonus
    (4, 0.1 * 16 + 2.0),  # 3.6: last position with the bonus
    (5, 0.1 * 15),  # 1.5: no bonus from position 5
    (20, 0.0),  # R_base(20) = 0.1 * (20 - 20)
])
def test_hit_at_position(position, expected):
    assert total_reward(NAMES, INTERESTS, f"Brand {position}") == pytest.approx(expected)


@pytest.mark.parametrize("position", [21, 22, 25])
def test_hit_past_position_20_scores_as_a_miss(position):
    # 25 names (P_len = min(0.1 * 5, 1) + 1 = 1.5), 5 interests (0): eq. 3 alone would give the
    # hit at 25 R_match = -0.5 and a total of -2.0, below the miss's -1.5.
    names = [f"Brand {i}" for i in range(1, 26)]
    assert match_reward(names, f"Brand {position}") == 0.0
    assert total_reward(names, INTERESTS, f"Brand {position}") == pytest.approx(-1.5)
    assert total_reward(names, INTERESTS, "Nobody") == pytest.approx(-1.5)


_NAMES = st.lists(st.text(min_size=1, max_size=8), max_size=40, unique_by=normalise_name)


@settings(max_examples=200, deadline=None)
@given(_NAMES, st.integers(min_value=0, max_value=40))
def test_listing_the_target_never_lowers_the_reward(names, position):
    target = "Target Brand"
    names = [name for name in names if normalise_name(name) not in ("", normalise_name(target))]
    position = min(position, len(names))
    assert match_reward(names, target) == 0.0
    assert match_reward(names[:position] + [target] + names[position:], target) >= 0.0
    if position < len(names):  # same length: the target in place of another name
        replaced = names[:position] + [target] + names[position + 1:]
        assert total_reward(replaced, INTERESTS, target) >= total_reward(names, INTERESTS, target)


def test_miss_scores_zero_with_correct_counts():
    assert total_reward(NAMES, INTERESTS, "Nobody") == 0.0


@pytest.mark.parametrize(("n", "n_star", "expected"), [
    (20, 20, 0.0), (19, 20, 1.1), (21, 20, 1.1), (15, 20, 1.5), (10, 20, 2.0), (0, 20, 2.0),
    (40, 20, 2.0), (5, 5, 0.0), (3, 5, 1.2), (0, 5, 1.5), (6, 5, 1.1),
])
def test_length_penalty(n, n_star, expected):
    assert length_penalty(n, n_star) == pytest.approx(expected)


def test_wrong_counts_are_penalised_on_both_lists():
    # 18 advertisers (penalty 1.2) and 3 interests (penalty 1.2), target at 2: 1.8 + 2.0 - 2.4.
    assert total_reward(NAMES[:18], INTERESTS[:3], "Brand 2") == pytest.approx(1.4)
    # 25 advertisers (1.5), 5 interests (0), miss.
    more = NAMES + [f"Extra {i}" for i in range(5)]
    assert total_reward(more, INTERESTS, "Nobody") == pytest.approx(-1.5)


def test_duplicates_do_not_pad_the_list():
    padded = NAMES[:19] + ["brand 1"]  # 19 distinct names
    assert total_reward(padded, INTERESTS, "Brand 1") == pytest.approx(3.9 - 1.1)


def test_target_matches_every_spelling_of_its_name():
    assert total_reward(NAMES, INTERESTS, "  brand   3 ") == pytest.approx(1.7 + 2.0)
    spelled = ["B&C Eagle", "Oral-B"] + NAMES[2:]
    assert total_reward(spelled, INTERESTS, "B & C Eagle") == pytest.approx(3.9)
    assert total_reward(spelled, INTERESTS, "Oral B") == pytest.approx(3.8)


def test_spelling_variants_do_not_pad_the_list():
    padded = NAMES[:19] + ["Brand-1"]  # 19 distinct names
    assert total_reward(padded, INTERESTS, "Brand 1") == pytest.approx(3.9 - 1.1)


def test_reward_function_parses_completions_in_trl_signature():
    perfect = list_target(NAMES, INTERESTS)
    chat = [{"role": "assistant", "content": perfect}]
    no_tags = "|".join(NAMES)
    rewards = grpo_reward_fn([perfect, chat, no_tags], target_advertiser=["Brand 1", "Brand 5", "Brand 1"],
                             prompt=["p"] * 3)
    # Without the advertiser tag no name counts: miss, n = 0 (penalty 2.0), no interests (1.5).
    assert rewards == pytest.approx([3.9, 1.5, -3.5])


def test_partial_format_credit_is_off_by_default_and_adds_per_tag():
    text = "<answer><advertiser_names>Brand 1</advertiser_names></answer>"
    base = 3.9 - 2.0 - 1.5  # one name (penalty 2.0), no interests (1.5)
    assert completion_reward(text, "Brand 1") == pytest.approx(base)
    credited = make_reward_fn(RewardConfig(partial_format_credit=0.25))([text], ["Brand 1"])
    assert credited == pytest.approx([base + 0.5])  # answer and advertiser tags present, interests absent
    with pytest.raises(ValueError, match="partial_format_credit"):
        RewardConfig(partial_format_credit=-1.0)
