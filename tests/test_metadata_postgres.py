"""The metadata database works on a real PostgreSQL server as well as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from kpilot.errors import WorkspaceError
from kpilot.workspace import Workspace
from tests.conftest import Env, ev, values
from tests.pg_server import find_pg_bin, postgres_server

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql); .ci/run installs it")
    with postgres_server() as url:
        yield url


def test_workspace_on_postgres_migrates_and_isolates_projects(tmp_path: Path, pg_url: str) -> None:
    ws = Workspace.init(tmp_path / "ws", pg_url)
    try:
        tables = set(inspect(ws.meta.engine).get_table_names())
        assert {"projects", "import_runs", "import_rejections", "alembic_version"} <= tables
        a = Env(ws, ws.create_project("pg-a", "Europe/Paris"))
        b = Env(ws, ws.create_project("pg-b"))
        with pytest.raises(WorkspaceError, match="already exists"):
            ws.create_project("pg-a")
        a.load([ev("x", "u1", "2024-03-01T12:00:00Z")])
        spec = {"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-01"}
        assert values(a.query(spec)) == [1]
        assert values(b.query(spec)) == [0]
    finally:
        ws.close()
    # reopening finds the same metadata (the URL is remembered by the workspace)
    again = Workspace.open(tmp_path / "ws")
    try:
        assert [p.name for p in again.projects()] == ["pg-a", "pg-b"]
        assert again.project("pg-a").timezone == "Europe/Paris"
    finally:
        again.close()
