"""`adsim llm`: the LLM advertiser predictor's stages over a run folder (paper 3.2-3.4, 4.2-4.3).

`pretrain` (tokenizer, base model, CPT on the web corpus), `behaviour` (CPT on conversion sequences),
`sft` (1-advertiser or 20-advertiser target), `grpo`, `eval` (the Table 2/3/4 analogues with the non-LLM
baselines), `choose` (the served method, on validation users), `predict` (a method's advertiser lists for
eval, serving or held-out users), `fuse` (the LLM beside LightGBM) and `compare` (two runs' recipes, paired).
Each stage writes `runs/NAME/llm_<stage>/` and skips when its outputs exist with an unchanged config (and
unchanged upstream stages).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from llm_predictor.choice import CHOSEN, stage_choose
from llm_predictor.fusion import stage_fusion
from llm_predictor.config import METHODS, PRESETS, SFT_TEMPLATES, LLMConfig, resolve_config
from llm_predictor.stages import (PREDICT_USERS, check_run_folder, stage_behaviour, stage_eval, stage_grpo,
                                  stage_predict, stage_pretrain, stage_sft, stage_sid)
from synthetic_data.config_io import ConfigError

app = typer.Typer(help="the LLM advertiser predictor (pretrain, behaviour, sft, sid, grpo, choose, predict, eval, "
                       "fuse, compare)",
                  no_args_is_help=True)
console = Console()


def _print_summary(stage: str, summary: dict) -> None:
    shown = {k: v for k, v in summary.items() if k not in ("losses", "rewards")}
    console.print(f"[bold]{stage}[/bold] " + json.dumps(shown, default=str))


# ---------------------------------------------------------------------------------------------
# Commands

Run = Annotated[Path, typer.Option(help="run folder holding world/ (e.g. runs/demo)")]
Preset = Annotated[str, typer.Option(help=f"size preset: {', '.join(PRESETS)}")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML config on top of the preset")]
Overrides = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: section.field=value")]
Force = Annotated[bool, typer.Option(help="redo the stage even if complete")]
Quiet = Annotated[bool, typer.Option(help="no progress bars")]


def _config_or_exit(preset: str, config_path: Optional[Path], overrides: Optional[list[str]]) -> LLMConfig:
    try:
        return resolve_config(preset, config_path, overrides)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _checked_config(run: Path, preset: str, config_path: Optional[Path], overrides: Optional[list[str]]) -> LLMConfig:
    """The resolved config of a stage command over `run`: a bad config, then a folder that is not a run folder
    (no world/), end in a one-line error naming the fix (exit status 2)."""
    resolved = _config_or_exit(preset, config_path, overrides)
    try:
        check_run_folder(run)
    except FileNotFoundError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error
    return resolved


@app.command()
def pretrain(run: Run = Path("runs/demo"), preset: Preset = "small", config: ConfigFile = None,
             set_: Overrides = None, force: Force = False, quiet: Quiet = False) -> None:
    """Train the tokenizer, build the base model and continue pretraining it on the web corpus."""
    _print_summary("llm_pretrain", stage_pretrain(run, _checked_config(run, preset, config, set_), force, not quiet))


@app.command()
def behaviour(run: Run = Path("runs/demo"), preset: Preset = "small", config: ConfigFile = None,
              set_: Overrides = None, force: Force = False, quiet: Quiet = False) -> None:
    """Continue pretraining on train users' conversion sequences (validation loss on held-out train users)."""
    _print_summary("llm_behaviour", stage_behaviour(run, _checked_config(run, preset, config, set_), force, not quiet))


@app.command()
def sft(run: Run = Path("runs/demo"),
        target: Annotated[str, typer.Option(
            help="single (1-advertiser prompt), list (20-advertiser XML) or sid (1-advertiser SID prompt)")] = "single",
        preset: Preset = "small", config: ConfigFile = None, set_: Overrides = None, force: Force = False,
        quiet: Quiet = False) -> None:
    """Supervised fine-tuning of the pretrained model on the train users' next advertiser."""
    if target not in SFT_TEMPLATES:
        console.print("[red]error:[/red] --target must be single, list or sid")
        raise typer.Exit(2)
    _print_summary(f"llm_sft_{target}", stage_sft(run, _checked_config(run, preset, config, set_), target, force,
                                                  not quiet))


@app.command()
def sid(run: Run = Path("runs/demo"), preset: Preset = "small", config: ConfigFile = None,
        set_: Overrides = None, force: Force = False, quiet: Quiet = False) -> None:
    """Semantic IDs: item codes, SID tokens, phase-1 and phase-2 training of the pretrained model."""
    _print_summary("llm_sid", stage_sid(run, _checked_config(run, preset, config, set_), force, not quiet))


@app.command()
def grpo(run: Run = Path("runs/demo"), preset: Preset = "small", config: ConfigFile = None,
         set_: Overrides = None, force: Force = False, quiet: Quiet = False) -> None:
    """GRPO on the 20-advertiser prompt from an SFT model (`grpo_init`), with the paper's reward."""
    _print_summary("llm_grpo", stage_grpo(run, _checked_config(run, preset, config, set_), force, not quiet))


@app.command()
def choose(run: Run = Path("runs/demo"), preset: Preset = "small", config: ConfigFile = None,
           set_: Overrides = None, force: Force = False, quiet: Quiet = False) -> None:
    """Score `choice.methods` on validation users (held-out train users) and record the best as `chosen`."""
    summary = stage_choose(run, _checked_config(run, preset, config, set_), force, not quiet)
    _print_summary("llm_choice", summary)
    console.print((run / "llm_choice" / "choice.md").read_text(), markup=False)


@app.command()
def fuse(run: Run = Path("runs/demo"), preset: Preset = "small", config: ConfigFile = None,
         set_: Overrides = None, force: Force = False, quiet: Quiet = False) -> None:
    """Is the LLM complementary to LightGBM? Its lists fused with LightGBM's, against LightGBM alone.

    `fusion.method`'s lists and the prompt-input LightGBM's, merged by reciprocal-rank fusion with a weight chosen on
    validation users, scored on the eval users' V1 labels at every anchor beside a negative and a positive control.
    """
    summary = stage_fusion(run, _checked_config(run, preset, config, set_), force, not quiet)
    _print_summary("llm_fusion", summary)
    console.print((run / "llm_fusion" / "fusion.md").read_text(), markup=False)


@app.command()
def predict(run: Run = Path("runs/demo"),
            method: Annotated[str, typer.Option(help=f"one of: {', '.join(METHODS)}, or {CHOSEN} (the method "
                                                     "`adsim llm choose` picked on validation users)")] = "grpo_ranked",
            users: Annotated[str, typer.Option(help="; ".join(f"{k}: {v}" for k, v in PREDICT_USERS.items()))] = "eval",
            preset: Preset = "small", config: ConfigFile = None, set_: Overrides = None, force: Force = False,
            quiet: Quiet = False,
            engine: Annotated[str, typer.Option(help="local (this process) or ray (a Ray Dataset: prompt, model, "
                                                     "parse and conversion stages, checkpointed per request)")]
            = "local",
            address: Annotated[Optional[str], typer.Option(help="--engine ray: an existing cluster's address "
                                                               "(default: a local one over this machine's cores)")]
            = None,
            workers: Annotated[int, typer.Option(help="--engine ray: model replicas (Ray actors)")] = 1,
            threads: Annotated[int, typer.Option(help="--engine ray: torch threads (and CPUs) per model replica")]
            = 1,
            incremental: Annotated[bool, typer.Option(help="--users serving: re-infer only users with an event "
                                                           "since the stage's last run (or no list); keep the rest")]
            = False) -> None:
    """Advertiser predictions (PREDICTIONS table) of one method for eval, serving or held-out users."""
    from llm_predictor.ray_predict import RayEngine
    from synthetic_data.ray_cluster import require_engine

    if (method not in METHODS and method != CHOSEN) or users not in PREDICT_USERS:
        console.print(f"[red]error:[/red] --method must be one of {list(METHODS)}; "
                      f"--users one of {list(PREDICT_USERS)}")
        raise typer.Exit(2)
    resolved = _checked_config(run, preset, config, set_)
    try:
        require_engine(engine)
        ray_engine = None if engine == "local" else RayEngine(address, workers, threads,
                                                              resolved.predict.virtual_epoch_size)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    try:
        summary = stage_predict(run, resolved, method, users, force, not quiet, ray_engine, incremental)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    _print_summary(f"llm_predict_{method}_{users}", summary)


@app.command("eval")
def eval_(run: Run = Path("runs/demo"), preset: Preset = "small", config: ConfigFile = None,
          set_: Overrides = None, force: Force = False, quiet: Quiet = False) -> None:
    """Tables 2/3 (methods x V0/V1, with baselines) and Table 4 (feature ablation) analogues."""
    summary = stage_eval(run, _checked_config(run, preset, config, set_), force, not quiet)
    _print_summary("llm_eval", summary)
    for name in ("results.md", "ablation.md"):
        path = run / "llm_eval" / name
        if path.exists():
            console.print(path.read_text(), markup=False)


@app.command()
def compare(run: Run = Path("runs/demo"),
            reference: Annotated[Path, typer.Option(help="the other run of the same world (the difference is run - "
                                                         "reference)")] = Path("runs/demo"),
            stage: Annotated[str, typer.Option(help="llm_eval, llm_choice or a llm_predict_* folder: whose "
                                                    "predictions to compare")] = "llm_eval",
            method: Annotated[Optional[list[str]], typer.Option(help="a method both runs' stage predicted "
                                                                      "(repeatable)")] = None,
            out: Annotated[Optional[Path], typer.Option(help="also write OUT.md and OUT.parquet")] = None,
            preset: Preset = "small", config: ConfigFile = None, set_: Overrides = None) -> None:
    """Two runs of one world, two recipes: each method's Recall@K difference on the labels both predicted, paired."""
    from llm_predictor.compare_runs import compare_runs
    from llm_predictor.evaluate import to_markdown

    resolved = _config_or_exit(preset, config, set_)
    try:
        if not method:
            raise ValueError("name at least one --method that both runs' stage predicted, e.g. --method "
                             "behaviour_ranked_open")
        table = compare_runs(run, reference, stage, method, resolved)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from error
    text = to_markdown(table, f"{run} - {reference}: V1 Recall@K difference on the same labels ({stage})")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.write_parquet(out.with_suffix(".parquet"))
        out.with_suffix(".md").write_text(text)
    console.print(text, markup=False, soft_wrap=True)  # a Markdown table cut at the terminal's width is unreadable
