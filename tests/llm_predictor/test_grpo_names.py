"""GRPO's `names` policy: Plackett-Luce lists drawn from the 1-advertiser model's name scores, their
log-probability, the eq. 1-5 reward of a list, and a nano model that learns to rank the target higher."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from llm_predictor.grpo import (GRPOStageConfig, first_name_kl, group_advantages, grpo_names, list_logprob,
                                list_rewards, sample_name_lists)
from llm_predictor.loss_curves import plot_reward_curves
from llm_predictor.model import ModelConfig, load_model, prepare_base_model
from llm_predictor.name_ranking import name_scores, prepare_names
from llm_predictor.pretrain import TrainConfig
from llm_predictor.reward import length_penalty
from llm_predictor.tokenizer import TokenizerConfig, load_tokenizer

NAMES = ["Potean Collective", "Tratrea Co.", "Deachigrin House", "Vowis Labs", "Levi's", "Ollo", "Brisk & Co"]
PROMPTS = [f"#Input\nTop Brands [{name.split()[0]}]\nNext advertiser:" for name in NAMES] * 4
TARGETS = NAMES * 4


def test_sampled_lists_are_distinct_names_of_the_prompt():
    scores = torch.tensor([[0.0, -1.0, -2.0, float("-inf")], [-3.0, -1.0, float("-inf"), float("-inf")]])
    lists, lengths = sample_name_lists(scores, num_generations=50, temperature=1.0, length=3)
    assert lengths.tolist() == [3, 2]
    for row, length in zip(lists, lengths.tolist()):
        assert all(len(set(drawn)) == length for drawn in row[:, :length].tolist())
    assert set(lists[0, :, :3].flatten().tolist()) <= {0, 1, 2}
    assert set(lists[1, :, :2].flatten().tolist()) == {0, 1}


def test_first_draw_follows_the_softmax_of_scores_over_temperature():
    torch.manual_seed(0)
    scores = torch.tensor([[0.0, -1.0, -2.0]])
    for temperature in (1.0, 2.0):
        lists, _ = sample_name_lists(scores, num_generations=40_000, temperature=temperature, length=2)
        shares = np.bincount(lists[0, :, 0].numpy(), minlength=3) / 40_000
        assert shares == pytest.approx(torch.softmax(scores[0] / temperature, 0).numpy(), abs=0.01)


def test_list_logprob_is_a_distribution_over_ordered_lists():
    """exp(log pi) summed over every ordered list of 2 of 4 names is 1; a wrong normaliser (names not
    removed once drawn, or the temperature missed) breaks it."""
    scores = torch.tensor([[0.3, -1.2, -0.1, -2.0]])
    for temperature in (1.0, 0.5):
        pairs = torch.tensor([list(itertools.permutations(range(4), 2))])  # (1, 12, 2)
        total = list_logprob(scores, pairs, torch.tensor([2]), temperature).exp().sum()
        assert float(total) == pytest.approx(1.0, abs=1e-5)
    probabilities = torch.softmax(scores[0], 0)
    one = list_logprob(scores, torch.tensor([[[2, 0]]]), torch.tensor([2]), 1.0)
    expected = probabilities[2] * probabilities[0] / (1 - probabilities[2])
    assert float(one.exp()) == pytest.approx(float(expected), rel=1e-5)


def test_list_logprob_counts_only_a_prompts_own_length():
    """A prompt with 2 names draws a list of 2; the positions past it add nothing, not nan, to the value or
    the gradient."""
    scores = torch.tensor([[0.0, -1.0, float("-inf"), float("-inf")]], requires_grad=True)
    value = list_logprob(scores, torch.tensor([[[1, 0, 2, 3]]]), torch.tensor([2]), 1.0)  # 2 padded: log 1/2 each
    assert float(value) == pytest.approx(float(torch.log_softmax(scores[0, :2], 0)[1]), abs=1e-6)  # then log 1
    value.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_list_rewards_are_equations_1_to_5():
    names = [[f"Advertiser {i}" for i in range(1, 31)]]
    lists = np.array([[list(range(20)), list(range(10, 30)), [5, *range(6, 25)]]])
    rewards = list_rewards(names, lists, np.array([20]), ["advertiser 6"])  # names match as the converter keys them
    assert rewards[0].tolist() == pytest.approx([0.1 * (20 - 6), 0.0, 0.1 * 19 + 2.0])
    short = list_rewards([names[0][:3]], np.array([[[2, 1, 0]]]), np.array([3]), ["Advertiser 3"])
    assert short[0, 0] == pytest.approx(0.1 * 19 + 2.0 - length_penalty(3, 20))


def test_group_advantages_are_normalised_within_each_prompt():
    advantages = group_advantages(torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 4.0]]))
    assert advantages[0].tolist() == [0.0, 0.0, 0.0]
    assert advantages[1].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-3)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    corpus = [f"{name} sells rugs online. Next advertiser: {name}" for name in NAMES] * 8
    return prepare_base_model(ModelConfig(size="nano"), TokenizerConfig(vocab_size=400), corpus + PROMPTS,
                              tmp_path_factory.mktemp("base"))


def test_name_scores_are_differentiable_name_logprobs(base_dir):
    from llm_predictor.name_ranking import name_logprobs

    model, tokenizer = load_model(base_dir), load_tokenizer(base_dir)
    _, ids = prepare_names(tokenizer, [NAMES, NAMES[:3]])
    scores, tokens = name_scores(model, tokenizer, PROMPTS[:2], ids)
    prompt_tokens = sum(map(len, tokenizer(PROMPTS[:2], add_special_tokens=False)["input_ids"]))
    assert tokens == prompt_tokens + sum(len(name) for found in ids for name in found)  # no shared header here
    assert scores.requires_grad and torch.isinf(scores[1, 3:]).all()
    expected = name_logprobs(model, tokenizer, PROMPTS[:2], ids)
    for row, want in zip(scores.detach().numpy(), expected):
        assert row[:len(want)] == pytest.approx(want, abs=1e-4)


def _target_rank(model_dir) -> float:
    """Mean rank (0 = first) of each prompt's target among the names, by the model's scores."""
    from llm_predictor.name_ranking import name_logprobs

    model, tokenizer = load_model(model_dir).eval(), load_tokenizer(model_dir)
    _, ids = prepare_names(tokenizer, [NAMES] * len(NAMES))
    scores = name_logprobs(model, tokenizer, PROMPTS[:len(NAMES)], ids)
    return float(np.mean([(row > row[i]).sum() for i, row in enumerate(scores)]))


def test_names_policy_grpo_ranks_the_target_higher_and_resumes(base_dir, tmp_path):
    """The reward favours the prompt's own brand: a sign or normaliser error in the loss moves it down."""
    config = GRPOStageConfig(train=TrainConfig(max_steps=60, batch_size=7, learning_rate=1e-2, warmup_steps=0,
                                               logging_steps=10, save_steps=30, is_bf16=False),
                             num_generations=8, beta=0.0)
    allowed = [NAMES + ["Unlisted Brand"]] * len(PROMPTS)
    # one target spelt otherwise (kept: names match as the reward matches them), one that is no name (counted)
    targets = TARGETS[:-2] + ["OLLO", "Nobody Listed"]
    before = _target_rank(base_dir)
    summary = grpo_names(base_dir, PROMPTS, allowed, targets, config, tmp_path, show_progress=False)
    assert summary["steps"] == 60 and summary["examples_target_not_allowed"] == 1
    assert summary["examples"] == len(PROMPTS) - 1 and len(summary["rewards"]) == len(summary["greedy_rewards"]) == 7
    assert summary["tokens_seen"] > 0
    after = _target_rank(tmp_path / "model")
    assert after < before - 1.0, (before, after)
    assert plot_reward_curves(summary, tmp_path / "rewards.png", "t").stat().st_size > 0
    resumed = grpo_names(base_dir, PROMPTS, allowed, targets, config, tmp_path, show_progress=False)
    assert resumed["resumed_from"] is not None and resumed["steps"] == 60


def test_first_name_kl_is_the_kl_divergence_over_the_names():
    """Unequal, non-mirrored rows: KL(p || q) differs from KL(q || p), so swapped arguments fail."""
    scores = torch.tensor([[0.0, -1.0, -3.0, float("-inf")], [-0.5, -0.5, -3.0, -1.0]])
    reference = torch.tensor([[-2.0, 0.0, -0.2, float("-inf")], [-0.5, -0.5, -3.0, -1.0]])
    p, q = torch.softmax(scores[0, :3] / 2, 0), torch.softmax(reference[0, :3] / 2, 0)
    assert float((p * (p / q).log()).sum()) != pytest.approx(float((q * (q / p).log()).sum()), abs=1e-3)
    got = first_name_kl(scores, reference, temperature=2.0)
    assert got.tolist() == pytest.approx([float((p * (p / q).log()).sum()), 0.0], abs=1e-6)


def _moved(base_dir, tmp_path, beta: float) -> float:
    """Mean first-name KL of the trained model from the initial one, on the training prompts."""
    config = GRPOStageConfig(train=TrainConfig(max_steps=20, batch_size=7, learning_rate=1e-2, warmup_steps=0,
                                               logging_steps=10, save_steps=20, is_bf16=False, seed=1),
                             num_generations=8, beta=beta)
    allowed = [NAMES] * len(PROMPTS)
    grpo_names(base_dir, PROMPTS, allowed, TARGETS, config, tmp_path, show_progress=False)
    tokenizer = load_tokenizer(base_dir)
    _, ids = prepare_names(tokenizer, allowed[:len(NAMES)])
    with torch.no_grad():
        before = name_scores(load_model(base_dir), tokenizer, PROMPTS[:len(NAMES)], ids).scores
        after = name_scores(load_model(tmp_path / "model"), tokenizer, PROMPTS[:len(NAMES)], ids).scores
    return float(first_name_kl(after, before, 1.0).mean())


def test_the_kl_term_keeps_the_policy_near_its_initialisation(base_dir, tmp_path):
    assert _moved(base_dir, tmp_path / "held", beta=5.0) < 0.5 * _moved(base_dir, tmp_path / "free", beta=0.0)


def test_gradients_through_a_shared_header_equal_those_without_it(base_dir, monkeypatch):
    """The header's cache runs once and is repeated per prompt: the gradient must still reach the weights as
    if each prompt ran whole."""
    from llm_predictor import name_ranking

    header = "#Role\nYou are an ad-matching assistant for a commerce platform; rank the advertisers below.\n"
    prompts = [header + prompt for prompt in PROMPTS[:3]]
    tokenizer = load_tokenizer(base_dir)
    _, ids = prepare_names(tokenizer, [NAMES, NAMES[:4], NAMES[2:]])
    assert name_ranking._shared_prefix(tokenizer(prompts, add_special_tokens=False)["input_ids"]) >= 16

    def gradient(minimum: int):
        monkeypatch.setattr(name_ranking, "SHARED_PREFIX_MIN_TOKENS", minimum)
        model = load_model(base_dir)
        scores, tokens = name_scores(model, tokenizer, prompts, ids)
        scores[torch.isfinite(scores)].sum().backward()
        return scores.detach(), tokens, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    shared_scores, shared_tokens, shared_grad = gradient(16)
    whole_scores, whole_tokens, whole_grad = gradient(10**9)
    header_tokens = name_ranking._shared_prefix(tokenizer(prompts, add_special_tokens=False)["input_ids"])
    assert whole_tokens - shared_tokens == 2 * header_tokens  # the header ran once, not for each of 3 prompts
    assert torch.allclose(shared_scores, whole_scores, atol=1e-4)
    assert torch.allclose(shared_grad, whole_grad, atol=1e-4, rtol=1e-3)
