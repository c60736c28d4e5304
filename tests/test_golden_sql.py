"""Golden SQL snapshots: the DuckDB SQL each acceptance spec compiles to is pinned in tests/golden/.

A change in the compiler shows up here as a readable diff of SQL. When the change is intended, regenerate
with ``KPILOT_UPDATE_GOLDEN=1 pytest tests/test_golden_sql.py`` and review the diff before committing.
Every statement must also parse with SQLGlot as DuckDB SQL (a cheap check that we emit well-formed SQL).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlglot

from kpilot.compute.dialect import Dialect
from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.workspace import Workspace
from tests.acceptance_specs import SPECS, load_fixture

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KPILOT_UPDATE_GOLDEN") == "1"


class RecordingEngine:
    """Runs on DuckDB and keeps every statement it was given."""

    def __init__(self, inner: DuckDBEngine) -> None:
        self.inner = inner
        self.statements: list[str] = []

    @property
    def dialect(self) -> Dialect:
        return self.inner.dialect

    def fetchall(self, sql: str) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        return self.inner.fetchall(sql)


@pytest.fixture(scope="module")
def fixture_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = Workspace.init(tmp_path_factory.mktemp("golden") / "ws")
    load_fixture(ws)
    yield ws
    ws.close()


def _file(name: str) -> Path:
    return GOLDEN / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".sql")


@pytest.mark.parametrize(("name", "project", "spec"), SPECS, ids=[s[0] for s in SPECS])
def test_compiled_sql_matches_golden(
    name: str, project: str, spec: dict[str, Any], fixture_ws: Workspace
) -> None:
    engine = RecordingEngine(DuckDBEngine(fixture_ws.store))
    run_query(engine, fixture_ws.project(project), parse_spec(spec))
    assert engine.statements, "a query must run at least one statement"
    for sql in engine.statements:
        sqlglot.parse_one(sql, read="duckdb")
    text = "\n;\n\n".join(s.strip() for s in engine.statements) + "\n;\n"
    path = _file(name)
    if UPDATE or not path.exists():
        if not UPDATE and os.environ.get("CI"):
            pytest.fail(f"missing golden file {path}; generate it with KPILOT_UPDATE_GOLDEN=1")
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"compiled SQL changed for {name}; see the docstring to update"


def test_no_stale_golden_files() -> None:
    expected = {_file(name).name for name, _, _ in SPECS}
    stale = sorted(p.name for p in GOLDEN.glob("*.sql") if p.name not in expected)
    assert not stale, f"golden files without a spec: {stale}"
