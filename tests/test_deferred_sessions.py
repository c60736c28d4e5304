"""An import smaller than the project keeps the rollup batch by batch and catches the sessions up in one pass
at its end (kpilot.store.session_pending; docs/rollups.md, "Bulk imports")."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.collect.importer import import_events
from kpilot.collect.normalize import normalize
from kpilot.store import session_store, session_upkeep
from kpilot.store.duckdb_store import EventStore
from kpilot.workspace import Workspace
from tests.conftest import Env, ev
from tests.test_bulk_upkeep import SPECS, _answers, _rows, _write
from tests.test_session_store import check, histories, rebuilt, stored


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of new events of every session upkeep pass (batch by batch, or a catch-up)."""
    seen: list[int] = []
    original = session_store.maintain

    def counting(
        cur: Any, project_id: int, remap: Any, params: Any, timezone: Any = None, batch: Any = None
    ) -> None:
        seen.append(batch.events().num_rows if batch is not None else -1)
        original(cur, project_id, remap, params, timezone, batch)

    monkeypatch.setattr(session_store, "maintain", counting)
    return seen


def _pending(env: Env) -> list[tuple[Any, ...]]:
    return env.ws.store.fetchall("SELECT project_id FROM session_pending")


def _merging_rows(prefix: str) -> list[dict[str, Any]]:
    """Events of stored and new persons with merges spread over the file: a chain (the new person of x1 is
    absorbed into y1's, older, then y1's into the stored u4's) and a stored person absorbed (u2 -> u3)."""
    rows = _rows(2, 3, 6, prefix)
    rows += [
        {**ev("click", "y1", "2024-03-02T07:00:00Z"), "uuid": f"{prefix}-y1"},
        {**ev("click", "x1", "2024-03-02T07:30:00Z"), "uuid": f"{prefix}-x1"},
        {**ev("click", "x1", "2024-03-03T08:00:00Z"), "uuid": f"{prefix}-x2"},
        {
            **ev("$identify", "y1", "2024-03-03T09:10:00Z", **{"$anon_distinct_id": "x1"}),
            "uuid": f"{prefix}-i1",
        },
        {**ev("click", "y1", "2024-03-03T12:00:00Z"), "uuid": f"{prefix}-y2"},
        {
            **ev("$identify", "u4", "2024-03-04T20:20:00Z", **{"$anon_distinct_id": "y1"}),
            "uuid": f"{prefix}-i2",
        },
        {
            **ev("$identify", "u3", "2024-03-04T10:00:00Z", **{"$anon_distinct_id": "u2"}),
            "uuid": f"{prefix}-i3",
        },
    ]
    return sorted(rows, key=lambda r: r["timestamp"])


def test_a_small_import_catches_the_sessions_up_once_at_the_end(
    env: Env, tmp_path: Path, passes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    env.load(_rows(1, 7, 12, "a"))
    stored_passes = len(passes)
    path = _write(tmp_path / "small.jsonl", _merging_rows("b"))
    store = env.ws.store
    write = store.write_arrow
    during: list[tuple[Any, ...]] = []

    def looking(*args: Any, **kwargs: Any) -> Any:
        got = write(*args, **kwargs)
        # between two batches: sessions marked, read from raw events; the rollup still answers
        during.append((len(_pending(env)), env.query(SPECS[2]) is not None and env.engine.last_source))
        env.query(SPECS[0])
        assert env.engine.last_source == "rollups"
        return got

    monkeypatch.setattr(store, "write_arrow", looking)
    report = import_events(env.ws, env.project, [path], batch_rows=10)
    assert report.imported == report.rows_read > 30
    assert len(during) >= 3 and set(during) == {(1, "events")}
    assert passes[stored_passes:] == [report.imported]  # one pass over every imported event
    assert _pending(env) == []
    check(env)  # sessions and day aggregates equal a rebuild, and answer what raw events do
    _answers(env)


def test_pending_events_past_the_limit_are_caught_up_on_the_way(
    env: Env, tmp_path: Path, passes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_upkeep, "FLUSH_EVENTS", 15)
    env.load(_rows(1, 7, 12, "a"))
    before = len(passes)
    path = _write(tmp_path / "small.jsonl", _merging_rows("b"))
    report = import_events(env.ws, env.project, [path], batch_rows=10)
    got = passes[before:]
    assert len(got) >= 2 and all(n >= 15 for n in got[:-1]) and sum(got) == report.imported
    check(env)
    _answers(env)


def test_a_failed_write_leaves_nothing_of_itself_pending(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.load(_rows(1, 7, 12, "a"))
    path = _write(tmp_path / "small.jsonl", _merging_rows("b"))
    upkeep = session_upkeep.Upkeep.maintain
    calls: list[int] = []

    def failing_third(self: Any, *args: Any, **kwargs: Any) -> None:
        upkeep(self, *args, **kwargs)  # the batch's events are added to the pending ones ...
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")  # ... and its transaction rolls back

    monkeypatch.setattr(session_upkeep.Upkeep, "maintain", failing_third)
    with pytest.raises(OSError, match="disk full"):
        import_events(env.ws, env.project, [path], batch_rows=10)
    monkeypatch.undo()
    assert _pending(env) == []  # caught up with what was stored
    check(env)
    _answers(env)


def test_an_interrupted_import_leaves_the_mark_and_the_next_opening_rebuilds(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.load(_rows(1, 7, 12, "a"))
    path = _write(tmp_path / "small.jsonl", _merging_rows("b"))
    store = env.ws.store
    write = store.write_arrow
    written: list[int] = []

    def interrupted_third(*args: Any, **kwargs: Any) -> Any:
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(1)
        return write(*args, **kwargs)

    monkeypatch.setattr(store, "write_arrow", interrupted_third)
    with pytest.raises(KeyboardInterrupt):
        import_events(env.ws, env.project, [path], batch_rows=10)
    assert _pending(env) == [(env.project.id,)]
    env.query(SPECS[2])
    assert env.engine.last_source == "events"  # stale sessions are not used
    home = env.ws.home
    env.ws.close()
    with Workspace.open(home) as ws:
        again = Env(ws, ws.project(env.project.name))
        assert again.ws.store.fetchall("SELECT count(*) FROM session_pending")[0][0] == 0
        check(again)  # rebuilt on opening
        _answers(again)


def test_a_project_without_sessions_is_not_deferred(env: Env) -> None:
    store = env.ws.store
    with store.deferred_sessions(env.project.id) as deferred:
        assert deferred
        with store.deferred_sessions(env.project.id) as again:
            assert not again  # already deferred
    cur = store.cursor()
    try:
        session_store.drop(cur, env.project.id)
    finally:
        cur.close()
    with store.deferred_sessions(env.project.id) as deferred:
        assert not deferred


def test_writes_through_another_store_of_the_file_join_the_catch_up(
    env: Env, passes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    env.load(_rows(1, 7, 12, "a"))
    builds: list[int] = []
    build = session_store.build
    monkeypatch.setattr(session_store, "build", lambda *a, **k: builds.append(1) or build(*a, **k))
    store = env.ws.store
    other = EventStore(store.path)  # a second writing store of the same file in this process
    try:
        with store.deferred_sessions(env.project.id) as deferred:
            assert deferred
            before = len(passes)
            env.load(_rows(5, 2, 3, "c"))
            other.write_batch(env.project.id, [normalize(r) for r in _merging_rows("b")])
            assert len(passes) == before  # pending, not kept batch by batch
            other.ensure_rollups(env.project.id, "UTC")
            assert builds == [] and _pending(env) == [(env.project.id,)]  # nor rebuilt meanwhile
        assert passes[before:] == [sum(passes[before:])] and passes[-1] > 30  # one catch-up, both stores
    finally:
        other.close()
    check(env)
    _answers(env)


def test_a_store_from_before_the_mark_still_answers_from_sessions_read_only(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    with Workspace.init(home) as ws:
        env = Env(ws, ws.create_project("p", "UTC"))
        env.load(_rows(1, 7, 12, "a"))
        expected = env.query(SPECS[2])
        # what a version-5 store looks like: no session_pending
        ws.store.conn.execute("DROP TABLE session_pending")
        ws.store.conn.execute("UPDATE kpilot_schema SET version = 5")
    with Workspace.open(home, read_only=True) as ws:
        env = Env(ws, ws.project("p"))
        assert env.query(SPECS[2]) == expected
        assert env.engine.last_source == "sessions"


@settings(max_examples=25, deadline=None)
@given(case=histories(), flush=st.sampled_from([1, 7, 40, 10**9]))
def test_deferred_upkeep_matches_a_rebuild_and_raw_events(case: Any, flush: int) -> None:
    """Random histories (tests/test_session_store.py): the first batch stored with upkeep, the others with
    the upkeep deferred and caught up (every ``flush`` pending events, and at the end)."""
    batches, specs = case
    saved = session_upkeep.FLUSH_EVENTS
    session_upkeep.FLUSH_EVENTS = flush
    try:
        with tempfile.TemporaryDirectory() as tmp, Workspace.init(Path(tmp) / "ws") as ws:
            env = Env(ws, ws.create_project("p", "UTC"))
            if batches[0]:
                env.load(batches[0])
            # merges while deferred, of persons that may have stored sessions and pending events: a chain
            # (b into a, then a into c or c into a, whichever is older), then more events of c
            merges = [
                [ev("$identify", "a", "2024-03-10T00:00:00Z", **{"$anon_distinct_id": "b"})],
                [ev("$identify", "c", "2024-03-10T01:00:00Z", **{"$anon_distinct_id": "a"})],
                [ev("click", "c", "2024-03-10T01:10:00Z"), ev("click", "b", "2024-03-10T01:20:00Z")],
            ]
            with ws.store.deferred_sessions(env.project.id) as deferred:
                assert deferred
                for batch in [*batches[1:], *merges]:
                    if batch:
                        env.load(batch)
            assert _pending(env) == []
            assert stored(env) == rebuilt(env)
            for spec in specs:
                check(env, spec)
    finally:
        session_upkeep.FLUSH_EVENTS = saved
