"""``kpilot rollups build --lake DIR``: build a lake's rollups on Spark from its raw events.

The embedded store maintains its own rollups at every write and ``kpilot export lake`` copies them into the
lake; this command (re)builds them on the cluster instead, for a lake that has none or to rebuild them (see
docs/spark.md). The workspace is not opened: projects and timezones come from the lake's manifest.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import orjson
import typer

from kpilot.cli.common import JsonOpt, console, emit_json, fail
from kpilot.config import get_settings
from kpilot.errors import KpilotError, WorkspaceError

app = typer.Typer(help="Rollups: per-day person bitmaps answering unique-user queries.", no_args_is_help=True)


class BuildEngine(StrEnum):
    spark = "spark"


@app.command("build")
def build(
    engine: Annotated[
        BuildEngine, typer.Option("--engine", help="Where to build: spark, over a lake (the only one yet)")
    ] = BuildEngine.spark,
    lake: Annotated[
        str | None,
        typer.Option("--lake", help="Lake directory or URI [default: KPILOT_LAKE]"),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option("--project", "-p", help="Only this project [default: every project of the lake]"),
    ] = None,
    files: Annotated[
        int, typer.Option("--files", min=1, help="Parquet files per project (more for very large projects)")
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """(Re)build the rollups of every project of the lake (or only --project) from its raw events on Spark
    (master from KPILOT_SPARK_MASTER), replacing the ones the lake had. --json prints the new manifest."""
    from kpilot.engines.spark_engine import SparkEngine

    try:
        settings = get_settings()
        where = lake or settings.lake
        if not where:
            raise WorkspaceError("rollups build needs a lake: pass --lake DIR or set KPILOT_LAKE")
        spark = SparkEngine.open(where, settings.spark_master)
        spark.spark.sparkContext.setLogLevel("ERROR")
        names = [project] if project is not None else [p.name for p in spark.manifest.projects]
        built = [spark.build_rollups(name, files=files) for name in names]
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(orjson.loads(spark.manifest.to_json()))
        return
    for entry in built:
        console.print(
            f"{entry.name}: {entry.rows.get('rollup_persons', 0)} day and event sets "
            f"(timezone {entry.timezone})"
        )
    console.print(f"Rollups built on Spark in [bold]{where}[/]")
