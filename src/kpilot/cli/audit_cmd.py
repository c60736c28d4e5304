"""``kpilot audit``: data-quality report per event and UTC day (docs/audit.md). Always exits 0 on success."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from kpilot.cli.common import JsonOpt, ProjectOpt, console, emit_json, fail, open_workspace, pick_project
from kpilot.errors import KpilotError
from kpilot.quality import AuditOptions, AuditReport, run_audit

_SHOWN = 30
_LEGEND = (
    "rej: rows rejected at import; dups: duplicates dropped; anon: share of events from persons never "
    "identified; fut/past: timestamps out of range; drift: property schema changes"
)


def audit(
    ctx: typer.Context,
    project: ProjectOpt = None,
    date_from: Annotated[
        datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="First UTC day (default: first day with data)"),
    ] = None,
    date_to: Annotated[
        datetime | None,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Last UTC day, inclusive (default: last with data)"),
    ] = None,
    future_hours: Annotated[
        float, typer.Option(help="Flag timestamps more than this many hours after receipt", min=0)
    ] = 1.0,
    past_days: Annotated[
        float, typer.Option(help="Flag timestamps more than this many days before receipt", min=0)
    ] = 365.0,
    by_day: Annotated[bool, typer.Option("--by-day", help="Print every (day, event) row")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Audit the event data: volumes, rejected and duplicate rows, anonymous share, bad timestamps, drift."""
    try:
        opts = AuditOptions(
            date_from.date() if date_from else None,
            date_to.date() if date_to else None,
            future_hours,
            past_days,
        )
        with open_workspace(ctx, read_only=True) as ws:
            report = run_audit(ws, pick_project(ctx, ws, project), opts)
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(report.as_dict())
        return
    _print(report, by_day)


def _n(value: int) -> str:
    return f"{value:,}" if value else "[dim]0[/]"


def _print(report: AuditReport, by_day: bool) -> None:
    table = Table(title=f"Events of project {report.project} (UTC days)", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("event", overflow="fold", min_width=12)
    for col in ("days", "events", "rej", "dups", "anon", "fut", "past", "drift"):
        table.add_column(col, justify="right", no_wrap=True)
    for event, n_days, s in report.by_event():
        share = f"{s.anonymous_share:.1%}" if s.anonymous_share is not None else "-"
        table.add_row(
            event or "(unknown)",
            str(n_days),
            f"{s.volume:,}",
            _n(s.rejected),
            _n(s.deduplicated),
            share,
            _n(s.future),
            _n(s.past),
            _n(s.drift),
        )
    console.print(table)
    console.print(_LEGEND, style="dim", highlight=False)
    rows = report.rows if by_day else [r for r in report.rows if r.has_issue]
    if rows:
        days = Table(title="Every day" if by_day else "Days with issues", box=box.SIMPLE_HEAD, pad_edge=False)
        days.add_column("day", no_wrap=True)
        days.add_column("event", overflow="fold", min_width=8)
        for col in ("events", "rej", "dups", "anon", "fut", "past", "drift"):
            days.add_column(col, justify="right", no_wrap=True)
        limit = len(rows) if by_day else _SHOWN
        for r in rows[:limit]:
            days.add_row(
                r.day.isoformat() if r.day else "(unknown)",
                r.event or "(unknown)",
                f"{r.volume:,}",
                _n(r.rejected),
                _n(r.deduplicated),
                f"{r.anonymous_share:.1%}" if r.anonymous_share is not None else "-",
                _n(r.future),
                _n(r.past),
                _n(r.drift),
            )
        console.print(days)
        if len(rows) > limit:
            console.print(f"... and {len(rows) - limit} more (--by-day or --json for all)")
    if report.drift:
        drift = Table(title="Property schema drift (against the previous day with the event)")
        for col in ("day", "event", "change", "since"):
            drift.add_column(col, no_wrap=col != "change")
        for d in report.drift[:_SHOWN]:
            drift.add_row(d.day.isoformat(), d.event, d.describe(), d.previous_day.isoformat())
        console.print(drift)
        if len(report.drift) > _SHOWN:
            console.print(f"... and {len(report.drift) - _SHOWN} more changes (--json for all)")
    if report.rejection_reasons:
        reasons = Table(title="Rejected rows")
        reasons.add_column("rejected because", overflow="fold")
        reasons.add_column("rows", justify="right", no_wrap=True)
        reasons.add_column("for example", overflow="fold")
        for reason in report.rejection_reasons:
            reasons.add_row(str(reason["reason"]), f"{reason['count']:,}", str(reason["example"] or "-"))
        console.print(reasons)
    if report.ingestion_warnings:
        warn = Table("kind", "event", "count", title="Ingestion server warnings")
        for w in report.ingestion_warnings[:_SHOWN]:
            warn.add_row(str(w["kind"]), str(w["event"] or "-"), f"{w['count']:,}")
        console.print(warn)
    for notice in report.notices():
        console.print(f"[dim]note:[/] {notice}", highlight=False)
    style = "bold green" if report.status == "clean" else "bold yellow"
    console.print(f"[{style}]{report.summary()}[/]", highlight=False)
