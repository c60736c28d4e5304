"""``kpilot import subscriptions|invoices|customers|fx-rates|spend|surveys|tickets|feedback FILE...`` and
``kpilot feedback merge|status`` (feature request pipeline). Schemas: docs/data-sources.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import typer

from kpilot.cli.common import (
    JsonOpt,
    ProjectOpt,
    ServerPaths,
    console,
    emit_json,
    err_console,
    fail,
    open_workspace,
    pick_project,
    remote_store,
)
from kpilot.errors import ImportRejected, KpilotError

if TYPE_CHECKING:
    from kpilot.collect.importer import ImportReport
    from kpilot.store.remote import RemoteStore
    from kpilot.workspace import ProjectInfo

__all__ = ["feedback_app", "register"]

feedback_app = typer.Typer(
    help="Feature requests: merge duplicates, move along the status pipeline.", no_args_is_help=True
)

FilesArg = Annotated[
    list[Path], typer.Argument(help="CSV, JSONL or Parquet files (see docs/data-sources.md)")
]
FormatOpt = Annotated[
    str | None, typer.Option("--format", help="jsonl, csv or parquet (default: from extension)")
]


def _run_import(
    ctx: typer.Context, source: str, files: list[Path], project: str | None, fmt: str | None, as_json: bool
) -> None:
    from kpilot.revenue.importing import import_source

    try:
        with open_workspace(ctx) as ws:
            proj = pick_project(ctx, ws, project)
            remote = remote_store(ws)
            if remote is None:
                report = import_source(ws, proj, source, files, fmt=fmt)
            else:
                report = _import_through_server(remote, proj, source, files, fmt)
    except (KpilotError, FileNotFoundError, ValueError) as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(report.as_dict())
    else:
        for r in report.rejections[:50]:
            err_console.print(f"{r.file}:{r.line}: {r.reason}", highlight=False, markup=False)
        if report.rejected > 50:
            err_console.print(f"... and {report.rejected - 50} more rejected rows (see `kpilot audit`)")
        console.print(
            f"Imported {report.imported:,} {source} rows ({report.deduplicated:,} unchanged, "
            f"{report.rejected:,} rejected) from {len(report.files)} file(s)."
        )
    if report.rejected:
        raise typer.Exit(ImportRejected.exit_code)


def _import_through_server(
    remote: RemoteStore, proj: ProjectInfo, source: str, files: list[Path], fmt: str | None
) -> ImportReport:
    """The same import, run by the server that holds the store (it reads the files by absolute path)."""
    from kpilot.collect.importer import ImportReport, Rejection

    paths = ServerPaths(files)
    data = remote.call(
        f"/api/projects/{quote(proj.name, safe='')}/imports/{quote(source, safe='')}",
        {"files": paths.absolute, "names": paths.given, "format": fmt},
        translate=paths.back,
    )
    return ImportReport(
        files=[paths.back(f) for f in data["files"]],
        rows_read=int(data["rows_read"]),
        imported=int(data["imported"]),
        deduplicated=int(data["deduplicated"]),
        rejected=int(data["rejected"]),
        rejections=[
            Rejection(paths.back(r["file"]), int(r["line"]), paths.back(r["reason"]))
            for r in data["rejections"]
        ],
    )


def _command(source: str, help_text: str) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        files: FilesArg,
        project: ProjectOpt = None,
        fmt: FormatOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        _run_import(ctx, source, files, project, fmt, as_json)

    command.__doc__ = (
        f"Import {help_text}. Bad rows are reported (file:line: reason), good rows imported; "
        "re-importing updates rows on their natural key. Exit code 5 when a row was rejected."
    )
    return command


_COMMANDS = {
    "subscriptions": "subscription states (kpilot columns or a Stripe subscriptions export)",
    "invoices": "invoices and one-time charges (kpilot columns or a Stripe invoices export)",
    "customers": "customers: customer id <-> distinct id link, channel, country",
    "fx-rates": "exchange rates to the reporting currency",
    "spend": "sales and marketing spend per channel and day",
    "surveys": "NPS, CSAT and CES survey responses",
    "tickets": "support tickets",
    "feedback": "feedback items and feature requests (sentiment is scored on import)",
}


def register(import_app: typer.Typer, root: typer.Typer) -> None:
    """Add the source importers to ``kpilot import`` and the ``feedback`` group to ``kpilot``."""
    for name, text in _COMMANDS.items():
        import_app.command(name)(_command(name, text))
    root.add_typer(feedback_app, name="feedback")


@feedback_app.command("merge")
def merge(
    ctx: typer.Context,
    item: Annotated[str, typer.Argument(help="the duplicate request")],
    into: Annotated[str, typer.Argument(help="the request it duplicates")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge a duplicate feature request into another: its votes and requesters move with it."""
    from kpilot.voice.feature_requests import merge_request

    try:
        with open_workspace(ctx) as ws:
            proj = pick_project(ctx, ws, project)
            remote = remote_store(ws)
            if remote is None:
                root = merge_request(ws, proj, item, into)
            else:
                path = f"/api/projects/{quote(proj.name, safe='')}/feedback/merge"
                root = str(remote.call(path, {"item": item, "into": into})["root"])
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json({"item_id": item, "into": into, "root": root})
    else:
        console.print(f"Merged {item} into {into} (counted under {root}).")


@feedback_app.command("status")
def status(
    ctx: typer.Context,
    item: Annotated[str, typer.Argument(help="feature request id")],
    value: Annotated[str, typer.Argument(help="new, planned, in_progress, shipped or declined")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a feature request along the pipeline."""
    from kpilot.voice.feature_requests import set_status

    try:
        with open_workspace(ctx) as ws:
            proj = pick_project(ctx, ws, project)
            remote = remote_store(ws)
            if remote is None:
                new = set_status(ws, proj, item, value)
            else:
                path = f"/api/projects/{quote(proj.name, safe='')}/feedback/status"
                new = str(remote.call(path, {"item": item, "status": value})["status"])
    except (KpilotError, ValueError) as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json({"item_id": item, "status": new})
    else:
        console.print(f"{item} is now {new}.")
