"""``kpilot project create|list``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kpilot.cli.common import JsonOpt, console, emit_json, fail, open_workspace
from kpilot.errors import KpilotError

app = typer.Typer(
    help="Projects: one product each, with its own events, timezone and keys.", no_args_is_help=True
)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    timezone: Annotated[str, typer.Option("--timezone", "--tz", help="IANA timezone of the project")] = "UTC",
    week_start: Annotated[str, typer.Option(help="monday or sunday")] = "monday",
    as_json: JsonOpt = False,
) -> None:
    """Create a project."""
    try:
        with open_workspace(ctx, create=True) as ws:
            p = ws.create_project(name, timezone, week_start)
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json({"id": p.id, "name": p.name, "timezone": p.timezone, "week_start": p.week_start})
    else:
        console.print(f"Created project [bold]{p.name}[/] (id {p.id}, timezone {p.timezone})")


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List projects."""
    try:
        with open_workspace(ctx) as ws:
            projects = ws.projects()
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(
            [
                {"id": p.id, "name": p.name, "timezone": p.timezone, "week_start": p.week_start}
                for p in projects
            ]
        )
        return
    table = Table("id", "name", "timezone", "week start")
    for p in projects:
        table.add_row(str(p.id), p.name, p.timezone, p.week_start)
    console.print(table)
