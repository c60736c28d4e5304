"""Materialised sessions: upkeep on every write equals a rebuild, and answers equal the raw-event query.

``Env.query`` already compares every answer the materialisation gives with the raw-event query; these tests
add the cases that stress the upkeep (order of arrival, ``max_hours`` chains, merges after the fact,
duplicates), the range edges, timezones, projects, rebuilds, and a property test.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.compute import sessions_mat
from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.errors import SpecError
from kpilot.store import session_store
from kpilot.workspace import Workspace
from tests.conftest import Env, ev

SPEC: dict[str, Any] = {"kind": "sessions", "date_from": "2024-03-01", "date_to": "2024-03-05"}


def every(minutes: int, start: str, count: int, who: str = "a", event: str = "x") -> list[dict[str, Any]]:
    t0 = datetime.fromisoformat(start)
    return [ev(event, who, (t0 + timedelta(minutes=minutes * i)).isoformat() + "Z") for i in range(count)]


def stored(env: Env) -> list[tuple[Any, ...]]:
    rows = env.ws.store.fetchall(
        "SELECT person_id, start_ts, end_ts, run_start, events FROM person_sessions WHERE project_id = ?",
        [env.project.id],
    )
    return sorted((p, s, e, r, sorted((x["event"], x["n"]) for x in ev_)) for p, s, e, r, ev_ in rows)


def rebuilt(env: Env) -> list[tuple[Any, ...]]:
    """What a build from the stored events gives (in a transaction that is rolled back)."""
    cur = env.ws.store.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        session_store.build(cur, env.project.id)
        rows = cur.execute(
            "SELECT person_id, start_ts, end_ts, run_start, events FROM person_sessions WHERE project_id = ?",
            [env.project.id],
        ).fetchall()
        cur.execute("ROLLBACK")
    finally:
        cur.close()
    return sorted((p, s, e, r, sorted((x["event"], x["n"]) for x in ev_)) for p, s, e, r, ev_ in rows)


def _days(cur: Any, project_id: int) -> dict[int, tuple[Any, ...]]:
    days = session_store.load_days(cur, project_id, -(10**6), 10**6)
    return {
        d: (a.sessions, a.duration_us, a.engaged, a.durations.tolist(), list(a.persons), a)
        for d, a in days.items()
    }


def _slices(cur: Any, project_id: int) -> list[tuple[int, int, int]]:
    got = session_store.slice_counts(cur, project_id, -(10**6), 10**6)
    return list(zip(got["day"].tolist(), got["bucket"].tolist(), got["n"].tolist(), strict=True))


def check_days(env: Env) -> None:
    """The day aggregates the upkeep left hold what a build from the stored sessions gives (their bounds on
    run starts, ends and run lengths may be looser, never tighter)."""
    cur = env.ws.store.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        tz = session_store.day_timezone(cur, env.project.id)
        assert tz == env.project.timezone
        kept = _days(cur, env.project.id)
        kept_slices = _slices(cur, env.project.id)
        session_store.build_days(cur, env.project.id, tz)
        built = _days(cur, env.project.id)
        built_slices = _slices(cur, env.project.id)
        cur.execute("ROLLBACK")
    finally:
        cur.close()
    assert {d: v[:5] for d, v in kept.items()} == {d: v[:5] for d, v in built.items()}
    assert kept_slices == built_slices  # the same (day, bucket, n) slices, one row each
    for d, v in kept.items():
        a, b = v[5], built[d][5]
        assert a.min_run_start <= b.min_run_start and a.max_end >= b.max_end
        assert a.max_run_seconds >= b.max_run_seconds


@pytest.fixture(autouse=True)
def day_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Records, for every answer from the materialised sessions, whether the day aggregates gave it."""
    calls: list[bool] = []
    original = sessions_mat.answer_from_days

    def recording(*args: Any, **kwargs: Any) -> Any:
        got = original(*args, **kwargs)
        calls.append(got is not None)
        return got

    monkeypatch.setattr(sessions_mat, "answer_from_days", recording)
    yield calls


def check(env: Env, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The upkeep left exactly what a rebuild gives (sessions and day aggregates), and the sessions answer
    ``spec`` (checked against raw events by ``Env.query``)."""
    assert stored(env) == rebuilt(env)
    check_days(env)
    got = env.query(spec or SPEC)
    assert env.engine.last_source == "sessions"
    return got


@pytest.fixture
def raw_splits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the windows split again from raw events (by the upkeep, or by a query whose range cuts
    stored sessions: the tests using this fixture query ranges that cut none)."""
    calls: list[int] = []
    original = session_store._raw_events

    def counting(cur: Any, project_id: int, windows: Any) -> Any:
        if windows.num_rows:
            calls.append(windows.num_rows)
        return original(cur, project_id, windows)

    monkeypatch.setattr(session_store, "_raw_events", counting)
    yield calls


# ---- upkeep -----------------------------------------------------------------------------------------------


def test_a_new_project_has_empty_sessions_that_answer(env: Env) -> None:
    assert stored(env) == []
    assert check(env)["totals"]["sessions"] == 0


def test_out_of_order_batches_give_what_a_rebuild_gives(env: Env) -> None:
    rows = (
        every(7, "2024-03-01T08:00:00", 30, "a", "$pageview")
        + every(31, "2024-03-01T09:00:00", 12, "b", "click")
        + every(29, "2024-03-02T23:00:00", 20, "c", "$screen")
        + every(45, "2024-03-03T10:00:00", 5, "a", "buy")
    )
    random.Random(7).shuffle(rows)
    for i in range(0, len(rows), 11):
        env.load(rows[i : i + 11])
        check(env, {**SPEC, "key_events": ["buy"]})
    got = check(env)
    assert got["totals"]["persons"] == 3


def test_late_event_fills_a_gap_and_joins_two_sessions(env: Env) -> None:
    env.load([ev("x", "a", "2024-03-01T10:00:00Z"), ev("x", "a", "2024-03-01T10:50:00Z")])
    assert check(env)["totals"]["sessions"] == 2
    env.load([ev("x", "a", "2024-03-01T10:25:00Z")])
    got = check(env)["totals"]
    assert (got["sessions"], got["avg_duration_seconds"]) == (1, 3000.0)
    # an event inside a stored session changes nothing but its counts
    env.load([ev("$pageview", "a", "2024-03-01T10:10:00Z"), ev("$pageview", "a", "2024-03-01T10:40:00Z")])
    assert check(env)["totals"]["engaged_sessions"] == 1


def test_early_insert_shifts_every_later_cut_of_a_max_hours_chain(env: Env, raw_splits: list[int]) -> None:
    # an event every 20 minutes for 60 hours: one run, cut every 24 h from each session's start
    env.load(every(20, "2024-03-01T06:00:00", 180))
    before = stored(env)
    assert len(before) == 3 and check(env)["totals"]["sessions"] == 3
    assert raw_splits == []
    # 10 minutes before the run: the first session now starts at 05:50 and its cap falls inside the stored
    # first session, so the upkeep splits the run again from raw events
    env.load([ev("x", "a", "2024-03-01T05:50:00Z")])
    after = stored(env)
    assert raw_splits == [1]
    assert [r[1] for r in after] != [r[1] for r in before]
    assert check(env)["totals"]["sessions"] == 3
    # appended events continue the chain from the stored last session without raw events
    env.load(every(20, "2024-03-03T18:00:00", 40))
    assert raw_splits == [1]
    check(env)


def test_appending_at_the_cap_starts_the_next_session(env: Env, raw_splits: list[int]) -> None:
    env.load(every(20, "2024-03-01T00:00:00", 72))  # 00:00 .. 23:40
    env.load([ev("x", "a", "2024-03-02T00:00:00Z")])  # exactly 24 h after the start: same session
    assert len(stored(env)) == 1
    env.load([ev("x", "a", "2024-03-02T00:00:01Z")])  # 24 h 1 s: a new session of the same run
    rows = stored(env)
    assert len(rows) == 2 and rows[0][3] == rows[1][3]  # same run start
    assert raw_splits == []
    check(env)


def test_merge_after_the_fact_combines_interleaved_sessions(env: Env, raw_splits: list[int]) -> None:
    env.load(
        [
            ev("$pageview", "anon", "2024-03-01T10:00:00Z"),
            ev("$pageview", "anon", "2024-03-01T10:40:00Z"),
            ev("click", "user", "2024-03-01T10:20:00Z"),
            ev("click", "user", "2024-03-01T11:00:00Z"),
            ev("click", "user", "2024-03-02T11:00:00Z"),
        ]
    )
    assert check(env)["totals"]["sessions"] == 5
    env.load([ev("$identify", "user", "2024-03-04T00:00:00Z", **{"$anon_distinct_id": "anon"})])
    got = check(env)["totals"]
    assert (got["sessions"], got["persons"], got["engaged_sessions"]) == (3, 1, 1)
    assert len({r[0] for r in stored(env)}) == 1  # all under the surviving person
    assert raw_splits == []
    # a chain of merges: the merged person absorbs another one later
    env.load([ev("x", "other", "2024-03-01T11:20:00Z")])
    env.load([ev("$identify", "user", "2024-03-04T00:10:00Z", **{"$anon_distinct_id": "other"})])
    assert check(env)["totals"]["sessions"] == 3  # 10:00-11:20 (other's click joins), Mar 2, Mar 4


def test_merge_of_two_long_interleaved_chains_is_split_from_raw_events(
    env: Env, raw_splits: list[int]
) -> None:
    # each alone: one run of 30 hours, cut at 24 h; together the cap falls inside stored sessions
    env.load(every(20, "2024-03-01T00:00:00", 90, "anon") + every(20, "2024-03-01T00:10:00", 90, "user"))
    assert check(env)["totals"]["sessions"] == 4
    env.load([ev("$identify", "user", "2024-03-03T12:00:00Z", **{"$anon_distinct_id": "anon"})])
    assert raw_splits == [1]
    assert check(env)["totals"]["sessions"] == 3  # 00:00-24:00, 24:10-30:00 (+ the identify)


def test_duplicates_change_nothing(env: Env) -> None:
    rows = every(10, "2024-03-01T10:00:00", 6) + every(10, "2024-03-01T12:00:00", 3, "b")
    env.load(rows)
    before = stored(env)
    env.load([*rows[2:5], {**ev("x", "b", "2024-03-01T12:05:00Z"), "uuid": "u1"}])
    env.load([{**ev("x", "b", "2024-03-01T12:05:00Z"), "uuid": "u1"}])
    after = stored(env)
    assert [r for r in after if r[0] != after[-1][0]] == [r for r in before if r[0] != before[-1][0]]
    assert sum(n for r in after for _, n in r[4]) == len(rows) + 1
    check(env)


def test_runs_needing_too_many_cap_passes_are_refused_as_by_raw_events(env: Env) -> None:
    env.load(every(30, "2024-01-01T00:00:00", 48 * 202))  # 202 days without a 30-minute pause
    with pytest.raises(SpecError, match="max_hours"):
        env.query({**SPEC, "date_from": "2024-01-01", "date_to": "2024-08-01"})
    # a shorter range needs fewer passes: answered from the sessions (edges rebuilt from raw events)
    check(env, {**SPEC, "date_from": "2024-03-01", "date_to": "2024-03-20"})


# ---- queries ----------------------------------------------------------------------------------------------


def test_sessions_crossing_the_range_edges_are_cut_like_raw_events(env: Env) -> None:
    env.load(
        [
            *every(20, "2024-03-01T20:00:00", 200, "bot"),  # a 66-hour run with cap cuts, across 3 midnights
            ev("x", "a", "2024-03-01T23:50:00Z"),
            ev("x", "a", "2024-03-02T00:10:00Z"),
            ev("$pageview", "b", "2024-03-02T23:55:00Z"),
            ev("$pageview", "b", "2024-03-03T00:05:00Z"),
            *every(25, "2024-03-03T22:00:00", 10, "c"),
        ]
    )
    for first in range(1, 6):
        for last in range(first, 6):
            for interval in ("day", "week"):
                spec = {
                    "kind": "sessions",
                    "date_from": f"2024-03-0{first}",
                    "date_to": f"2024-03-0{last}",
                    "interval": interval,
                }
                check(env, spec)
    got = check(env, {**SPEC, "date_from": "2024-03-02", "date_to": "2024-03-02"})
    assert got["totals"]["persons"] == 3  # bot (cut), a's 00:10 alone, b's 23:55 alone
    # instants as bounds
    check(env, {**SPEC, "date_from": "2024-03-02T00:05:00", "date_to": "2024-03-03T00:00:00"})


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kolkata", "Europe/London"])
def test_timezones_and_daylight_saving(env_ny: Env, tz: str) -> None:
    env_ny.load(
        every(25, "2024-03-10T06:00:00", 12, "a", "$pageview")  # 01:00 EST .. across the jump to EDT
        + every(40, "2024-11-03T04:30:00", 8, "b")  # across the fall back
        + every(15, "2024-03-09T04:50:00", 4, "c")  # around local midnight
    )
    for spec in (
        {"kind": "sessions", "date_from": "2024-03-08", "date_to": "2024-03-12"},
        {"kind": "sessions", "date_from": "2024-03-10", "date_to": "2024-03-10", "engaged_seconds": 0},
        {"kind": "sessions", "date_from": "2024-11-01", "date_to": "2024-11-05", "interval": "week"},
        {"kind": "sessions", "date_from": "2024-03-01", "date_to": "2024-11-30", "interval": "month"},
    ):
        check(env_ny, spec)
        check(env_ny, {**spec, "timezone": tz})


def test_specs_the_sessions_do_not_answer_use_raw_events(env: Env) -> None:
    env.load([*every(20, "2024-03-01T10:00:00", 5), ev("x", "b", "2024-03-01T10:00:00Z", plan="pro")])
    for extra in (
        {"inactivity_minutes": 20},
        {"max_hours": 1},
        {"filters": [{"key": "plan", "value": "pro"}]},
        {"breakdown": {"key": "plan"}},
    ):
        env.query({**SPEC, **extra})
        assert env.engine.last_source == "events", extra
    check(env, {**SPEC, "key_events": ["x"], "pageview_events": ["x"], "engaged_seconds": 100})


def test_projects_keep_their_own_sessions(env: Env) -> None:
    other = env.other_project("other", "Asia/Kolkata")
    env.load(every(10, "2024-03-01T10:00:00", 3, "a"))
    other.load(every(40, "2024-03-01T10:00:00", 3, "a") + every(10, "2024-03-02T10:00:00", 2, "b"))
    other.load([ev("$identify", "b", "2024-03-03T00:00:00Z", **{"$anon_distinct_id": "a"})])
    assert check(env)["totals"]["sessions"] == 1
    assert check(other)["totals"]["sessions"] == 5
    assert len(stored(env)) == 1 and len(stored(other)) == 5


# ---- building ---------------------------------------------------------------------------------------------


def test_writing_without_upkeep_drops_them_and_opening_builds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "ws"
    with Workspace.init(home) as ws:
        project = ws.create_project("p", "UTC")
        Env(ws, project).load(every(10, "2024-03-01T10:00:00", 3))
    monkeypatch.setenv("KPILOT_ROLLUPS", "false")
    with Workspace.open(home) as ws:
        Env(ws, project).load(every(10, "2024-03-01T10:30:00", 3))
        assert ws.store.fetchall("SELECT count(*) FROM session_projects")[0][0] == 0
        assert ws.store.fetchall("SELECT count(*) FROM person_sessions")[0][0] == 0
        engine = DuckDBEngine(ws.store)
        assert run_query(engine, project, parse_spec(SPEC))["totals"]["sessions"] == 1
        assert engine.last_source == "events"
    monkeypatch.delenv("KPILOT_ROLLUPS")
    with Workspace.open(home) as ws:
        env = Env(ws, project)
        assert check(env)["totals"]["sessions"] == 1


def test_a_store_from_before_the_sessions_gets_them_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "ws"
    monkeypatch.setattr(session_store, "BUILD_EVENTS", 7)  # several chunks of persons
    with Workspace.init(home) as ws:
        project = ws.create_project("p", "UTC")
        env = Env(ws, project)
        env.load(every(10, "2024-03-01T10:00:00", 12, "a") + every(50, "2024-03-01T10:00:00", 12, "b"))
        env.load(every(5, "2024-03-02T10:00:00", 12, "c"))
        expected = stored(env)
        # what a version-3 store looks like: no session tables
        ws.store.conn.execute("DROP TABLE person_sessions; DROP TABLE session_projects")
        ws.store.conn.execute("UPDATE kpilot_schema SET version = 3")
    with Workspace.open(home) as ws:
        env = Env(ws, project)
        assert stored(env) == expected
        assert check(env)["totals"]["sessions"] == 1 + 12 + 1


# ---- property -----------------------------------------------------------------------------------------------

_T0 = datetime(2024, 3, 9, 12)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Batches of events (several persons, 5-minute grid plus odd seconds, bursts up to 30 hours so cap
    cuts happen) with merges in some batches, and a few query specs."""
    ids = ["a", "b", "c", "d"]
    rows: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        who = draw(st.sampled_from(ids))
        start = draw(st.integers(0, 72 * 12)) * 5
        step = draw(st.sampled_from([5, 20, 30, 35]))
        for k in range(draw(st.integers(1, 40))):
            t = _T0 + timedelta(minutes=start + step * k, seconds=draw(st.sampled_from([0, 0, 1, 30])))
            name = draw(st.sampled_from(["$pageview", "click", "buy"]))
            rows.append(ev(name, who, t.isoformat() + "Z"))
    order = draw(st.permutations(range(len(rows))))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=3)))
    batches = [[rows[i] for i in order[a:b]] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    for _ in range(draw(st.integers(0, 2))):
        a, b = draw(st.sampled_from(ids)), draw(st.sampled_from(ids))
        at = draw(st.integers(0, len(batches) - 1))
        if a != b:
            batches[at].append(ev("$identify", a, "2024-03-08T00:00:00Z", **{"$anon_distinct_id": b}))
    specs = []
    for _ in range(2):
        first = draw(st.integers(8, 12))
        last = draw(st.integers(first, 13))
        specs.append(
            {
                "kind": "sessions",
                "date_from": f"2024-03-{first:02d}",
                "date_to": f"2024-03-{last:02d}",
                "interval": draw(st.sampled_from(["day", "week"])),
                "timezone": draw(st.sampled_from(["UTC", "America/New_York"])),
                "key_events": draw(st.sampled_from([[], ["buy"]])),
            }
        )
    return batches, specs


@settings(max_examples=25, deadline=None)
@given(case=histories())
def test_upkeep_and_answers_match_rebuild_and_raw_events(case: Any) -> None:
    batches, specs = case
    with tempfile.TemporaryDirectory() as tmp, Workspace.init(Path(tmp) / "ws") as ws:
        env = Env(ws, ws.create_project("p", "UTC"))
        for batch in batches:
            if batch:
                env.load(batch)
            assert stored(env) == rebuilt(env)
        for spec in specs:
            check(env, spec)


def test_a_read_only_store_without_the_session_tables_reads_raw_events(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    with Workspace.init(home) as ws:
        project = ws.create_project("p", "UTC")
        Env(ws, project).load(every(10, "2024-03-01T10:00:00", 3))
        ws.store.conn.execute("DROP TABLE person_sessions; DROP TABLE session_projects")
    with Workspace.open(home, read_only=True) as ws:
        engine = DuckDBEngine(ws.store)
        assert run_query(engine, project, parse_spec(SPEC))["totals"]["sessions"] == 1
        assert engine.last_source == "events"


# ---- day aggregates -----------------------------------------------------------------------------------------


def test_kth_smallest_and_median_across_sorted_arrays_are_exact() -> None:
    rng = random.Random(3)
    for _ in range(40):
        arrays = [
            np.sort(
                np.array([rng.choice([0.0, 1.5, 2.0, rng.random() * 100]) for _ in range(rng.randint(0, 30))])
            )
            for _ in range(rng.randint(1, 5))
        ]
        every_value = np.sort(np.concatenate(arrays))
        if len(every_value) == 0:
            continue
        for k in {0, len(every_value) // 2, len(every_value) - 1}:
            assert sessions_mat.kth_smallest(arrays, k) == every_value[k]
        n = len(every_value)
        expected = every_value[n // 2] if n % 2 else (every_value[n // 2 - 1] + every_value[n // 2]) / 2
        assert sessions_mat._median(arrays, n) == expected


def test_whole_day_default_specs_come_from_the_day_aggregates(env_ny: Env, day_answers: list[bool]) -> None:
    env_ny.load(
        every(25, "2024-03-10T04:00:00", 12, "a", "$pageview")  # around local midnight and the DST jump
        + every(5, "2024-03-09T04:58:00", 2, "b", "$screen")  # 23:58 and 00:03 local: one session, Mar 8
        + every(40, "2024-03-11T12:00:00", 3, "c")
    )
    for spec in (
        {"kind": "sessions", "date_from": "2024-03-08", "date_to": "2024-03-12"},
        {"kind": "sessions", "date_from": "2024-03-09", "date_to": "2024-03-10", "interval": "week"},
        {"kind": "sessions", "date_from": "2024-03-01", "date_to": "2024-03-31", "interval": "month"},
        {"kind": "sessions", "date_from": "2024-03-10", "date_to": "2024-03-10"},  # cuts a's run at midnight
    ):
        day_answers.clear()
        check(env_ny, spec)
        assert day_answers == [True], spec
    for extra in (
        {"engaged_seconds": 0},
        {"key_events": ["x"]},
        {"pageview_events": ["$pageview"]},
        {"timezone": "UTC"},
        {"date_from": "2024-03-08T06:00:00"},
    ):
        day_answers.clear()
        check(env_ny, {"kind": "sessions", "date_from": "2024-03-08", "date_to": "2024-03-12", **extra})
        assert True not in day_answers, extra


def test_a_merge_moves_persons_between_days(env: Env, day_answers: list[bool]) -> None:
    env.load(
        [
            ev("$pageview", "anon", "2024-03-01T23:50:00Z"),
            ev("$pageview", "anon", "2024-03-02T10:00:00Z"),
            ev("click", "user", "2024-03-02T00:05:00Z"),
            ev("click", "user", "2024-03-03T10:00:00Z"),
        ]
    )
    assert [p["persons"] for p in check(env)["series"][:3]] == [1, 2, 1]
    env.load([ev("$identify", "user", "2024-03-04T00:00:00Z", **{"$anon_distinct_id": "anon"})])
    got = check(env)
    # anon's 23:50 and user's 00:05 are one session of Mar 1 now: user has no session starting on Mar 2
    # but anon's 10:00 one, and anon's id is gone from every day
    assert [p["persons"] for p in got["series"][:4]] == [1, 1, 1, 1]
    assert got["totals"]["persons"] == 1
    assert all(day_answers)


def test_a_store_from_before_the_day_aggregates_gets_them_built(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    with Workspace.init(home) as ws:
        project = ws.create_project("p", "Asia/Kolkata")
        env = Env(ws, project)
        env.load(every(10, "2024-03-01T18:00:00", 12, "a") + every(50, "2024-03-01T10:00:00", 12, "b"))
        # what a version-4 store looks like: sessions, no day aggregates
        ws.store.conn.execute("DROP TABLE session_days; DROP TABLE session_day_projects")
        ws.store.conn.execute("UPDATE kpilot_schema SET version = 4")
    with Workspace.open(home) as ws:
        env = Env(ws, project)
        assert ws.store.fetchall("SELECT count(*) FROM session_days")[0][0] == 2
        check(env)
        env.load(every(10, "2024-03-02T18:00:00", 3, "c"))
        check(env)
