"""Shared fixtures: a fresh workspace and project per test, and helpers to load events and run queries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kpilot.collect.normalize import normalize
from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.workspace import ProjectInfo, Workspace


class Env:
    """A workspace with one project; ``load`` stores events, ``query`` runs a spec dict.

    ``query`` answers the way users get answers (from the rollups or the materialised sessions when they
    can, raw events otherwise) and, whenever they answered, checks that raw events give exactly the same
    result: every test that queries through ``Env`` covers both paths.
    """

    def __init__(self, ws: Workspace, project: ProjectInfo) -> None:
        self.ws = ws
        self.project = project
        self.engine = DuckDBEngine(ws.store, rollups=True)
        self.raw_engine = DuckDBEngine(ws.store, rollups=False)

    def load(self, rows: list[dict[str, Any]]) -> None:
        self.ws.store.write_batch(self.project.id, [normalize(r) for r in rows])

    def query(self, spec: dict[str, Any]) -> dict[str, Any]:
        parsed = parse_spec(spec)
        got = run_query(self.engine, self.project, parsed)
        if self.engine.last_source in ("rollups", "sessions"):
            raw = run_query(self.raw_engine, self.project, parsed)
            source = self.engine.last_source
            assert got == raw, f"{source} and raw events disagree for {spec}:\n{got}\n{raw}"
        return got

    def other_project(self, name: str = "other", timezone: str = "UTC") -> Env:
        return Env(self.ws, self.ws.create_project(name, timezone))


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace.init(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture
def env(workspace: Workspace) -> Env:
    return Env(workspace, workspace.create_project("test", "UTC"))


@pytest.fixture
def env_ny(workspace: Workspace) -> Env:
    return Env(workspace, workspace.create_project("ny", "America/New_York"))


def ev(event: str, who: str, ts: str, **props: Any) -> dict[str, Any]:
    """A PostHog-shaped event row for tests."""
    return {"event": event, "distinct_id": who, "timestamp": ts, "properties": props}


def values(result: dict[str, Any]) -> list[Any]:
    return [p["value"] for p in result["series"]]
