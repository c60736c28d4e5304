"""``kpilot query SPEC.json`` (or ``-`` for stdin): print the result as JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kpilot.cli.common import ProjectOpt, emit_json, fail, open_workspace, pick_project
from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.errors import KpilotError, SpecError


def query(
    ctx: typer.Context,
    spec_file: Annotated[str, typer.Argument(help="Path of a JSON query spec, or - for stdin")],
    project: ProjectOpt = None,
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
        with open_workspace(ctx, read_only=True) as ws:
            proj = pick_project(ctx, ws, project)
            result = run_query(DuckDBEngine(ws.store), proj, spec)
    except KpilotError as exc:
        raise fail(exc, as_json=True) from exc
    emit_json(result)
