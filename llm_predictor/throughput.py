"""Throughput of the predictor's model on this machine (rows for `benchmarks/bench_llm.py`):
training tokens/s in fp32 and bf16 autocast, and generated tokens/s for beam search (with and
without the prompt cache) and sampling, each with its share of the machine's bf16 matrix-product
ceiling (INSTALL-NOTES).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from llm_predictor.decoding import DecodingConfig, generate_kwargs
from llm_predictor.model import ModelConfig, autocast, build_model, parameter_count

BF16_CEILING_FLOPS = 1.69e12  # measured bf16 2048^3 matrix product, 2 threads (INSTALL-NOTES)
FP32_CEILING_FLOPS = 3.25e11


@dataclass(frozen=True)
class _Vocabulary:
    """Stands in for a tokenizer where only the vocabulary size and special ids matter."""

    size: int
    eos_token_id: int = 0
    pad_token_id: int = 1

    def __len__(self) -> int:
        return self.size


def _rate_row(measure: str, tokens: int, seconds: float, flops: float, ceiling: float = BF16_CEILING_FLOPS) -> dict:
    return {"measure": measure, "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_second": tokens / seconds, "share_of_bf16_ceiling": flops / seconds / ceiling}


def training_rows(model, batch_size: int, seq_len: int, steps: int, generator,
                  precisions: tuple[bool, ...] = (False, True)) -> list[dict]:
    """AdamW steps on random tokens in each of `precisions` (False: fp32, True: bf16 autocast);
    FLOPs = 6 x params x tokens."""
    import torch

    params = parameter_count(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(2, model.config.vocab_size, (batch_size, seq_len), generator=generator)
    rows = []
    model.train()
    for is_bf16 in precisions:
        for step in range(steps + 1):  # the first step warms up and is not timed
            if step == 1:
                started = time.perf_counter()
            with autocast(is_bf16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        tokens = steps * batch_size * seq_len
        rows.append(_rate_row(f"train tokens/s ({'bf16 autocast' if is_bf16 else 'fp32'})", tokens, seconds,
                              6 * params * tokens))
    return rows


def generation_rows(model, n_prompts: int, prompt_len: int, new_tokens: int, num_beams: int, generator) -> list[dict]:
    """Generated tokens/s (returned sequences only) as the backend decodes (`serving_settings`: bf16
    weights, eager attention on CPU); beam search with `generate`'s own prefill (once per beam) and with the
    prompt cache `generate_texts` uses (once per prompt), and sampling. The ceiling share counts the work of every
    beam plus the prefill (2 x params per token)."""
    import copy

    import torch

    from llm_predictor.backends import serving_settings
    from llm_predictor.decoding import prompt_cache

    params = parameter_count(model)
    dtype, attention = serving_settings(is_bf16=True)
    served = copy.deepcopy(model).to(getattr(torch, dtype)).eval()
    if attention is not None:
        served.set_attn_implementation(attention)
    ids = torch.randint(2, model.config.vocab_size, (n_prompts, prompt_len), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    beam, sampling = DecodingConfig(strategy="beam", num_beams=num_beams), DecodingConfig(strategy="sampling")
    rows = []
    for label, config, is_cached in ((f"beam, {num_beams} beams, prefill per beam", beam, False),
                                     (f"beam, {num_beams} beams, prompt cache", beam, True),
                                     ("sampling", sampling, False)):
        rows_decoded = n_prompts * config.rows_per_prompt
        with torch.no_grad():
            started = time.perf_counter()
            cache = {"past_key_values": prompt_cache(served, batch, config.rows_per_prompt)} if is_cached else {}
            served.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=1,
                            **cache, **generate_kwargs(config))
            seconds = time.perf_counter() - started
        prefilled = n_prompts * prompt_len * (1 if is_cached or config.strategy != "beam" else config.num_beams)
        flops = 2 * params * (prefilled + rows_decoded * new_tokens)
        rows.append(_rate_row(f"generate tokens/s ({label})", n_prompts * new_tokens, seconds, flops))
    return rows


def measure(size: str = "small", vocab_size: int = 8000, batch_size: int = 8, seq_len: int = 1024,
            train_steps: int = 3, n_prompts: int = 8, prompt_len: int = 768, new_tokens: int = 64,
            num_beams: int = 4, seed: int = 0) -> list[dict]:
    """Training and generation throughput of a freshly built `size` model (weights do not change
    the speed); one dict per row with tokens/s and the share of the bf16 ceiling."""
    import torch

    model = build_model(ModelConfig(size=size, seed=seed), _Vocabulary(vocab_size))
    generator = torch.Generator().manual_seed(seed)
    header = {"model": size, "parameters": parameter_count(model), "threads": torch.get_num_threads()}
    rows = training_rows(model, batch_size, seq_len, train_steps, generator)
    rows += generation_rows(model, n_prompts, prompt_len, new_tokens, num_beams, generator)
    return [{**header, **row} for row in rows]
