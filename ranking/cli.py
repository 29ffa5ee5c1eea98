"""`adsim rank`: DCN-v2 ctcvr/vtcvr rankers and the LLM-feature lift."""

from __future__ import annotations

import typer

app = typer.Typer(help="DCN-v2 ctcvr/vtcvr rankers and the LLM-feature lift", no_args_is_help=True)
