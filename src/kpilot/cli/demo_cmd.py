"""Placeholder for `kpilot demo` (next slice)."""

from __future__ import annotations

import typer


def demo(ctx: typer.Context) -> None:
    """Not built yet."""
    raise typer.Exit(1)
