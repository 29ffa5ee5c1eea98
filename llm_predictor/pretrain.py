"""Continued pretraining (CPT) of the causal LM on the world's web corpus (paper 3.5), so that the
model knows advertiser names, brands, domains and product lines before task training.

Also holds the training-loop settings that SFT and GRPO share: a `TrainConfig`, the arguments it
maps to, and `run_trainer`, which resumes from the latest checkpoint and summarises the run.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthetic_data.config_io import require


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training stage (steps, batch, learning rate, bf16, checkpoints, compilation)."""

    max_steps: int = 200
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    is_bf16: bool = True
    save_steps: int = 50
    logging_steps: int = 10
    seed: int = 0
    # transformers' `torch_compile` (inductor): the demo's behaviour stage ran 1.23x the tokens/s on this 2-core CPU,
    # ~25 s of compiling included, with its own rounding (another training trajectory); off where a stage is too
    # short to repay the compile
    torch_compile: bool = False

    def __post_init__(self) -> None:
        require(self.max_steps >= 1, "max_steps", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        require(0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.save_steps >= 1, "save_steps", "must be >= 1")
        require(self.logging_steps >= 1, "logging_steps", "must be >= 1")


@dataclass(frozen=True)
class PretrainConfig:
    """CPT: the loop settings and how documents become `block_size`-token rows: a stream cut into blocks (the
    web corpus), or whole documents packed with attention kept within each (`is_document_masked`, `pack_documents`:
    behaviour sequences, where a user's history must neither be cut at a block edge nor read another user's)."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=300, learning_rate=2e-3))
    block_size: int = 256
    is_document_masked: bool = False

    def __post_init__(self) -> None:
        require(self.block_size >= 16, "block_size", "must be >= 16 tokens")


def training_arguments(config: TrainConfig, output_dir: Path, show_progress: bool) -> dict:
    """Keyword arguments shared by `TrainingArguments`, `SFTConfig` and `GRPOConfig`."""
    import torch

    return dict(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        lr_scheduler_type="cosine",
        bf16=config.is_bf16,
        torch_compile=config.torch_compile,
        use_cpu=not torch.cuda.is_available(),
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=not show_progress,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )


@contextmanager
def deterministic_algorithms():
    """`torch.use_deterministic_algorithms` on (warn-only: an op without a deterministic kernel warns) for the
    block, then as before. Why: a `torch.compile`d training step on 2 CPU threads sums in an order that varies from
    run to run, so two runs at one seed trained different models (40 behaviour steps, 6 runs: 6 models; on one
    thread, eager, or compiled under this mode: one model, compiled at the same tokens/s)."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def run_trainer(trainer, output_dir: Path) -> dict:
    """Train (resuming from the latest checkpoint in `output_dir`), save the final model to
    `output_dir/model`, and return a summary: steps, first/last logged loss, tokens/s and their share of
    this machine's bf16 matrix-product ceiling (6 x params FLOPs a token, as `throughput.training_rows`;
    the run's time includes its evaluations and checkpoints)."""
    from transformers.trainer_utils import get_last_checkpoint

    from llm_predictor.model import parameter_count
    from llm_predictor.throughput import matmul_ceiling

    output_dir = Path(output_dir)
    resume = get_last_checkpoint(str(output_dir)) if output_dir.exists() else None
    with deterministic_algorithms():
        result = trainer.train(resume_from_checkpoint=resume)
    final_dir = output_dir / "model"
    trainer.save_model(str(final_dir))
    trainer.processing_class.save_pretrained(str(final_dir))
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    losses = [entry["loss"] for entry in logged]
    runtime = result.metrics.get("train_runtime", float("nan"))
    logged_tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    tokens = trainer.state.num_input_tokens_seen or (logged_tokens[-1] if logged_tokens else 0)
    # a resumed run counts all tokens but times only its own steps: no honest rate then
    rate = tokens / runtime if tokens and runtime and resume is None else None
    return {
        "model_dir": str(final_dir),
        "resumed_from": resume,
        "steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        "loss_steps": [entry["step"] for entry in logged],
        "validation_losses": [[entry["step"], entry["eval_loss"]] for entry in trainer.state.log_history
                              if "eval_loss" in entry],
        "train_runtime_s": runtime,
        "tokens_seen": int(tokens),
        "tokens_per_second": rate,
        "share_of_bf16_ceiling": None if rate is None else 6 * parameter_count(trainer.model) * rate / matmul_ceiling(),
    }


def pack_corpus(texts: list[str], tokenizer, block_size: int):
    """Tokenise the corpus, join documents with EOS, and cut it into `block_size` blocks (a Dataset)."""
    from datasets import Dataset

    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = np.array([tokenizer.eos_token_id], dtype=np.int64)
    stream = np.concatenate([part for doc in ids for part in (np.asarray(doc, dtype=np.int64), eos)])
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise ValueError(
            f"corpus has {len(stream)} tokens, fewer than one block of {block_size}: "
            f"lower pretrain.block_size or generate a larger world"
        )
    blocks = stream[: n_blocks * block_size].reshape(n_blocks, block_size)
    return Dataset.from_dict({"input_ids": blocks, "labels": blocks})


def pack_documents(texts: list[str], tokenizer, block_size: int):
    """Whole documents (tokens and EOS, the last `block_size` of a longer one) packed in order into rows of
    `block_size` tokens, none split across rows, the rest of a row padding (a Dataset of input_ids, labels,
    position_ids). Positions restart at each document, from which the model masks attention to within it
    (transformers' packed-sequence mask; it needs no attention_mask and no cache); a document's first token
    and the padding are not targets. Every token weighs the same in a step, and attention costs a row's
    `block_size`, not a whole batch's length."""
    from datasets import Dataset

    docs = [(doc + [tokenizer.eos_token_id])[-block_size:]
            for doc in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    if not docs:
        raise ValueError("no document to train on: generate a larger world")
    rows, current, used = [], [], 0
    for doc in docs:
        if current and used + len(doc) > block_size:
            rows.append(current)
            current, used = [], 0
        current.append(doc)
        used += len(doc)
    rows.append(current)
    columns = {"input_ids": [], "labels": [], "position_ids": []}
    for row in rows:
        padding = block_size - sum(map(len, row))
        columns["input_ids"].append([t for doc in row for t in doc] + [tokenizer.pad_token_id] * padding)
        columns["labels"].append([-100 if i == 0 else t for doc in row for i, t in enumerate(doc)] + [-100] * padding)
        columns["position_ids"].append([i for doc in row for i in range(len(doc))] + list(range(padding)))
    return Dataset.from_dict(columns)


def freeze_all_but_new_embeddings(model, first_new_token: int) -> None:
    """Only the embedding rows from `first_new_token` on stay trainable (SID phase 1, paper 3.5)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    embedding = model.get_input_embeddings().weight
    embedding.requires_grad_(True)
    embedding.register_hook(lambda grad: _zero_rows(grad, first_new_token))


def _zero_rows(grad, rows: int):
    """`grad` with its first `rows` rows zeroed (the old vocabulary does not move)."""
    grad = grad.clone()
    grad[:rows] = 0
    return grad


def pretrain(model_dir: Path, texts: list[str], config: PretrainConfig, output_dir: Path,
             show_progress: bool = True, trainable_from_token: int | None = None,
             validation_texts: list[str] | None = None, eval_steps: int = 50,
             early_stopping_patience: int = 0) -> dict:
    """Continue pretraining the model in `model_dir` on `texts` (causal LM loss); resumable. With
    `trainable_from_token`, only the embeddings of tokens from that id on learn (no weight decay).
    With `validation_texts`, the loss on them (packed alike) is logged every `eval_steps` steps and at
    the end (the summary's `validation_losses`: [step, loss] pairs), the model saved is the checkpoint of
    lowest validation loss (`best_step`; `config.train.save_steps` must be a multiple of `eval_steps`), and
    with `early_stopping_patience` > 0 training stops after that many evaluations without a lower loss
    (transformers' `EarlyStoppingCallback`): a fixed step count chosen on one dataset overfits a smaller one."""
    from dataclasses import replace

    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, default_data_collator

    from llm_predictor.model import load_model
    from llm_predictor.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).train()
    train_config = config.train
    if trainable_from_token is not None:
        freeze_all_but_new_embeddings(model, trainable_from_token)
        train_config = replace(train_config, weight_decay=0.0)  # decay would move the frozen rows
    rows = pack_documents if config.is_document_masked else pack_corpus
    if config.is_document_masked:  # a cache turns the packed-sequence mask off
        model.config.use_cache = False
    dataset = rows(texts, tokenizer, config.block_size)
    arguments = training_arguments(train_config, output_dir, show_progress)
    validation, callbacks = None, []
    if validation_texts is not None:
        if train_config.save_steps % eval_steps:
            raise ValueError(f"save_steps={train_config.save_steps} is not a multiple of eval_steps={eval_steps}: "
                             "the checkpoint of lowest validation loss would not be saved; make it one")
        validation = rows(validation_texts, tokenizer, config.block_size)
        arguments.update(eval_strategy="steps", eval_steps=eval_steps,
                         per_device_eval_batch_size=train_config.batch_size, load_best_model_at_end=True,
                         metric_for_best_model="eval_loss", greater_is_better=False)
        if early_stopping_patience > 0:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=dataset,
        eval_dataset=validation,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    summary = run_trainer(trainer, output_dir)
    summary["corpus_blocks"] = len(dataset)
    if validation is not None:  # transformers evaluates the last step too, and loads the best checkpoint
        summary["best_step"] = trainer.state.best_global_step
    return summary
