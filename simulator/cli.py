"""The `adsim` command: one sub-command per stage, plus `demo`."""

from __future__ import annotations

import typer

from llm_predictor.cli import app as llm_app
from ranking.cli import app as rank_app
from retrieval.cli import app as retrieval_app
from synthetic_data.cli import world

app = typer.Typer(help="adsim: offline A/B testbed for an LLM advertiser predictor in an ads stack.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.command("world")(world)
app.add_typer(llm_app, name="llm")
app.add_typer(retrieval_app, name="retrieval")
app.add_typer(rank_app, name="rank")

if __name__ == "__main__":
    app()
