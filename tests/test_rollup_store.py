"""The store's persistent rollups: maintained by every write, compacted, dropped and rebuilt, used by queries."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.store import duckdb_store, rollup_store
from kpilot.workspace import Workspace
from tests.conftest import Env, ev, values

DAU = {"kind": "trends", "math": "dau", "date_from": "2024-03-01", "date_to": "2024-03-04"}
MAU = {"kind": "trends", "math": "mau", "date_from": "2024-03-01", "date_to": "2024-03-04"}


def _rows_per_key(env: Env) -> list[int]:
    return [
        int(r[0])
        for r in env.ws.store.fetchall(
            "SELECT count(*) FROM rollup_persons WHERE project_id = ? GROUP BY day, event",
            [env.project.id],
        )
    ]


def _day(i: int, who: str, event: str = "x") -> dict[str, Any]:
    return {**ev(event, who, f"2024-03-0{1 + i % 4}T12:00:00Z"), "uuid": f"{who}-{event}-{i}"}


def test_every_write_appends_a_delta_and_compaction_merges_them(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_store, "COMPACT_AFTER", 10**9)
    for i in range(8):
        env.load([_day(i, f"u{i % 3}"), _day(i, f"v{i}", "y")])
    assert max(_rows_per_key(env)) > 1  # several batches wrote the same day
    before = env.query(DAU)
    # day k: u(k % 3), v(k), u((k + 4) % 3), v(k + 4): four persons each
    assert env.engine.last_source == "rollups" and values(before) == [4, 4, 4, 4]
    merged = env.ws.store.compact_rollups(env.project.id)
    assert merged > 0 and set(_rows_per_key(env)) == {1}
    assert env.query(DAU) == before and env.query(MAU) == run_query(
        env.raw_engine, env.project, parse_spec(MAU)
    )


def test_writes_compact_by_themselves_past_the_threshold(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duckdb_store, "COMPACT_AFTER", 4)
    for i in range(12):
        env.load([_day(i, f"u{i}")])
    assert max(_rows_per_key(env)) <= 3
    assert values(env.query(DAU)) == [3, 3, 3, 3]


def test_a_merge_after_the_events_is_applied_when_reading(env: Env) -> None:
    env.load([_day(0, "anon"), _day(1, "anon"), _day(1, "user")])
    assert values(env.query(DAU)) == [1, 2, 0, 0]
    env.load(
        [{**ev("$identify", "user", "2024-03-03T00:00:00Z", **{"$anon_distinct_id": "anon"}), "uuid": "m"}]
    )
    assert values(env.query(DAU)) == [1, 1, 1, 0] and env.engine.last_source == "rollups"
    (n,) = env.ws.store.fetchall("SELECT count(*) FROM rollup_merges WHERE project_id = ?", [env.project.id])[
        0
    ]
    assert n == 1


def test_writing_without_rollups_drops_them_and_opening_rebuilds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "ws"
    with Workspace.init(home) as ws:
        project = ws.create_project("p", "Europe/Paris")
        assert ws.store.rollup_timezone(project.id) == "Europe/Paris"
    monkeypatch.setenv("KPILOT_ROLLUPS", "false")
    with Workspace.open(home) as ws:
        Env(ws, project).load([_day(0, "a"), _day(1, "b")])
        assert ws.store.rollup_timezone(project.id) is None  # writes did not keep it: it is gone, not stale
        engine = DuckDBEngine(ws.store)
        assert values(run_query(engine, project, parse_spec(DAU))) == [1, 1, 0, 0]
        assert engine.last_source == "events"
    monkeypatch.delenv("KPILOT_ROLLUPS")
    with Workspace.open(home, read_only=True) as ws:  # read-only opens never build: raw events answer
        engine = DuckDBEngine(ws.store)
        assert values(run_query(engine, project, parse_spec(DAU))) == [1, 1, 0, 0]
        assert engine.last_source == "events"
    with Workspace.open(home) as ws:
        assert ws.store.rollup_timezone(project.id) == "Europe/Paris"
        env = Env(ws, project)
        assert values(env.query(DAU)) == [1, 1, 0, 0] and env.engine.last_source == "rollups"


def test_a_spec_in_another_timezone_uses_raw_events(env_ny: Env) -> None:
    env_ny.load([{**ev("x", "a", "2024-03-02T03:00:00Z"), "uuid": "1"}])  # Mar 1 in New York, Mar 2 in UTC
    assert values(env_ny.query(DAU)) == [1, 0, 0, 0] and env_ny.engine.last_source == "rollups"
    assert values(env_ny.query({**DAU, "timezone": "UTC"})) == [0, 1, 0, 0]
    assert env_ny.engine.last_source == "events"


def test_projects_have_separate_rollups(env: Env) -> None:
    other = env.other_project("other")
    env.load([_day(0, "a")])
    other.load([_day(0, "b"), _day(0, "c")])
    assert values(env.query(DAU))[0] == 1 and values(other.query(DAU))[0] == 2


@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "America/Adak", "UTC"])
def test_a_rebuild_reads_events_in_chunks_and_misses_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tz: str
) -> None:
    # 40 days of events at every third hour, with rollups off; the rebuild then reads them 7 days at a time
    rows = [
        {
            **ev("x", f"p{h % 17}", f"{(datetime(2024, 3, 1) + timedelta(hours=h)).isoformat()}Z"),
            "uuid": str(h),
        }
        for h in range(0, 40 * 24, 3)
    ]
    monkeypatch.setenv("KPILOT_ROLLUPS", "false")
    with Workspace.init(tmp_path / "ws") as ws:
        project = ws.create_project("p", tz)
        Env(ws, project).load(rows)
    monkeypatch.delenv("KPILOT_ROLLUPS")
    with Workspace.open(tmp_path / "ws") as ws:
        env = Env(ws, project)
        spec = {"kind": "trends", "math": "dau", "date_from": "2024-02-28", "date_to": "2024-04-12"}
        got = values(env.query(spec))  # Env.query: equal to raw events
        assert env.engine.last_source == "rollups" and sum(got) > 0
        (n,) = ws.store.fetchall("SELECT count(DISTINCT day) FROM rollup_persons WHERE event IS NULL")[0]
        assert n == sum(1 for v in got if v)


@given(st.lists(st.integers(-800_000, 3_000_000), max_size=40), st.integers(3, 9))
def test_day_chunks_cover_each_local_day_once(days: list[int], size: int) -> None:
    present = sorted(set(days))
    chunks = list(rollup_store.day_chunks(present, size))
    covered = [d for first, last in chunks for d in range(first, last + 1)]
    assert len(covered) == len(set(covered))  # no overlap
    assert all(last - first + 1 <= size for first, last in chunks)
    assert {d + k for d in present for k in (-1, 0, 1)} <= set(covered)
    assert len(chunks) <= len(present)  # the gaps between far-apart days cost nothing


def test_pipelined_reads_ahead_but_never_reads_while_writing() -> None:
    import threading
    import time

    import pyarrow as pa

    log: list[tuple[str, int, float, float]] = []
    busy = threading.Lock()  # stands for the shared cursor: must never be taken twice at once

    def read(k: int) -> pa.Table:
        assert busy.acquire(blocking=False), "read while the cursor is in use"
        t = time.perf_counter()
        time.sleep(0.01)
        busy.release()
        log.append(("read", k, t, time.perf_counter()))
        return pa.table({"k": [k]})

    def make(table: pa.Table) -> int:
        return int(table.column("k")[0].as_py())

    def write(k: int) -> int:
        assert busy.acquire(blocking=False), "write while the cursor is in use"
        log.append(("write", k, time.perf_counter(), time.perf_counter()))
        busy.release()
        return k + 1

    assert rollup_store.pipelined([0, 1, 2, 3], read, make, write) == 1 + 2 + 3 + 4
    assert [(kind, k) for kind, k, _, _ in log] == [
        ("read", 0), ("read", 1), ("write", 0), ("read", 2), ("write", 1), ("read", 3), ("write", 2), ("write", 3)
    ]  # fmt: skip
    assert rollup_store.pipelined([], read, make, write) == 0
