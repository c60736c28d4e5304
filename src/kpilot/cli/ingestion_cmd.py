"""``kpilot ingestion warnings``: events the server dropped or altered, newest first."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kpilot.cli.common import JsonOpt, ProjectOpt, console, emit_json, fail, state
from kpilot.errors import KpilotError
from kpilot.keys import list_warnings, open_metadata, project_by_name

app = typer.Typer(help="What the ingestion server did with the events it received.", no_args_is_help=True)


@app.command("warnings")
def warnings(
    ctx: typer.Context,
    project: ProjectOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many (newest first)")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List ingestion warnings: what was dropped or changed, why, when, and by which key."""
    st = state(ctx)
    try:
        meta = open_metadata(st.home, st.metadata_url)
        try:
            chosen = project or st.project
            rows = list_warnings(meta, project_by_name(meta, chosen) if chosen else None, limit)
        finally:
            meta.close()
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json([w.as_dict() for w in rows])
        return
    table = Table("when (UTC)", "project", "key", "source", "kind", "event", "reason")
    for w in rows:
        table.add_row(
            w.created_at.isoformat(timespec="seconds"),
            w.project,
            (w.key_prefix or "") + "…",
            w.source,
            w.kind,
            w.event or "",
            w.reason,
        )
    console.print(table)
