"""``kpilot metrics list|show|eval``: browse the metric catalog and compute a metric on the workspace."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from kpilot.catalog import Metric, evaluate_metric, format_value, load_catalog
from kpilot.catalog.models import CATEGORIES
from kpilot.cli.common import JsonOpt, ProjectOpt, console, emit_json, fail, open_workspace, pick_project
from kpilot.errors import KpilotError, SpecError

app = typer.Typer(help="The metric catalog.", no_args_is_help=True)


@app.command("list")
def list_(
    category: Annotated[
        str | None, typer.Option("--category", "-c", help=f"Only this category: {', '.join(CATEGORIES)}")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the metrics of the catalog."""
    try:
        if category is not None and category not in CATEGORIES:
            raise SpecError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
        metrics = load_catalog().list(category)
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(
            [
                {
                    "name": m.name,
                    "title": m.title,
                    "category": m.category,
                    "unit": m.unit,
                    "direction": m.direction,
                    "kind": m.kind,
                }
                for m in metrics
            ]
        )
        return
    table = Table()
    table.add_column("name", no_wrap=True, style="cyan")
    for column in ("title", "category", "unit", "better", "query kind"):
        table.add_column(column)
    for m in metrics:
        better = "higher" if m.direction == "higher_is_better" else "lower"
        table.add_row(m.name, m.title, m.category, m.unit, better, m.kind)
    console.print(table)


@app.command("show")
def show(name: str, as_json: JsonOpt = False) -> None:
    """Show one metric's definition: formula, unit, parameters, query template and value selector."""
    try:
        metric = load_catalog().get(name)
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(metric.as_dict())
        return
    _print_definition(metric)


def _print_definition(m: Metric) -> None:
    console.print(f"[bold]{m.title}[/] ([cyan]{m.name}[/], {m.category})")
    console.print(m.description, highlight=False)
    console.print(f"[bold]Formula:[/] {m.formula}", highlight=False)
    better = "higher is better" if m.direction == "higher_is_better" else "lower is better"
    console.print(f"[bold]Unit:[/] {m.unit} ({better})")
    if m.parameters:
        table = Table("parameter", "type", "default", "description", title="Parameters")
        for pname, p in m.parameters.items():
            default = "(required)" if p.required else json.dumps(p.default)
            table.add_row(pname, p.type, default, p.description)
        console.print(table)
    if m.query is not None:
        console.print("[bold]Query template:[/]")
        console.print_json(json.dumps(m.query))
    if m.value is not None:
        console.print(f"[bold]Value:[/] {m.value.model_dump(exclude_defaults=True) or {'path': '$'}}")
    if m.derived is not None:
        console.print(f"[bold]Derived:[/] {m.derived.op} of {' / '.join(m.derived.of)}")
    if m.notes:
        console.print(f"[bold]Notes:[/] {m.notes}", highlight=False)


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` to a dict; raises :class:`SpecError` for a pair without ``=``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"expected NAME=VALUE, got {pair!r}", field="--param")
        out[key.strip()] = value
    return out


def default_range(date_from: datetime | None, date_to: datetime | None) -> tuple[date, date]:
    """Missing ends: ``to`` = yesterday (UTC, the last complete day), ``from`` = ``to`` - 29 days."""
    last = date_to.date() if date_to else datetime.now(UTC).date() - timedelta(days=1)
    first = date_from.date() if date_from else last - timedelta(days=29)
    return first, last


FromOpt = Annotated[
    datetime | None,
    typer.Option("--from", formats=["%Y-%m-%d"], help="First day (default: 29 days before --to)"),
]
ToOpt = Annotated[
    datetime | None,
    typer.Option("--to", formats=["%Y-%m-%d"], help="Last day, inclusive (default: yesterday, UTC)"),
]


@app.command("eval")
def eval_(
    ctx: typer.Context,
    name: str,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="NAME=VALUE (lists comma-separated); repeatable")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute a metric on the workspace over a date range (inclusive, in the project timezone)."""
    try:
        metric = load_catalog().get(name)
        params = parse_params(param or [])
        first, last = default_range(date_from, date_to)
        with open_workspace(ctx, read_only=True) as ws:
            proj = pick_project(ctx, ws, project)
            from kpilot.compute.engine import DuckDBEngine

            result = evaluate_metric(DuckDBEngine(ws.store), proj, metric, first, last, params)
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(result.as_dict())
        return
    console.print(
        f"[bold]{metric.title}[/] ({first} .. {last}): [bold green]{format_value(result.value, metric.unit)}[/]",
        highlight=False,
    )
    for part in result.components:
        console.print(f"  {part.metric.title}: {format_value(part.value, part.metric.unit)}", highlight=False)
    if result.params:
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in result.params.items())
        console.print(f"  parameters: {shown}", highlight=False, markup=False)
