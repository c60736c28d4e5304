"""Event store settings from the environment: KPILOT_STORE_MEMORY_LIMIT caps DuckDB's memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpilot.errors import WorkspaceError
from kpilot.workspace import Workspace


def test_memory_limit_setting_reaches_duckdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPILOT_STORE_MEMORY_LIMIT", "256MB")
    with Workspace.init(tmp_path / "ws") as ws:
        (limit,) = ws.store.fetchall("SELECT current_setting('memory_limit')")[0]
    assert limit == "244.1 MiB"  # DuckDB reports 256 * 10^6 bytes in MiB
    monkeypatch.delenv("KPILOT_STORE_MEMORY_LIMIT")
    with Workspace.open(tmp_path / "ws") as ws:
        (default,) = ws.store.fetchall("SELECT current_setting('memory_limit')")[0]
    assert default != limit


def test_a_bad_memory_limit_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Workspace.init(tmp_path / "ws").close()
    monkeypatch.setenv("KPILOT_STORE_MEMORY_LIMIT", "lots")
    with pytest.raises(WorkspaceError, match="KPILOT_STORE_MEMORY_LIMIT 'lots' is not valid"):
        Workspace.open(tmp_path / "ws")
