"""Bulk imports defer the rollup and session upkeep to one build at the end (docs/rollups.md, "Bulk imports").

The import chooses: at least as many rows as the project holds -> build once at the end; fewer -> keep the
rollup current batch by batch and catch the sessions up at the end (tests/test_deferred_sessions.py). Either way the project ends with rollups and sessions that
answer exactly what raw events answer (``Env.query`` checks every answer against raw events).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kpilot.collect.importer import import_events
from kpilot.store import rollup_store, session_store
from tests.conftest import Env, ev
from tests.test_session_store import check

SPECS: list[dict[str, Any]] = [
    {"kind": "trends", "math": "dau", "date_from": "2024-03-01", "date_to": "2024-03-08"},
    {"kind": "trends", "math": "wau", "date_from": "2024-03-01", "date_to": "2024-03-08"},
    {"kind": "sessions", "date_from": "2024-03-01", "date_to": "2024-03-08"},
    {
        "kind": "retention",
        "period": "day",
        "intervals": 4,
        "date_from": "2024-03-01",
        "date_to": "2024-03-06",
    },
]


def _rows(first_day: int, days: int, persons: int, prefix: str) -> list[dict[str, Any]]:
    rows = []
    for d in range(first_day, first_day + days):
        for p in range(persons):
            if (p + d) % 3 == 0:
                continue
            for minute in (0, 5, 50 + p % 7):
                name = "$pageview" if minute == 0 else "click"
                row = ev(name, f"u{p}", f"2024-03-{d:02d}T{8 + p % 5:02d}:{minute:02d}:00Z")
                rows.append({**row, "uuid": f"{prefix}-{d}-{p}-{minute}"})
    # an identity merge inside the file: u1 turns out to be u0
    rows.append(
        {
            **ev("$identify", "u0", "2024-03-04T12:00:00Z", **{"$anon_distinct_id": "u1"}),
            "uuid": f"{prefix}-m",
        }
    )
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def upkeep_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts incremental rollup upkeep and full rollup builds."""
    calls = {"incremental": 0, "builds": 0}
    add, build = rollup_store.add_staged, rollup_store.build

    def counting_add(*args: Any, **kwargs: Any) -> Any:
        calls["incremental"] += 1
        return add(*args, **kwargs)

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        calls["builds"] += 1
        return build(*args, **kwargs)

    monkeypatch.setattr(rollup_store, "add_staged", counting_add)
    monkeypatch.setattr(rollup_store, "build", counting_build)
    return calls


def _answers(env: Env) -> list[dict[str, Any]]:
    out = []
    for spec in SPECS:
        out.append(env.query(spec))
        assert env.engine.last_source in ("rollups", "sessions"), spec
    return out


def test_a_large_import_builds_once_at_the_end(
    env: Env, tmp_path: Path, upkeep_calls: dict[str, int]
) -> None:
    path = _write(tmp_path / "big.jsonl", _rows(1, 7, 12, "a"))
    report = import_events(env.ws, env.project, [path], batch_rows=50)  # many batches
    assert report.imported == report.rows_read > 150
    assert upkeep_calls == {"incremental": 0, "builds": 1}
    store = env.ws.store
    assert store.rollup_timezone(env.project.id) == "UTC"
    cur = store.cursor()
    try:
        assert session_store.params_of(cur, env.project.id) == session_store.DEFAULT
        assert session_store.day_timezone(cur, env.project.id) == "UTC"
    finally:
        cur.close()
    check(env)  # sessions and day aggregates equal a rebuild
    _answers(env)
    # the next write keeps them current again, batch by batch
    env.load([{**ev("click", "u3", "2024-03-07T23:00:00Z"), "uuid": "late"}])
    assert upkeep_calls["incremental"] == 1
    check(env)
    _answers(env)


def test_a_small_import_keeps_upkeep_incremental(
    env: Env, tmp_path: Path, upkeep_calls: dict[str, int]
) -> None:
    env.load(_rows(1, 7, 12, "a"))
    path = _write(tmp_path / "small.jsonl", _rows(3, 1, 4, "b"))
    import_events(env.ws, env.project, [path], batch_rows=5)
    assert upkeep_calls["builds"] == 0 and upkeep_calls["incremental"] >= 2
    check(env)
    _answers(env)


def test_a_failing_bulk_import_still_leaves_current_rollups(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upkeep_calls: dict[str, int]
) -> None:
    path = _write(tmp_path / "big.jsonl", _rows(1, 7, 12, "a"))
    store = env.ws.store
    write = store.write_arrow
    written = []

    def failing_third(*args: Any, **kwargs: Any) -> Any:
        if len(written) == 2:
            raise OSError("disk full")
        written.append(1)
        return write(*args, **kwargs)

    monkeypatch.setattr(store, "write_arrow", failing_third)
    monkeypatch.setattr(store, "write_batch", lambda *a, **k: pytest.fail("row path not expected"))
    with pytest.raises(OSError, match="disk full"):
        import_events(env.ws, env.project, [path], batch_rows=50)
    assert upkeep_calls == {"incremental": 0, "builds": 1}
    assert store.rollup_timezone(env.project.id) == "UTC"
    check(env)
    _answers(env)


def test_another_projects_writes_keep_their_upkeep(
    env: Env, tmp_path: Path, upkeep_calls: dict[str, int]
) -> None:
    other = env.other_project()
    other.load(_rows(1, 2, 3, "o"))
    before = upkeep_calls["incremental"]
    with env.ws.store.bulk_upkeep(env.project.id) as deferred:
        assert deferred
        env.load(_rows(1, 3, 5, "a"))
        assert upkeep_calls["incremental"] == before
        other.load(_rows(4, 1, 3, "o2"))  # not in bulk: kept current
        assert upkeep_calls["incremental"] == before + 1
        assert env.ws.store.rollup_timezone(env.project.id) is None  # dropped meanwhile: raw events answer
        env.query(SPECS[0])
        assert env.engine.last_source == "events"
    check(env)
    check(other)
    _answers(env)


@pytest.mark.parametrize(
    ("choice", "builds"), [("incremental", 0), ("deferred", 0), ("rebuild", 1), ("auto", 1)]
)
def test_the_choice_can_be_forced(
    env: Env,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    upkeep_calls: dict[str, int],
    choice: str,
    builds: int,
) -> None:
    path = _write(tmp_path / "big.jsonl", _rows(1, 3, 6, "a"))
    monkeypatch.setenv("KPILOT_IMPORT_UPKEEP", choice)
    import_events(env.ws, env.project, [path], batch_rows=20)
    assert upkeep_calls["builds"] == builds and (upkeep_calls["incremental"] > 0) == (builds == 0)
    check(env)
    _answers(env)


def test_an_unknown_choice_is_refused_before_anything_is_written(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "big.jsonl", _rows(1, 1, 2, "a"))
    monkeypatch.setenv("KPILOT_IMPORT_UPKEEP", "sometimes")
    with pytest.raises(
        ValueError, match="KPILOT_IMPORT_UPKEEP must be one of auto, incremental, deferred, rebuild"
    ):
        import_events(env.ws, env.project, [path])
    assert env.ws.store.fetchall("SELECT count(*) FROM events")[0][0] == 0
