"""`adsim llm`: the LLM advertiser predictor (pretrain, sft, grpo, predict, eval)."""

from __future__ import annotations

import typer

app = typer.Typer(help="the LLM advertiser predictor (pretrain, sft, grpo, predict, eval)", no_args_is_help=True)
