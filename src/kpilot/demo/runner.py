"""``kpilot demo``: a fresh workspace filled with a realistic generated product, then its key metrics.

Workspace safety (docs/demo.md):

* the directory does not exist or is empty: a new workspace is created there with the project;
* it is a kpilot workspace without a project of that name: the project is added, nothing else is touched;
* it is a kpilot workspace that already has the project: refused, unless ``force``, which first deletes
  every row of that project (events, persons, ingest statistics, import history and any other table with
  a ``project_id`` column) and then regenerates it; other projects are untouched;
* it is a non-empty directory that is not a kpilot workspace: always refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from kpilot.demo.persons import build_persons
from kpilot.demo.registry import generator_rng, load_generators, progress_hook
from kpilot.errors import KpilotError, WorkspaceError
from kpilot.workspace import ProjectInfo, Workspace

__all__ = [
    "DEFAULT_DAYS",
    "DEFAULT_PERSONS",
    "DEFAULT_SEED",
    "DemoConfig",
    "DemoReport",
    "prepare_workspace",
    "run_demo",
]

DEFAULT_PERSONS = 5_000
DEFAULT_DAYS = 90
DEFAULT_SEED = 42
METRIC_WINDOW_DAYS = 30
"""Key metrics are computed over the last 30 demo days (all of them when the demo is shorter)."""

Progress = Callable[[str, float], None]
"""``progress(step name, fraction of that step done)``."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    home: Path
    project: str = "demo"
    seed: int = DEFAULT_SEED
    persons: int = DEFAULT_PERSONS
    days: int = DEFAULT_DAYS
    end: date | None = None
    """Last demo day (UTC); default yesterday, so the data ends with the last complete day."""
    force: bool = False
    timezone: str = "UTC"
    metadata_url: str | None = None

    @property
    def last_day(self) -> date:
        return self.end or datetime.now(UTC).date() - timedelta(days=1)

    @property
    def day_list(self) -> list[date]:
        return [self.last_day - timedelta(days=self.days - 1 - i) for i in range(self.days)]


@dataclass(slots=True)
class DemoReport:
    home: str
    project: str
    seed: int
    persons: int
    days: int
    date_from: date
    date_to: date
    events: int
    persons_stored: int
    generators: list[str]
    seconds: float
    metrics_from: date
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "project": self.project,
            "seed": self.seed,
            "persons": self.persons,
            "days": self.days,
            "date_from": self.date_from.isoformat(),
            "date_to": self.date_to.isoformat(),
            "events": self.events,
            "persons_stored": self.persons_stored,
            "generators": self.generators,
            "seconds": round(self.seconds, 2),
            "metrics_range": {
                "date_from": self.metrics_from.isoformat(),
                "date_to": self.date_to.isoformat(),
            },
            "metrics": self.metrics,
        }


def prepare_workspace(cfg: DemoConfig) -> tuple[Workspace, ProjectInfo]:
    """Open or create the workspace and an empty project for the demo (see the module docstring)."""
    home = cfg.home
    if home.exists() and not home.is_dir():
        raise WorkspaceError(f"{home} exists and is not a directory")
    is_workspace = (home / "kpilot.workspace").exists()
    if home.exists() and not is_workspace and any(home.iterdir()):
        raise WorkspaceError(
            f"{home} is a non-empty directory and not a kpilot workspace; choose another --home"
        )
    ws = Workspace.init(home, cfg.metadata_url)
    try:
        existing = {p.name: p for p in ws.projects()}
        if cfg.project in existing:
            if not cfg.force:
                raise WorkspaceError(
                    f"project {cfg.project!r} already exists in {home}: use --force to replace its data, "
                    "--project NAME for another project, or --home for another directory"
                )
            wipe_project(ws, existing[cfg.project])
            return ws, existing[cfg.project]
        return ws, ws.create_project(cfg.project, cfg.timezone)
    except BaseException:
        ws.close()
        raise


def wipe_project(ws: Workspace, project: ProjectInfo) -> None:
    """Delete every row of ``project`` from the event store and the metadata database (keeps the project)."""
    ws.store.delete_project(project.id)
    from sqlalchemy import MetaData

    meta = MetaData()
    meta.reflect(ws.meta.engine)
    with ws.meta.engine.begin() as conn:
        for table in reversed(meta.sorted_tables):
            if table.name != "projects" and "project_id" in table.c:
                conn.execute(table.delete().where(table.c.project_id == project.id))


def run_demo(cfg: DemoConfig, progress: Progress | None = None) -> DemoReport:
    """Generate the demo into ``cfg.home`` and compute its key metrics."""
    import numpy as np

    if cfg.persons < 1 or cfg.days < 1:
        raise KpilotError("--persons and --days must be at least 1")
    started = time.perf_counter()
    days = cfg.day_list
    report = progress or (lambda _step, _fraction: None)
    generators = load_generators()
    ws, project = prepare_workspace(cfg)
    try:
        report("persons", 0.0)
        persons = build_persons(np.random.default_rng([cfg.seed, 0]), cfg.persons, days)
        report("persons", 1.0)
        for gen in generators:

            def hook(fraction: float, name: str = gen.name) -> None:
                report(name, fraction)

            report(gen.name, 0.0)
            with progress_hook(hook):
                gen.fn(ws, project, generator_rng(cfg.seed, gen.name), persons, days)
            report(gen.name, 1.0)
        ws.store.checkpoint()
        events, persons_stored = ws.store.fetchall(
            "SELECT (SELECT count(*) FROM events WHERE project_id = ?), "
            "(SELECT count(DISTINCT person_id) FROM person_distinct_ids WHERE project_id = ?)",
            [project.id, project.id],
        )[0]
        names = list(dict.fromkeys(m for g in generators for m in g.metrics))
        metrics_from = max(days[0], days[-1] - timedelta(days=METRIC_WINDOW_DAYS - 1))
        report("metrics", 0.0)
        metrics = key_metrics(ws, project, names, metrics_from, days[-1])
        report("metrics", 1.0)
    finally:
        ws.close()
    return DemoReport(
        str(cfg.home.resolve()),
        project.name,
        cfg.seed,
        cfg.persons,
        cfg.days,
        days[0],
        days[-1],
        int(events),
        int(persons_stored),
        [g.name for g in generators],
        time.perf_counter() - started,
        metrics_from,
        metrics,
    )


def key_metrics(
    ws: Workspace, project: ProjectInfo, names: list[str], date_from: date, date_to: date
) -> list[dict[str, Any]]:
    """Evaluate catalog metrics with their default parameters; a metric that fails reports its error."""
    from kpilot.catalog import evaluate_metric, format_value, load_catalog
    from kpilot.compute.engine import DuckDBEngine

    catalog = load_catalog()
    engine = DuckDBEngine(ws.store)
    out: list[dict[str, Any]] = []
    for name in names:
        if name not in catalog:
            continue
        metric = catalog.get(name)
        row: dict[str, Any] = {"name": name, "title": metric.title, "unit": metric.unit}
        try:
            value = evaluate_metric(engine, project, metric, date_from, date_to, catalog=catalog).value
            row.update(value=value, formatted=format_value(value, metric.unit))
        except KpilotError as exc:
            row.update(value=None, formatted="n/a", error=str(exc))
        out.append(row)
    return out
