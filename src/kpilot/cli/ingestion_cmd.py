"""``kpilot ingestion warnings``: events the server dropped or altered, newest first."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from kpilot.cli.common import JsonOpt, ProjectOpt, console, emit_json, fail, state
from kpilot.errors import KpilotError
from kpilot.keys import list_warnings, open_metadata, project_by_name
from kpilot.server.discovery import read_server_file
from kpilot.store.remote import flush_ingestion

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
        server = read_server_file(st.home)
        if server is not None:  # warnings of acknowledged requests are recorded as they are stored
            flush_ingestion(server)
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
    if not rows:
        console.print("No ingestion warnings.")
        return
    for w in rows:
        head = f"{w.created_at.isoformat(sep=' ', timespec='seconds')}  {w.project}  {w.key_prefix or '?'}…  {w.source}"
        console.print(f"{escape(head)}  [bold]{escape(w.kind)}[/]  {escape(w.event or '')}", highlight=False)
        console.print(f"    {w.reason}", highlight=False, markup=False)
