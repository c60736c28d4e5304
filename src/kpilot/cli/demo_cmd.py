"""``kpilot demo``: generate a realistic product into a fresh workspace and print its key metrics."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from kpilot.cli.common import JsonOpt, console, emit_json, err_console, fail, state
from kpilot.demo.runner import DEFAULT_DAYS, DEFAULT_PERSONS, DEFAULT_SEED, DemoConfig, DemoReport, run_demo
from kpilot.errors import KpilotError, WorkspaceError
from kpilot.server.discovery import read_server_file


def demo(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Workspace directory [default: --home before the command, KPILOT_HOME, ./kpilot-data]",
        ),
    ] = None,
    project: Annotated[str, typer.Option("--project", "-p", help="Name of the demo project")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data")] = DEFAULT_SEED,
    days: Annotated[int, typer.Option(help="Days of history", min=1)] = DEFAULT_DAYS,
    persons: Annotated[
        int, typer.Option(help="Persons (visitors, some of whom sign up)", min=1)
    ] = DEFAULT_PERSONS,
    end: Annotated[
        datetime | None,
        typer.Option("--end", formats=["%Y-%m-%d"], help="Last demo day (UTC) [default: yesterday]"),
    ] = None,
    timezone: Annotated[str, typer.Option("--timezone", "--tz", help="Timezone of the demo project")] = "UTC",
    force: Annotated[
        bool, typer.Option("--force", help="Replace the data of an existing project of the same name")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a demo product: visitors, signups, an activation funnel, feature usage, churn; then its KPIs.

    Refuses a non-empty directory that is not a kpilot workspace, and an existing project of the same
    name unless --force (other projects are never touched).
    """
    st = state(ctx)
    running = read_server_file(home or st.home)
    if running is not None:
        raise fail(
            WorkspaceError(
                f"the kpilot server at {running.url} (pid {running.pid}) serves {home or st.home}: "
                "stop it before generating a demo there, or choose another --home"
            ),
            as_json,
        )
    cfg = DemoConfig(
        home=home or st.home,
        project=project,
        seed=seed,
        persons=persons,
        days=days,
        end=end.date() if end else None,
        force=force,
        timezone=timezone,
        metadata_url=st.metadata_url,
    )
    show = not as_json and err_console.is_terminal
    try:
        with Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not show,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(step: str, fraction: float) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(step, total=1.0)
                bar.update(tasks[step], completed=fraction)

            report = run_demo(cfg, progress)
    except KpilotError as exc:
        raise fail(exc, as_json) from exc
    if as_json:
        emit_json(report.as_dict())
        return
    _print(report)


def _print(report: DemoReport) -> None:
    console.print(
        f"Demo project [bold]{report.project}[/] in [bold]{report.home}[/]: {report.events:,} events, "
        f"{report.persons_stored:,} persons, {report.date_from} .. {report.date_to} "
        f"(seed {report.seed}, {report.seconds:.1f} s)",
        highlight=False,
    )
    table = Table(title=f"Key metrics, {report.metrics_from} .. {report.date_to}")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("catalog name", style="cyan", no_wrap=True)
    for m in report.metrics:
        value = m["formatted"] if "error" not in m else f"[red]{m['formatted']}[/]"
        table.add_row(m["title"], value, m["name"])
    console.print(table)
    for m in report.metrics:
        if "error" in m:
            err_console.print(f"[yellow]{m['name']}:[/] {m['error']}", highlight=False)
    console.print(
        "Try: [bold]kpilot metrics eval dau --from "
        f"{report.metrics_from} --to {report.date_to}[/] or [bold]kpilot audit[/] "
        f"(with --home {report.home} if it is not your default workspace)",
        highlight=False,
    )
