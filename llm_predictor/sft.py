"""Supervised fine-tuning with TRL (paper 3.4.1): prompt -> the single next advertiser (appendix
A.1), or, for the paper's comparison, prompt -> the 20-advertiser XML list (Table 3).

The loss covers the completion only, and only the completion positions go through the LM head
(`completion_loss`; with right-padded batches of similar length, 2.6x TRL's own CPU path).
Sequences are never truncated (that could cut the target away): the feature budget keeps prompts
short, and any example still over `max_length` is left out of training and counted in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from llm_predictor.pretrain import TrainConfig, run_trainer, training_arguments
from synthetic_data.config_io import require


@dataclass(frozen=True)
class SFTStageConfig:
    """SFT: loop settings, which target (`single` advertiser or 20-advertiser `list`), length cap."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=300, learning_rate=1e-3))
    target: Literal["single", "list"] = "single"
    max_length: int = 1536
    # behaviour-sequence documents mixed in per SFT example when SFT starts from the behaviour model
    # (rehearsal, so that the prompt task does not erase what the sequences taught; behaviour.py)
    rehearsal_share: float = 0.5

    def __post_init__(self) -> None:
        require(0 <= self.rehearsal_share <= 4, "rehearsal_share", "must be in [0, 4]")
        require(self.target in ("single", "list"), "target", "must be 'single' or 'list'")
        require(self.max_length >= 32, "max_length", "must be >= 32 tokens")


def rehearsal_pairs(documents: list[str], separator: str) -> tuple[list[str], list[str]]:
    """Behaviour documents as (prompt, completion) pairs: the first name is the prompt and the rest the
    completion, so the completion-only loss covers every later name of the sequence."""
    pairs = [document.split(separator, 1) for document in documents if separator in document]
    return [first + separator for first, _ in pairs], [rest for _, rest in pairs]


def length_filter(prompts: list[str], completions: list[str], tokenizer, max_length: int) -> np.ndarray:
    """Boolean mask of the examples whose prompt + completion (+ EOS) fits in `max_length` tokens."""
    joined = [prompt + completion for prompt, completion in zip(prompts, completions, strict=True)]
    lengths = np.fromiter(
        (len(ids) + 1 for ids in tokenizer(joined, add_special_tokens=False)["input_ids"]),
        dtype=np.int64, count=len(joined),
    )
    return lengths <= max_length


def completion_loss(model, inputs: dict, num_items_in_batch=None):
    """Next-token loss summed over the completion tokens (labels not -100) and divided by their count
    (or `num_items_in_batch`, over accumulated batches), as TRL's; only those positions go through
    the LM head. TRL's fused head scores every position on CPU: about half of an SFT step there,
    when a 1-advertiser completion is ~1% of the tokens."""
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"][:, 1:]
    is_target = labels != -100
    model_inputs = {key: inputs[key] for key in ("input_ids", "attention_mask", "position_ids") if key in inputs}
    mask = model_inputs.get("attention_mask")
    if mask is not None and bool((mask[:, 1:] <= mask[:, :-1]).all()):
        # right padding: under the causal mask no real token sees a pad, so the padding mask can go,
        # which lets SDPA take its fused causal kernel (padded positions carry no label)
        del model_inputs["attention_mask"]
    hidden = model.base_model(**model_inputs, use_cache=False).last_hidden_state[:, :-1]
    logits = model.get_output_embeddings()(hidden[is_target]).float()
    total = F.cross_entropy(logits, labels[is_target], reduction="sum")
    count = is_target.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count).clamp(min=1)  # no completion token: a zero loss, not 0/0


def completion_loss_trainer(trainer_class):
    """`trainer_class` (TRL's `SFTTrainer`) with `completion_loss` as its loss."""

    class CompletionLossTrainer(trainer_class):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            with self.accelerator.autocast():  # bf16 as the wrapped `model.forward`, which this bypasses
                loss = completion_loss(model, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss

    return CompletionLossTrainer


def sft(model_dir: Path, prompts: list[str], completions: list[str], config: SFTStageConfig,
        output_dir: Path, show_progress: bool = True) -> dict:
    """Fine-tune the model in `model_dir` on (prompt, completion) pairs, loss on the completion only;
    resumable from the checkpoints in `output_dir`. Returns the run summary."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from llm_predictor.model import load_model
    from llm_predictor.tokenizer import load_tokenizer

    if not prompts:
        raise ValueError("sft: no training examples; check that the world has train users with labels")
    tokenizer = load_tokenizer(model_dir)
    fits = length_filter(prompts, completions, tokenizer, config.max_length)
    kept = np.flatnonzero(fits)
    if len(kept) == 0:
        raise ValueError(
            f"sft: all {len(prompts)} examples exceed max_length={config.max_length} tokens; "
            f"raise sft.max_length or lower the feature budget"
        )
    dataset = Dataset.from_dict({
        "prompt": [prompts[i] for i in kept],
        "completion": [completions[i] for i in kept],
    })
    args = SFTConfig(
        **training_arguments(config.train, output_dir, show_progress),
        max_length=None,  # never truncate: over-length examples were counted and left out above
        completion_only_loss=True,
        dataset_num_proc=None,
        train_sampling_strategy="group_by_length",  # batches of similar length: less padding (+18% tokens/s)
    )
    trainer = completion_loss_trainer(SFTTrainer)(
        model=load_model(model_dir).train(), args=args, train_dataset=dataset, processing_class=tokenizer,
    )
    summary = run_trainer(trainer, output_dir)
    summary.update(examples=len(prompts), examples_over_max_length=int((~fits).sum()))
    return summary
