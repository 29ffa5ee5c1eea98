"""`adsim retrieval`: two-tower training, faiss indexes and candidate generators."""

from __future__ import annotations

import typer

app = typer.Typer(help="two-tower training, faiss indexes and candidate generators", no_args_is_help=True)
