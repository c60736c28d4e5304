"""``kpilot export lake DIR``: write the event store as a Parquet lake (see :mod:`kpilot.engines.lake`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from kpilot.cli.common import (
    JsonOpt,
    ProjectOpt,
    ServerPaths,
    console,
    emit_json,
    fail,
    open_workspace,
    remote_store,
)
from kpilot.errors import KpilotError

app = typer.Typer(help="Export data for other engines.", no_args_is_help=True)


@app.command("lake")
def lake(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(help="Lake directory (created; an earlier export is replaced)")
    ],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write events (Parquet, partitioned by project and UTC date), identities and a manifest to DIRECTORY.

    Without --project every project is exported and the lake is replaced as a whole; with it only that
    project's files and manifest entry are replaced. While `kpilot serve` runs on the workspace, the server
    writes the lake (DIRECTORY must be writable by it).
    """
    from kpilot.engines.lake import LakeManifest, export_lake

    try:
        with open_workspace(ctx, read_only=True) as ws:
            remote = remote_store(ws)
            if remote is None:
                manifest = export_lake(ws, directory, project)
            else:
                paths = ServerPaths([directory])
                reply = remote.call(
                    "/api/lake", {"directory": paths.absolute[0], "project": project}, translate=paths.back
                )
                manifest = LakeManifest.from_json(orjson.dumps(reply))
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(orjson.loads(manifest.to_json()))
        return
    for p in manifest.projects:
        if project is None or p.name == project:
            console.print(f"{p.name}: {p.rows.get('events', 0)} events (timezone {p.timezone})")
    console.print(f"Lake written to [bold]{directory}[/]")
