"""Placeholder for `kpilot audit` (next slice)."""

from __future__ import annotations

import typer


def audit(ctx: typer.Context) -> None:
    """Not built yet."""
    raise typer.Exit(1)
