"""Shared CLI plumbing: global options, opening the workspace, JSON output and error exits."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kpilot.config import get_settings
from kpilot.errors import KpilotError
from kpilot.workspace import ProjectInfo, Workspace

__all__ = ["JsonOpt", "ProjectOpt", "State", "console", "emit_json", "err_console", "fail", "open_workspace"]

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project name (default: KPILOT_PROJECT or the only one)."),
]


@dataclass
class State:
    home: Path
    metadata_url: str | None
    project: str | None


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if isinstance(obj, State):
        return obj
    settings = get_settings()
    return State(settings.home, settings.metadata_url, settings.project)


@contextmanager
def open_workspace(
    ctx: typer.Context, *, create: bool = False, read_only: bool = False
) -> Iterator[Workspace]:
    st = state(ctx)
    ws = (
        Workspace.init(st.home, st.metadata_url)
        if create
        else Workspace.open(st.home, st.metadata_url, read_only=read_only)
    )
    try:
        yield ws
    finally:
        ws.close()


def pick_project(ctx: typer.Context, ws: Workspace, name: str | None) -> ProjectInfo:
    return ws.project(name or state(ctx).project)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def fail(exc: KpilotError | Exception, as_json: bool = False) -> typer.Exit:
    code = exc.exit_code if isinstance(exc, KpilotError) else 1
    kind = exc.code if isinstance(exc, KpilotError) else type(exc).__name__
    if as_json:
        sys.stdout.write(json.dumps({"error": {"code": kind, "message": str(exc)}}) + "\n")
    else:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
    return typer.Exit(code)
