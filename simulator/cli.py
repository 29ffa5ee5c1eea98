"""The `adsim` command: one sub-command per stage, plus `demo`."""

from __future__ import annotations

import typer

from synthetic_data.cli import world

app = typer.Typer(help="adsim: offline A/B testbed for an LLM advertiser predictor in an ads stack.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.command("world")(world)

if __name__ == "__main__":
    app()
