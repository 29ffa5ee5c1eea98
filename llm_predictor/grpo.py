"""GRPO post-training with TRL (paper 3.4.2): the 20-advertiser + 5-interest XML prompt (appendix
A.3), rewarded by the paper's equations 1-5 against the single next advertiser (`reward.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llm_predictor.pretrain import TrainConfig, run_trainer, training_arguments
from synthetic_data.config_io import require


@dataclass(frozen=True)
class GRPOStageConfig:
    """GRPO: loop settings, group size, rollout length and temperature, KL weight, format credit."""

    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=60, batch_size=8, learning_rate=2e-4, save_steps=20,
                                            logging_steps=5)
    )
    num_generations: int = 8
    max_completion_length: int = 256
    temperature: float = 1.0
    beta: float = 0.0
    partial_format_credit: float = 0.0  # reward per XML tag found, early on (0 = off, as the paper)

    def __post_init__(self) -> None:
        require(self.num_generations >= 2, "num_generations", "must be >= 2 (GRPO compares a group)")
        require(
            self.train.batch_size % self.num_generations == 0, "train.batch_size",
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
