"""``kpilot import events FILE...``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from kpilot.cli.common import (
    JsonOpt,
    ProjectOpt,
    console,
    emit_json,
    err_console,
    fail,
    open_workspace,
    pick_project,
)
from kpilot.collect.importer import import_events
from kpilot.errors import ImportRejected, KpilotError

app = typer.Typer(help="Bulk imports.", no_args_is_help=True)


@app.command("events")
def events(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(help="JSONL, CSV or Parquet files (Segment or PostHog shape)")
    ],
    project: ProjectOpt = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl, csv or parquet (default: from extension)")
    ] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per atomic batch")] = 200_000,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
) -> None:
    """Import events. Bad rows are reported (file:line: reason); the good ones are imported.

    Exit code 5 when any row was rejected. Re-importing a file adds nothing (dedupe on messageId/uuid).
    """
    try:
        with open_workspace(ctx) as ws:
            proj = pick_project(ctx, ws, project)
            show = not quiet and not as_json and err_console.is_terminal
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err_console,
                disable=not show,
            ) as bar:
                tasks: dict[Path, TaskID] = {}

                def progress(path: Path, done: int, total: int) -> None:
                    if path not in tasks:
                        tasks[path] = bar.add_task(path.name, total=total)
                    bar.update(tasks[path], completed=done)

                report = import_events(ws, proj, files, fmt=fmt, batch_rows=batch_rows, progress=progress)
    except (KpilotError, FileNotFoundError, ValueError) as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(report.as_dict())
    else:
        for r in report.rejections[:50]:
            print(f"{r.file}:{r.line}: {r.reason}", file=sys.stderr)  # one grep-able line each, never wrapped
        if report.rejected > 50:
            err_console.print(f"... and {report.rejected - 50} more rejected rows (see `kpilot audit`)")
        console.print(
            f"Imported {report.imported:,} events ({report.deduplicated:,} duplicates skipped, "
            f"{report.rejected:,} rows rejected) from {len(report.files)} file(s)."
        )
    if report.rejected:
        raise typer.Exit(ImportRejected.exit_code)
