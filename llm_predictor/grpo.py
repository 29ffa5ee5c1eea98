"""GRPO post-training (paper 3.4.2), rewarded by the paper's equations 1-5 against the single next
advertiser (`reward.py`), under one of two policies (`GRPOStageConfig.policy`):

- `text` (the paper's): TRL's GRPOTrainer samples completions of the 20-advertiser + 5-interest XML
  prompt (appendix A.3) token by token. A model of the demo's size trained on 2 CPU cores never learns
  to write that list (the 20-advertiser SFT parses 0% of its lists), so every completion scores the same
  length penalties and the group advantages are all zero.
- `names` (the default): the completion is a list of 20 distinct names drawn from the 1-advertiser
  model's own scores of the prompt's allowed names, s_j = log P(name_j, end | prompt), the scores that
  `name_ranking.py` serves the top 20 of. The list is a Plackett-Luce sample at temperature t (Gumbel
  top-k on s / t): log pi(list) = sum_i s_(i) / t - logsumexp over the names not yet drawn. Every list
  parses into 20 distinct names by construction, eq. 1-5 scores it, and the group-normalised advantage
  weights log pi(list) (GRPO with one update per batch, so the clipped ratio is 1). The KL term is exact
  for the first name: beta * KL(softmax(s / t) || the same under the initial model), over the allowed
  names. Greedy decoding of this policy is the served ranking: the top 20 scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llm_predictor.pretrain import TrainConfig, run_trainer, training_arguments
from llm_predictor.prompts import N_ADVERTISERS
from synthetic_data.config_io import require

POLICIES = ("names", "text")


@dataclass(frozen=True)
class GRPOStageConfig:
    """GRPO: the policy (module docstring), loop settings, group size, temperature; for the `text` policy
    also the rollout length, KL weight and format credit. `train.batch_size` counts completions under
    `text` (TRL's convention) and prompts under `names` (each drawing `num_generations` lists)."""

    # the `names` policy's, chosen by validation Recall@20 on the demo world (docs/results.md, "GRPO that
    # learns on a CPU"; 200 steps over 100: three seeds' gains over the initialisation all above 0, against one
    # of three); a step of 8 prompts takes ~0.95 s on 2 cores
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=200, batch_size=8, learning_rate=5e-4, save_steps=50,
                                            logging_steps=10)
    )
    num_generations: int = 8
    max_completion_length: int = 256
    temperature: float = 1.0
    beta: float = 0.1
    partial_format_credit: float = 0.0  # reward per XML tag found, early on (0 = off, as the paper)
    policy: str = "names"

    def __post_init__(self) -> None:
        require(self.policy in POLICIES, "grpo.policy", f"must be one of {POLICIES}")
        require(self.num_generations >= 2, "num_generations", "must be >= 2 (GRPO compares a group)")
        require(
            self.policy == "names" or self.train.batch_size % self.num_generations == 0, "train.batch_size",
            f"must be a multiple of num_generations={self.num_generations} (completions per step)",
        )
        require(self.max_completion_length >= 8, "max_completion_length", "must be >= 8 tokens")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.beta >= 0, "beta", "must be >= 0")
        require(self.partial_format_credit >= 0, "partial_format_credit", "must be >= 0 (0 = off)")


def paper_reward_function(partial_format_credit: float):
    """The TRL reward function of `reward.py` (eq. 1-5), with the optional format credit."""
    from llm_predictor.reward import RewardConfig, make_reward_fn

    return make_reward_fn(RewardConfig(partial_format_credit=partial_format_credit))


def grpo(model_dir: Path, prompts: list[str], target_advertisers: list[str], config: GRPOStageConfig,
         output_dir: Path, show_progress: bool = True) -> dict:
    """GRPO-train the model in `model_dir` on prompts whose label is `target_advertisers`; resumable.
    Returns the run summary with the logged mean reward per logging step."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from llm_predictor.model import load_model
    from llm_predictor.tokenizer import load_tokenizer

    if not prompts:
        raise ValueError("grpo: no training prompts; check that the world has train users with labels")
    tokenizer = load_tokenizer(model_dir)
    dataset = Dataset.from_dict({"prompt": list(prompts), "target_advertiser": list(target_advertisers)})
    arguments = training_arguments(config.train, output_dir, show_progress)
    arguments["include_num_input_tokens_seen"] = "no"  # GRPO logs its own `num_tokens`
    args = GRPOConfig(
        **arguments,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        use_vllm=False,
    )
    # GRPO's time goes to sampling completions; on CPU eager attention decodes ~2x faster than SDPA
    # (measured in backends.TransformersBackend)
    attention = None if torch.cuda.is_available() else "eager"
    trainer = GRPOTrainer(
        model=load_model(model_dir, attention=attention).train(),
        reward_funcs=[paper_reward_function(config.partial_format_credit)],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    summary = run_trainer(trainer, output_dir)
    summary["rewards"] = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    summary["examples"] = len(prompts)
    return summary


def sample_name_lists(scores, num_generations: int, temperature: float, length: int = N_ADVERTISERS):
    """`num_generations` Plackett-Luce samples of `length` distinct names per prompt from `scores`
    (prompts, names; -inf marks no name), by Gumbel top-k on scores / temperature (no grad).
    Returns the name indices (prompts, num_generations, length) and each prompt's list length
    (min(length, its names))."""
    import torch

    keys = scores.detach().float() / temperature
    keys = keys.unsqueeze(1) - torch.log(-torch.log(torch.rand(keys.shape[0], num_generations, keys.shape[1],
                                                                device=keys.device).clamp(min=1e-20)))
    lengths = torch.isfinite(scores).sum(dim=1).clamp(max=length)
    return keys.topk(min(length, scores.shape[1]), dim=-1).indices, lengths


def _policy_logits(scores, temperature: float):
    """scores / temperature, float32, with no name (-inf) floored at -1e4 first: a list shorter than the
    drawn width would otherwise give -inf - -inf = nan past its length, and nan gradients even where masked."""
    return scores.float().nan_to_num(neginf=-1e4) / temperature


def list_logprob(scores, lists, lengths, temperature: float):
    """log pi(list) under the Plackett-Luce policy of `scores` / temperature (module docstring): (prompts,
    generations), summed over each prompt's first `lengths` positions; differentiable in `scores`."""
    import torch

    logits = _policy_logits(scores, temperature)  # (P, N)
    drawn = torch.nn.functional.one_hot(lists, logits.shape[1]).bool()  # (P, G, L, N)
    before = drawn.cumsum(dim=2).bool() & ~drawn  # names drawn at an earlier position
    remaining = logits[:, None, None, :].masked_fill(before, float("-inf"))
    terms = logits.gather(1, lists.flatten(1)).view(lists.shape) - torch.logsumexp(remaining, dim=-1)
    is_used = torch.arange(lists.shape[2], device=lists.device) < lengths[:, None, None]
    return (terms * is_used).sum(dim=-1)


def list_rewards(names: list[list[str]], lists: np.ndarray, lengths: np.ndarray, targets: list[str]) -> np.ndarray:
    """Eq. 1-5 of each sampled list (prompts, generations): R_match at the target's position minus the
    length penalty of the advertiser list (there are no interests: their penalty would be one constant)."""
    from llm_predictor.reward import key_match_reward, length_penalty
    from synthetic_data.names import normalise_name

    rewards = []
    for found, group, length, target in zip(names, lists, lengths, targets):
        keys, target_key = [normalise_name(name) for name in found], normalise_name(target)  # once a prompt
        rewards.append([key_match_reward([keys[i] for i in drawn[:length]], target_key)
                        - length_penalty(length, N_ADVERTISERS) for drawn in group])
    return np.array(rewards)


def group_advantages(rewards):
    """(r - group mean) / (group std + 1e-4) per prompt (rows), as GRPO normalises; a group whose rewards
    are all equal gets 0."""
    return (rewards - rewards.mean(dim=1, keepdim=True)) / (rewards.std(dim=1, keepdim=True) + 1e-4)


def first_name_kl(scores, reference_scores, temperature: float):
    """KL(softmax(scores / t) || softmax(reference_scores / t)) over each prompt's names (-inf: no name), per
    prompt: how far the first name's distribution moved from the initial model's; differentiable in `scores`."""
    import torch

    logp, logq = (torch.log_softmax(_policy_logits(x, temperature), dim=-1) for x in (scores, reference_scores))
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def _names_trainer(config: GRPOStageConfig, reference=None):
    """A `transformers.Trainer` whose loss is the `names` policy's GRPO loss on a batch of (prompt, allowed
    names, target), with `config.beta` x `first_name_kl` against the frozen `reference` model (needed when
    beta > 0); it logs the mean reward of the sampled lists and of the greedy list (the served top 20)."""
    import torch
    from transformers import Trainer

    from llm_predictor.name_ranking import name_scores, prepare_names

    class NameListGRPOTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.rewards: list[tuple[float, float]] = []  # (sampled, greedy) mean reward a step, since the last log

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            names, name_ids = prepare_names(self.processing_class, inputs["allowed_names"])
            with self.accelerator.autocast():  # bf16 as the wrapped `model.forward`
                scores, tokens = name_scores(model, self.processing_class, inputs["prompt"], name_ids)
            if model.training:  # the tokens through the forward and backward pass, for tokens/s
                self.state.num_input_tokens_seen += tokens
            lists, lengths = sample_name_lists(scores, config.num_generations, config.temperature)
            greedy = scores.detach().topk(lists.shape[2], dim=-1).indices.unsqueeze(1)
            targets = inputs["target_advertiser"]
            rewards = torch.tensor(list_rewards(names, lists.cpu().numpy(), lengths.cpu().numpy(), targets),
                                   dtype=torch.float32, device=scores.device)
            greedy_rewards = list_rewards(names, greedy.cpu().numpy(), lengths.cpu().numpy(), targets)
            self.rewards.append((rewards.mean().item(), float(greedy_rewards.mean())))
            logprobs = list_logprob(scores, lists, lengths, config.temperature)
            loss = -(group_advantages(rewards) * logprobs / lengths[:, None]).mean()
            if config.beta:
                with torch.no_grad(), self.accelerator.autocast():
                    reference_scores = name_scores(reference, self.processing_class, inputs["prompt"], name_ids).scores
                loss = loss + config.beta * first_name_kl(scores, reference_scores, config.temperature).mean()
            return (loss, None) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self.rewards:
                logs["reward"], logs["greedy_reward"] = (float(np.mean(column)) for column in zip(*self.rewards))
                self.rewards.clear()
            super().log(logs, *args, **kwargs)

    return NameListGRPOTrainer


def grpo_names(model_dir: Path, prompts: list[str], allowed_names: list[list[str]], target_advertisers: list[str],
               config: GRPOStageConfig, output_dir: Path, show_progress: bool = True) -> dict:
    """GRPO of the `names` policy (module docstring) on the 1-advertiser model in `model_dir`: each prompt's
    lists are drawn from its `allowed_names`. A prompt whose target matches none of its names gives every list
    the same reward (zero advantage, no gradient), so only the others train (`examples`; the rest are
    counted in `examples_target_not_allowed`). Resumable; returns the run summary with the logged rewards.
    Raises ValueError when no prompt has its target among its names."""
    from datasets import Dataset
    from transformers import TrainingArguments

    from llm_predictor.model import load_model
    from llm_predictor.tokenizer import load_tokenizer

    from synthetic_data.names import normalise_name

    keep = [i for i, (names, target) in enumerate(zip(allowed_names, target_advertisers, strict=True))
            if normalise_name(target) in {normalise_name(name) for name in names}]  # as the reward matches names
    if not keep:
        raise ValueError("grpo: no training prompt has its target among its allowed names; check the world's labels")
    tokenizer = load_tokenizer(model_dir)
    dataset = Dataset.from_dict({"prompt": [prompts[i] for i in keep],
                                 "allowed_names": [list(allowed_names[i]) for i in keep],
                                 "target_advertiser": [target_advertisers[i] for i in keep]})
    arguments = training_arguments(config.train, output_dir, show_progress)
    arguments["include_num_input_tokens_seen"] = "no"  # inputs are strings, tokenised in the loss
    reference = load_model(model_dir).eval().requires_grad_(False) if config.beta else None
    trainer = _names_trainer(config, reference)(
        model=load_model(model_dir).train(), args=TrainingArguments(**arguments, remove_unused_columns=False),
        train_dataset=dataset, processing_class=tokenizer,
        data_collator=lambda rows: {key: [row[key] for row in rows] for key in rows[0]},
    )
    if reference is not None:
        reference.to(trainer.args.device)  # the Trainer places only the model it trains
    summary = run_trainer(trainer, output_dir)
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    summary.update(rewards=[entry["reward"] for entry in logged],
                   greedy_rewards=[entry["greedy_reward"] for entry in logged],
                   examples=len(keep), examples_target_not_allowed=len(prompts) - len(keep))
    return summary
