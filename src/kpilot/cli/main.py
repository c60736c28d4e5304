"""The ``kpilot`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpilot import __version__
from kpilot.cli import common
from kpilot.cli.common import JsonOpt, State, console, emit_json, open_workspace
from kpilot.config import get_settings
from kpilot.errors import KpilotError

app = typer.Typer(
    name="kpilot",
    help="Self-hosted product metrics and KPIs. Docs: docs/ in the repository.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"kpilot {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option("--home", envvar="KPILOT_HOME", help="Workspace directory [default: ./kpilot-data]"),
    ] = None,
    metadata_url: Annotated[
        str | None,
        typer.Option("--metadata-url", envvar="KPILOT_METADATA_URL", help="SQLAlchemy URL for metadata"),
    ] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    settings = get_settings(home=home, metadata_url=metadata_url)
    ctx.obj = State(settings.home, settings.metadata_url, settings.project)


@app.command()
def init(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Create (or upgrade) a workspace: DuckDB event store plus metadata database."""
    try:
        with open_workspace(ctx, create=True) as ws:
            info = {"home": str(ws.home.resolve()), "metadata_url": _redact(ws.metadata_url)}
    except KpilotError as exc:
        raise common.fail(exc, as_json) from exc
    if as_json:
        emit_json(info)
    else:
        console.print(f"Workspace ready at [bold]{info['home']}[/] (metadata: {info['metadata_url']})")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _register() -> None:
    from kpilot.cli import audit_cmd, demo_cmd, import_cmd, metrics_cmd, project_cmd, query_cmd

    app.add_typer(project_cmd.app, name="project")
    app.add_typer(import_cmd.app, name="import")
    app.add_typer(metrics_cmd.app, name="metrics")
    app.command("query")(query_cmd.query)
    app.command("audit")(audit_cmd.audit)
    app.command("demo")(demo_cmd.demo)
    from kpilot.cli import ingestion_cmd, keys_cmd, serve_cmd

    app.command("serve")(serve_cmd.serve)
    app.add_typer(keys_cmd.app, name="keys")
    app.add_typer(ingestion_cmd.app, name="ingestion")
    from kpilot.cli import export_cmd

    app.add_typer(export_cmd.app, name="export")
    from kpilot.cli import rollups_cmd

    app.add_typer(rollups_cmd.app, name="rollups")
    from kpilot.cli import sources_cmd

    sources_cmd.register(import_cmd.app, app)


_register()


def main() -> None:
    app()
