"""``kpilot metrics list|show`` (filled in with the catalog)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The metric catalog.", no_args_is_help=True)
