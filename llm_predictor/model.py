"""The causal LM behind the predictor: any local Hugging Face model directory, or by default a small
Llama-architecture model built from a size preset (paper 3.4 uses an open-source base model).

Every size keeps head_dim 64 so that vLLM can serve it; `nano` is for tests, `small` for the
demo (sized from INSTALL-NOTES: ~7,500 training tokens/s with bf16 autocast on 2 cores of a processor
with AMX; ~4,650 on an AMD EPYC without it; `benchmarks/bench_llm.py` measures the machine at hand).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from synthetic_data.config_io import require

HEAD_DIM = 64
# hidden size, layers, attention heads (hidden / 64), MLP width
SIZES: dict[str, tuple[int, int, int, int]] = {
    "nano": (64, 2, 1, 128),
    "small": (256, 4, 4, 704),
    "base": (512, 6, 8, 1408),
}


@dataclass(frozen=True)
class ModelConfig:
    """Which model: a size preset built from scratch, or `base_model_dir` (a local HF model)."""

    size: Literal["nano", "small", "base"] = "small"
    base_model_dir: str | None = None
    max_position_embeddings: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.size in SIZES, "size", f"must be one of {sorted(SIZES)}")
        require(self.max_position_embeddings >= 128, "max_position_embeddings", "must be >= 128")
        if self.base_model_dir is not None:
            require(
                (Path(self.base_model_dir) / "config.json").exists(), "base_model_dir",
                f"{self.base_model_dir} has no config.json; point it at a Hugging Face model directory",
            )


def build_model(config: ModelConfig, tokenizer):
    """A freshly initialised `LlamaForCausalLM` of `config.size` for `tokenizer` (seeded, no global RNG)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, intermediate = SIZES[config.size]
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=HEAD_DIM,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(llama_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def load_model(directory: Path, dtype: str = "float32", attention: str | None = None):
    """Load a causal LM from a Hugging Face directory (ours or any local checkpoint) in eval mode;
    `attention` picks the attention kernel (None: the library's default)."""
    import torch
    from transformers import AutoModelForCausalLM

    extra = {} if attention is None else {"attn_implementation": attention}
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=getattr(torch, dtype), **extra)
    return model.eval()


def parameter_count(model) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def autocast(is_bf16: bool, device_type: str = "cpu"):
    """bf16 autocast (on CPU ~5x faster than fp32 with AMX, INSTALL-NOTES; ~1.6x with avx512_bf16 alone), or a
    no-op."""
    import torch

    if not is_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def prepare_base_model(config: ModelConfig, tokenizer_config, texts, out_dir: Path, names=()) -> Path:
    """The zero-shot model directory: `base_model_dir` as given, or a tokenizer trained on `texts` (with
    `tokenizer_config.advertiser_tokens`, each of `names` one token) plus a freshly built model saved to
    `out_dir` (no training yet)."""
    from llm_predictor.tokenizer import train_tokenizer

    if config.base_model_dir is not None:
        return Path(config.base_model_dir)
    tokenizer = train_tokenizer(texts, tokenizer_config, out_dir, names)
    build_model(config, tokenizer).save_pretrained(str(out_dir))
    return Path(out_dir)
