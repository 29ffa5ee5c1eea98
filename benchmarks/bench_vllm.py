"""vLLM against the transformers backend in one run, on the same prompts and the same trained model: users
ranked per second by the served (ranked) method with its top 20, greedy decoding, tokens per second of each,
the ratio vLLM / transformers, and how often the two rank the same 20 names in the same order.

    .venv-vllm/bin/python benchmarks/bench_vllm.py                      # runs/demo, its chosen method
    .venv-vllm/bin/python benchmarks/bench_vllm.py --run runs/demo --method behaviour_ranked_open --users 512

Needs vLLM (`make install-vllm` builds .venv-vllm) and a run with trained LLM stages (`make demo`); without
either it says so and exits 0 (`make bench` runs every bench_*.py). Ranking tokens are the prompt tokens plus
the tokens of the names the bounded search scored (the count vLLM's search reports; the transformers backend
scores the same names up to near-ties); greedy tokens are those generated. Engine start and model load are
timed apart and left out of the rates; each backend first runs a few prompts to warm up.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table


def load_prompts(run_root: Path, method_name: str, users: int):
    """(method, model directory, prompts, allowed names, ranking decoding) of `users` serving users."""
    from llm_predictor.choice import resolve_method
    from llm_predictor.config import METHODS, trained_config
    from llm_predictor.stages import method_decoding, method_prompts, model_dir, prediction_keys, run_world
    from synthetic_data.run_folder import RunFolder

    run = RunFolder(run_root)
    method_name = resolve_method(run, method_name)
    if not METHODS[method_name].is_ranked:
        raise SystemExit(f"{method_name} does not rank names; pick a *_ranked method")
    config = trained_config(run, method_name, "small")
    world = run_world(run_root)
    keys = prediction_keys(world, replace(config, serving_max_users=users), "serving")
    prompts = method_prompts(run, world, config, METHODS[method_name], keys, config.features)
    decoding = method_decoding(METHODS[method_name], config.predict.decoding)
    return (method_name, model_dir(run, method_name), prompts["prompt"].to_list(), prompts["allowed_names"].to_list(),
            decoding)


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a run with trained LLM stages")
    parser.add_argument("--method", default="chosen", help="a ranked method, or 'chosen' (the run's choice)")
    parser.add_argument("--users", type=int, default=256, help="serving users to rank")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--greedy-tokens", type=int, default=24, help="max_new_tokens of the greedy rows")
    args = parser.parse_args(argv)
    console = Console(width=150)
    if importlib.util.find_spec("vllm") is None:
        console.print("bench_vllm: vLLM is not installed here, nothing measured (`make install-vllm`, then run "
                      "this script with .venv-vllm/bin/python)")
        return 0
    if not (args.run / "llm_choice").exists() and args.method == "chosen":
        console.print(f"bench_vllm: {args.run} has no trained LLM stages (make demo), nothing measured")
        return 0
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from llm_predictor.backends import TransformersBackend, VLLMBackend
    from llm_predictor.decoding import DecodingConfig
    from llm_predictor.throughput import processor_name

    method_name, model_dir, prompts, allowed, rank = load_prompts(args.run, args.method, args.users)
    greedy = DecodingConfig(strategy="greedy", num_beams=1, max_new_tokens=args.greedy_tokens)
    is_bf16 = args.dtype == "bfloat16"
    transformers_backend = TransformersBackend(model_dir, batch_size=32, is_bf16=is_bf16)
    vllm_backend = VLLMBackend(model_dir, is_bf16=is_bf16)
    _, load_seconds = timed(transformers_backend._load)
    _, start_seconds = timed(vllm_backend._load)
    tokenizer = transformers_backend.tokenizer_
    prompt_tokens = sum(map(len, tokenizer(prompts, add_special_tokens=False)["input_ids"]))
    console.print(f"{method_name} on {len(prompts):,} serving users of {args.run} ({model_dir}), {args.dtype}; "
                  f"{prompt_tokens / len(prompts):.0f} prompt tokens a user; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores ({processor_name()}); transformers load "
                  f"{load_seconds:.1f} s, vLLM engine start {start_seconds:.1f} s")

    rows, results = [], {}
    for backend_name, backend in (("transformers", transformers_backend), ("vllm", vllm_backend)):
        backend.generate(prompts[:8], rank, allowed[:8])  # warm-up
        vllm_backend.names_scored_ = 0
        ranked, rank_seconds = timed(lambda b=backend: b.generate(prompts, rank, allowed))
        names_scored = vllm_backend.names_scored_ if backend is vllm_backend else None
        decoded, greedy_seconds = timed(lambda b=backend: b.generate(prompts, greedy))
        results[backend_name] = (ranked, rank_seconds, names_scored, decoded, greedy_seconds)
    names_scored = results["vllm"][2]
    name_tokens = {}
    for found in allowed:
        name_tokens.update(zip(found, map(len, tokenizer(found, add_special_tokens=False)["input_ids"])))
    mean_name_tokens = sum(name_tokens.values()) / max(len(name_tokens), 1)
    rank_tokens = prompt_tokens + names_scored * mean_name_tokens
    for backend_name, (ranked, rank_seconds, _, decoded, greedy_seconds) in results.items():
        generated = sum(g.num_tokens for g in decoded)
        rows.append((backend_name, len(prompts) / rank_seconds, rank_tokens / rank_seconds,
                     len(prompts) / greedy_seconds, generated / greedy_seconds, rank_seconds, greedy_seconds))

    table = Table(title=f"vLLM vs transformers, {method_name}, {len(prompts):,} users ({args.dtype})")
    for column in ("backend", "users ranked/s (top 20)", "ranking tokens/s", "users greedy/s",
                   "generated tokens/s", "rank s", "greedy s"):
        table.add_column(column)
    for row in rows:
        table.add_row(row[0], *[f"{value:,.1f}" for value in row[1:]])
    ratio = [vllm_value / transformers_value for vllm_value, transformers_value in zip(rows[1][1:5], rows[0][1:5])]
    table.add_row("ratio vllm/transformers", *[f"{value:.2f}x" for value in ratio], "", "")
    console.print(table)

    def lists(generations):
        by_prompt = {}
        for g in generations:
            by_prompt.setdefault(g.prompt_index, []).append(g.text)
        return by_prompt

    same = lists(results["vllm"][0]) == lists(results["transformers"][0])
    agree = sum(a == b for a, b in zip(lists(results["vllm"][0]).values(), lists(results["transformers"][0]).values()))
    greedy_agree = sum(a.text == b.text for a, b in zip(results["vllm"][3], results["transformers"][3]))
    console.print(f"names scored by vLLM's bounded search: {names_scored:,} ({names_scored / len(prompts):.1f} a user);"
                  f" same top 20 in the same order: {agree:,} of {len(prompts):,} users{' (all)' if same else ''};"
                  f" same greedy text: {greedy_agree:,} of {len(prompts):,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
