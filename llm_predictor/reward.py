"""The GRPO reward of paper 3.4.2, equations 1-5, and its TRL reward function.

Indexing: position i is 1-based (the first name has i = 1), so R_base(1) = 1.9, R_base(20) = 0 and
the 2.0 bonus covers the first four positions — the four slots requirement 2 of appendix A.3 gives
to active advertisers. A miss scores R_match = 0, and so does a hit past position n* = 20: eq. 3
alone would go negative there (-0.5 at i = 25), scoring a list that names the target below the
same list without it. Counts n are of distinct names (a repeated name cannot pad the list to 20),
with n* = 20 advertisers and n* = 5 interests; only names inside the <advertiser_names> tag count.
Names match the target, and repeat one another, under `synthetic_data.names.normalise_name` (case, accents,
spaces, punctuation, '&' = 'and'), the key the name -> ID conversion maps by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llm_predictor.parse import parse_output
from llm_predictor.prompts import N_ADVERTISERS, N_INTERESTS
from synthetic_data.config_io import require
from synthetic_data.names import normalise_name

# Tags whose presence earns partial format credit, when that option is on.
_CREDITED_TAGS = ("missing_answer_tag", "missing_advertiser_tag", "missing_interests_tag")


def base_reward(i: int) -> float:
    """Eq. 3: R_base(i) = 0.1 (20 - i), for 1 <= i <= 20 (`match_reward` scores 0 past 20)."""
    return 0.1 * (N_ADVERTISERS - i)


def bonus_reward(i: int) -> float:
    """Eq. 4: 2.0 for i <= 4, else 0."""
    return 2.0 if i <= 4 else 0.0


def match_reward(advertisers: Sequence[str], target: str) -> float:
    """Eq. 2 at the target's 1-based position i; 0 when the target is not listed or i > 20.

    The floor past position 20 (not in the paper) keeps a hit from ever scoring below a miss.
    """
    return key_match_reward([normalise_name(name) for name in advertisers], normalise_name(target))


def key_match_reward(keys: Sequence[str], target_key: str) -> float:
    """`match_reward` on names already keyed by `normalise_name` (GRPO keys each prompt's names once)."""
    if target_key not in keys:
        return 0.0
    i = keys.index(target_key) + 1
    return base_reward(i) + bonus_reward(i) if i <= N_ADVERTISERS else 0.0


def length_penalty(n: int, n_star: int) -> float:
    """Eq. 5: 0 when n = n*, else min(0.1 |n - n*|, 1.0) + 1.0."""
    return 0.0 if n == n_star else min(0.1 * abs(n - n_star), 1.0) + 1.0


def total_reward(advertisers: Sequence[str], interests: Sequence[str], target: str) -> float:
    """Eq. 1: R_total = R_match - P_len(n_adv, 20) - P_len(n_interest, 5), over distinct names."""
    distinct_advertisers = list(dict.fromkeys(normalise_name(name) for name in advertisers))
    distinct_interests = {normalise_name(name) for name in interests}
    return (key_match_reward(distinct_advertisers, normalise_name(target))
            - length_penalty(len(distinct_advertisers), N_ADVERTISERS)
            - length_penalty(len(distinct_interests), N_INTERESTS))


@dataclass(frozen=True)
class RewardConfig:
    """Options of the GRPO reward; the default is the paper's reward exactly."""

    # Early-training help (not in the paper): this much reward per XML tag found (answer,
    # advertiser_names, interests), so a model that has not learned the format yet gets a gradient.
    partial_format_credit: float = 0.0

    def __post_init__(self):
        require(self.partial_format_credit >= 0, "reward.partial_format_credit", "must be >= 0 (0 = off)")


def completion_text(completion) -> str:
    """TRL passes plain strings, or chat messages (a list of {'role', 'content'}) for chat datasets."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"completion must be a string or a list of chat messages, got {type(completion).__name__}")


def completion_reward(text: str, target: str, config: RewardConfig = RewardConfig()) -> float:
    """Parse one completion and score it; names outside the advertiser tag do not count."""
    parsed = parse_output(text)
    advertisers = parsed.advertisers if parsed.is_parsed else []
    reward = total_reward(advertisers, parsed.interests, target)
    if config.partial_format_credit:
        reward += config.partial_format_credit * sum(tag not in parsed.issues for tag in _CREDITED_TAGS)
    return reward


def make_reward_fn(config: RewardConfig = RewardConfig()) -> Callable[..., list[float]]:
    """A reward function with TRL's signature; the dataset's `target_advertiser` column is the label."""

    def grpo_reward(completions, target_advertiser, **kwargs) -> list[float]:
        if len(completions) != len(target_advertiser):
            raise ValueError(f"{len(completions)} completions but {len(target_advertiser)} targets")
        return [completion_reward(completion_text(c), t, config) for c, t in zip(completions, target_advertiser)]

    return grpo_reward


grpo_reward_fn = make_reward_fn()
