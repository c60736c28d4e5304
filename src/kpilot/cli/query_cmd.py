"""``kpilot query SPEC.json`` (or ``-`` for stdin): print the result as JSON.

While ``kpilot serve`` runs on the same workspace (``server.json`` names a live pid), the server holds the
DuckDB file, so the spec is sent to the server's local API and its reply printed; the output is the same.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from kpilot.cli.common import ProjectOpt, emit_json, fail, open_workspace, pick_project, state
from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import QuerySpec, parse_spec
from kpilot.config import get_settings
from kpilot.errors import KpilotError, NotFoundError, SpecError, WorkspaceError
from kpilot.server.discovery import ServerInfo, call_server, read_server_file


class EngineName(StrEnum):
    duckdb = "duckdb"
    spark = "spark"


def query(
    ctx: typer.Context,
    spec_file: Annotated[str, typer.Argument(help="Path of a JSON query spec, or - for stdin")],
    project: ProjectOpt = None,
    engine: Annotated[
        EngineName,
        typer.Option("--engine", help="duckdb: the workspace; spark: a lake from `kpilot export lake`"),
    ] = EngineName.duckdb,
    lake: Annotated[
        str | None,
        typer.Option("--lake", help="Lake directory or URI for --engine spark [default: KPILOT_LAKE]"),
    ] = None,
) -> None:
    """Run a JSON query spec and print the result as JSON (errors as {"error": {...}}, non-zero exit)."""
    try:
        if spec_file == "-":
            text = sys.stdin.read()
        else:
            path = Path(spec_file)
            if not path.is_file():
                raise SpecError(f"no such file: {spec_file}")
            text = path.read_text()
        spec = parse_spec(text)
        server = read_server_file(state(ctx).home)
        if engine is EngineName.spark:
            result = _query_spark(ctx, spec, project, lake)
        elif server is not None:
            result = _query_server(ctx, server, project, text)
        else:
            with open_workspace(ctx, read_only=True) as ws:
                proj = pick_project(ctx, ws, project)
                result = run_query(DuckDBEngine(ws.store), proj, spec)
    except KpilotError as exc:
        raise fail(exc, as_json=True) from exc
    emit_json(result)


def _query_spark(ctx: typer.Context, spec: QuerySpec, project: str | None, lake: str | None) -> Any:
    """Run on Spark (master from KPILOT_SPARK_MASTER) over a lake; the workspace is not opened."""
    from kpilot.engines.spark_engine import SparkEngine

    settings = get_settings()
    where = lake or settings.lake
    if not where:
        raise WorkspaceError("--engine spark needs a lake: pass --lake DIR or set KPILOT_LAKE")
    spark = SparkEngine.open(where, settings.spark_master)
    spark.spark.sparkContext.setLogLevel("ERROR")
    proj = spark.manifest.project(project or state(ctx).project).info()
    return run_query(spark, proj, spec)


def _query_server(ctx: typer.Context, server: ServerInfo, project: str | None, text: str) -> Any:
    import orjson

    from kpilot.keys import open_metadata, project_by_name

    st = state(ctx)
    meta = open_metadata(st.home, st.metadata_url)
    try:
        name = project_by_name(meta, project or st.project).name
    finally:
        meta.close()
    try:
        status, reply = call_server(server, f"/api/projects/{quote(name, safe='')}/query", orjson.loads(text))
    except OSError as exc:
        raise WorkspaceError(
            f"the kpilot server at {server.url} (pid {server.pid}) did not answer: {exc}"
        ) from exc
    if status == 200:
        return reply
    error = reply.get("error", {}) if isinstance(reply, dict) else {}
    message = str(error.get("message", f"HTTP {status} from the server"))
    code = str(error.get("code", "server_error"))
    if status == 404:
        raise NotFoundError(message)
    if code == SpecError.code:
        raise SpecError(message)
    raise WorkspaceError(message)
