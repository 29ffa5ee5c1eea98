"""Throughput of the predictor's model on this machine (rows for `benchmarks/bench_llm.py`):
training tokens/s in fp32 and bf16 autocast, generated tokens/s for beam search and sampling (through
`generate`, with and without the prompt cache, and packed), and users ranked/s, each with its share of the
machine's bf16 matrix-product ceiling (MFU; FLOPs = 2 x params per token forward, 6 x for training, attention
left out), that ceiling measured in the same process: it depends on the processor (INSTALL-NOTES
gives ~1,690 GFLOP/s on one with AMX tiles; an AMD EPYC with avx512_bf16 and no AMX measured ~420).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from llm_predictor.decoding import DecodingConfig, generate_kwargs
from llm_predictor.model import ModelConfig, autocast, build_model, parameter_count



def matmul_ceiling(dtype: str = "bfloat16", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` `size`^3 matrix products in `dtype` on this machine's threads: the
    ceiling a model's throughput is stated as a share of."""
    import torch

    a, b = (torch.randn(size, size, dtype=getattr(torch, dtype)) for _ in range(2))
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


def processor_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux; `platform.processor()` elsewhere)."""
    import platform
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class _Vocabulary:
    """Stands in for a tokenizer where only the vocabulary size and special ids matter."""

    size: int
    eos_token_id: int = 0
    pad_token_id: int = 1

    def __len__(self) -> int:
        return self.size


def _rate_row(measure: str, tokens: int, seconds: float, flops: float, ceiling: float | None) -> dict:
    return {"measure": measure, "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_second": tokens / seconds,
            "share_of_bf16_ceiling": None if ceiling is None else flops / seconds / ceiling}


def training_rows(model, batch_size: int, seq_len: int, steps: int, generator, ceiling: float | None = None,
                  variants: tuple[tuple[bool, bool], ...] = ((False, False), (True, False))) -> list[dict]:
    """AdamW steps on random tokens in each of `variants`, (is_bf16, is_compiled) pairs: fp32 or bf16 autocast,
    eager or `torch.compile`d as `TrainConfig.torch_compile` trains (its compilation is in the untimed first step);
    FLOPs = 6 x params x tokens, over `ceiling` (FLOP/s; without it, no share)."""
    import torch

    params = parameter_count(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(2, model.config.vocab_size, (batch_size, seq_len), generator=generator)
    rows = []
    model.train()
    for is_bf16, is_compiled in variants:
        stepped = torch.compile(model) if is_compiled else model  # shares the parameters the optimizer steps
        for step in range(steps + 1):  # the first step warms up (and compiles) and is not timed
            if step == 1:
                started = time.perf_counter()
            with autocast(is_bf16):
                loss = stepped(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        tokens = steps * batch_size * seq_len
        label = ("bf16 autocast" if is_bf16 else "fp32") + (", torch.compile" if is_compiled else "")
        rows.append(_rate_row(f"train tokens/s ({label})", tokens, seconds, 6 * params * tokens, ceiling))
    return rows


def generation_rows(model, n_prompts: int, prompt_len: int, new_tokens: int, num_beams: int, generator,
                    ceiling: float) -> list[dict]:
    """Generated tokens/s (returned sequences only) as the backend decodes (`serving_settings`: bf16
    weights; on CPU `generate`'s decode steps eager, the rest SDPA): beam search and `num_beams` samples per
    prompt with `generate`'s own prefill (once per sequence, eager), with the prompt cache (once per prompt) and
    packed (`packed_decoding`: the prompt's cache held once), and one sample per prompt. The ceiling share
    counts the work of every sequence plus the prefill (2 x params per token)."""
    import copy

    import torch

    from llm_predictor.backends import decode_attention, serving_settings
    from llm_predictor.decoding import attention_implementation, prompt_cache
    from llm_predictor.name_ranking import prefill_ids
    from llm_predictor.packed_decoding import packed_decode

    params = parameter_count(model)
    dtype, attention = serving_settings(is_bf16=True)
    served = copy.deepcopy(model).to(getattr(torch, dtype)).eval()
    if attention is not None:
        served.set_attn_implementation(attention)
    ids = torch.randint(2, model.config.vocab_size, (n_prompts, prompt_len), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    beam = DecodingConfig(strategy="beam", num_beams=num_beams, num_return_sequences=num_beams,
                          max_new_tokens=new_tokens)
    samples = DecodingConfig(strategy="sampling", num_return_sequences=num_beams, max_new_tokens=new_tokens)
    rows = []
    for label, config, how in ((f"beam, {num_beams} beams, prefill per beam", beam, "generate"),
                               (f"beam, {num_beams} beams, prompt cache", beam, "cache"),
                               (f"beam, {num_beams} beams, packed", beam, "packed"),
                               (f"sampling, {num_beams} a prompt, prompt cache", samples, "cache"),
                               (f"sampling, {num_beams} a prompt, packed", samples, "packed"),
                               ("sampling, 1 a prompt", DecodingConfig(strategy="sampling"), "cache")):
        with torch.no_grad():
            started = time.perf_counter()
            if how == "packed":
                output = packed_decode(served, prefill_ids(served, batch["input_ids"], batch["attention_mask"], 1),
                                       config, eos_id=0)
                generated = int((output != 1).sum())  # random weights: an end is a 1-in-vocabulary draw
            else:
                cache = {} if how == "generate" else {
                    "past_key_values": prompt_cache(served, batch, config.rows_per_prompt)}
                with attention_implementation(served, decode_attention()):
                    served.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=1,
                                    **cache, **generate_kwargs(config))
                generated = n_prompts * config.num_return_sequences * new_tokens
            seconds = time.perf_counter() - started
        prefilled = n_prompts * prompt_len * (config.rows_per_prompt if how == "generate" else 1)
        flops = 2 * params * (prefilled + n_prompts * config.rows_per_prompt * new_tokens)
        rows.append(_rate_row(f"generate tokens/s ({label})", generated, seconds, flops, ceiling))
    return rows


def decoding_rows(model_dir, prompts: list[str], decoding: DecodingConfig, batch_size: int = 32) -> list[dict]:
    """Seconds to decode `prompts` as `llm eval` does (`TransformersBackend`, bf16), packed (`packed_decoding`)
    and through `generate` (its prompt prefilled once), each after one warm-up batch, and the share of outputs
    the two write alike (bf16 can round a near-tie either way)."""
    from llm_predictor.backends import TransformersBackend

    rows, texts = [], []
    backend = TransformersBackend(model_dir, batch_size)
    for is_packed in (True, False):
        backend.is_packed = is_packed
        backend.generate(prompts[:batch_size], decoding)  # loads the model once, warms this path's kernels
        started = time.perf_counter()
        generations = backend.generate(prompts, decoding)
        seconds = time.perf_counter() - started
        texts.append([generation.text for generation in generations])
        rows.append({"decoding": "packed" if is_packed else "generate", "users": len(prompts),
                     "seconds": round(seconds, 2), "users_per_second": len(prompts) / seconds,
                     "generated_tokens": sum(generation.num_tokens for generation in generations)})
    same = sum(a == b for a, b in zip(*texts)) / len(texts[0])
    return [{**row, "speed-up": rows[1]["seconds"] / row["seconds"], "outputs_alike": same} for row in rows]


def measure(size: str = "small", vocab_size: int = 8000, batch_size: int = 8, seq_len: int = 1024,
            train_steps: int = 3, n_prompts: int = 8, prompt_len: int = 768, new_tokens: int = 64,
            num_beams: int = 4, seed: int = 0, is_compiled: bool = True) -> list[dict]:
    """Training and generation throughput of a freshly built `size` model (weights do not change
    the speed); one dict per row with tokens/s and the share of the bf16 ceiling. Training runs in fp32, bf16
    autocast and, with `is_compiled`, bf16 autocast compiled (the behaviour stage's setting, `TrainConfig`)."""
    import torch

    model = build_model(ModelConfig(size=size, seed=seed), _Vocabulary(vocab_size))
    generator = torch.Generator().manual_seed(seed)
    ceiling = matmul_ceiling()
    header = {"model": size, "parameters": parameter_count(model), "threads": torch.get_num_threads(),
              "bf16_ceiling_gflops": round(ceiling / 1e9)}
    variants = ((False, False), (True, False)) + (((True, True),) if is_compiled else ())
    rows = training_rows(model, batch_size, seq_len, train_steps, generator, ceiling, variants)
    rows += generation_rows(model, n_prompts, prompt_len, new_tokens, num_beams, generator, ceiling)
    return [{**header, **row} for row in rows]


def ranking_rows(model_dir, prompts: list[str], allowed_names: list[list[str]], name_end: str, top_k: int = 20,
                 batch_size: int = 32) -> list[dict]:
    """Users scored per second by name ranking with a trained model (its bounds depend on what it
    learned; random weights would make every name a candidate): the bounded top-k that serving uses,
    and every name scored, each with the names scored per user and the share of the bf16 ceiling
    (2 x params per prompt token and per name scored times the mean name length; padding is not counted)."""
    import torch

    from llm_predictor.backends import serving_settings
    from llm_predictor.model import load_model
    from llm_predictor.name_ranking import name_logprobs, prepare_names, top_k_names
    from llm_predictor.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, *serving_settings(is_bf16=True))
    params = parameter_count(model)
    _, name_ids = prepare_names(tokenizer, allowed_names)
    prompt_tokens = sum(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])
    order = sorted(range(len(prompts)), key=lambda p: len(prompts[p]))  # as the backend batches them
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def bounded() -> int:
        return sum(top_k_names(model, tokenizer, [prompts[p] for p in batch], [name_ids[p] for p in batch], top_k,
                               name_end=name_end)[2] for batch in batches)

    def every() -> int:
        for batch in batches:
            name_logprobs(model, tokenizer, [prompts[p] for p in batch], [name_ids[p] for p in batch],
                          name_end=name_end)
        return sum(map(len, name_ids))

    mean_name_tokens = sum(len(ids) for found in name_ids for ids in found) / max(sum(map(len, name_ids)), 1)
    ceiling = matmul_ceiling()
    rows = []
    for label, scorer in ((f"bounded top-{top_k}", bounded), ("every name", every)):
        with torch.no_grad():
            started = time.perf_counter()
            names = scorer()
            seconds = time.perf_counter() - started
        flops = 2 * params * (prompt_tokens + names * mean_name_tokens)
        rows.append({"measure": f"users ranked/s ({label})", "users": len(prompts), "seconds": round(seconds, 3),
                     "users_per_second": len(prompts) / seconds, "names_scored_per_user": names / len(prompts),
                     "share_of_bf16_ceiling": flops / seconds / ceiling, "bf16_ceiling_gflops": round(ceiling / 1e9)})
    return rows
