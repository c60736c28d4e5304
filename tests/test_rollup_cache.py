"""The readers' rollup cache: reused between queries, never stale after a write (events, merges, compaction,
rebuild), consistent while writes commit; and the sliding-window and canonicalisation shortcuts it relies on."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from kpilot.compute import rollup_cache, rollups
from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.rollup_cache import cached_rollups
from kpilot.compute.rollups import Rollups
from kpilot.compute.spec import parse_spec
from kpilot.store import change_log, duckdb_store, rollup_store
from kpilot.workspace import Workspace
from tests.conftest import Env, ev, values

DAU = {"kind": "trends", "math": "dau", "date_from": "2024-03-01", "date_to": "2024-03-04"}
MAU = {"kind": "trends", "math": "mau", "date_from": "2024-03-01", "date_to": "2024-03-04"}
RETENTION = {
    "kind": "retention",
    "period": "day",
    "intervals": 4,
    "start_event": None,
    "return_event": None,
    "date_from": "2024-03-01",
    "date_to": "2024-03-04",
}
ADOPTION = {"kind": "feature_adoption", "event": "y", "interval": "day", "date_from": "2024-03-01",
            "date_to": "2024-03-04"}  # fmt: skip


def _ev(i: int, who: str, event: str = "x", day: int | None = None) -> dict[str, Any]:
    d = 1 + (i % 4 if day is None else day)
    return {**ev(event, who, f"2024-03-0{d}T12:00:00Z"), "uuid": f"{who}-{event}-{i}-{d}"}


def _entry(env: Env) -> Any:
    cache = rollup_cache._CACHES.get(env.ws.store)
    return None if cache is None else cache.entries.get(env.project.id)


def _sets(env: Env) -> Rollups | None:
    return cached_rollups(env.ws.store, env.project.id, "UTC", date(2024, 3, 1), date(2024, 3, 4), {None})


def test_queries_reuse_the_cached_sets_until_a_write(env: Env) -> None:
    env.load([_ev(0, "a"), _ev(1, "b")])
    assert values(env.query(DAU)) == [1, 1, 0, 0] and env.engine.last_source == "rollups"
    first = _sets(env)
    assert first is not None and _sets(env) is first  # no new read while nothing was written
    env.load([_ev(0, "c"), _ev(2, "c")])  # a write between two queries
    assert values(env.query(DAU)) == [2, 1, 1, 0] and env.engine.last_source == "rollups"
    assert _sets(env) is not first
    assert values(env.query(MAU)) == [2, 3, 3, 3]


def test_a_merge_between_two_queries_is_seen(env: Env) -> None:
    env.load([_ev(0, "anon"), _ev(1, "anon"), _ev(1, "user"), _ev(1, "user", "y"), _ev(2, "anon", "y")])
    for spec in (DAU, MAU, RETENTION, ADOPTION):
        env.query(spec)  # cached: anon and user are two persons
    assert values(env.query(DAU)) == [1, 2, 1, 0]
    env.load(
        [{**ev("$identify", "user", "2024-03-04T00:00:00Z", **{"$anon_distinct_id": "anon"}), "uuid": "m"}]
    )
    assert values(env.query(DAU)) == [1, 1, 1, 1] and env.engine.last_source == "rollups"
    for spec in (MAU, RETENTION, ADOPTION):  # Env.query: equal to raw events
        env.query(spec)
        assert env.engine.last_source == "rollups"
    assert values(env.query(ADOPTION))[1] == 1.0  # the merged person is one active person who adopted


WIDE_DAU = {**DAU, "date_from": "2024-02-01", "date_to": "2024-03-31"}


def test_a_write_updates_the_sets_held_without_reading_the_store(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.load([_ev(0, "a", day=d) for d in range(4)] + [_ev(1, "b", day=0)])
    assert values(env.query(WIDE_DAU))[29:33] == [2, 1, 1, 1]
    before = _entry(env)
    env.load([_ev(5, "c", day=3)])

    def no_read(*_args: object, **_kw: object) -> None:
        raise AssertionError("the store was read")

    monkeypatch.setattr(rollup_cache, "_fetch", no_read)
    assert values(env.query(WIDE_DAU))[29:33] == [2, 1, 1, 2]  # Env.query: equal to raw events
    after = _entry(env)
    assert after.generation > before.generation and after.spans == before.spans
    for day, bm in before.rollups.any_event.items():
        if day != date(2024, 3, 4):
            assert after.rollups.any_event[day] is bm
    assert len(after.rollups.any_event[date(2024, 3, 4)]) == 2
    assert after.nbytes == sum(after.sizes.values()) > before.nbytes


def test_without_the_appended_sets_only_the_days_written_are_read_again(env: Env) -> None:
    env.ws.store._shared.changes = change_log.ChangeLog(sets_bytes=0)  # type: ignore[union-attr]
    env.load([_ev(0, "a", day=d) for d in range(4)] + [_ev(1, "b", day=0)])
    assert values(env.query(WIDE_DAU))[29:33] == [2, 1, 1, 1]
    before = _entry(env)
    env.load([_ev(5, "c", day=3)])  # 2024-03-04: local days 3 to 5 of March are read again, nothing else
    assert values(env.query(WIDE_DAU))[29:33] == [2, 1, 1, 2]
    after = _entry(env)
    assert after.generation > before.generation and after.spans == before.spans
    for day, bm in before.rollups.any_event.items():
        assert (after.rollups.any_event[day] is bm) == (day < date(2024, 3, 3))
    assert after.nbytes == sum(after.sizes.values()) and set(after.sizes) == {
        (d, None) for d in after.rollups.any_event
    }


def test_a_merge_is_applied_to_the_sets_held(env: Env) -> None:
    mau = {**MAU, "date_to": "2024-03-10"}
    env.load([_ev(0, "anon", day=0), _ev(0, "user", day=1), _ev(0, "other", day=7)])
    assert values(env.query(mau)) == [1, 2, 2, 2, 2, 2, 2, 3, 3, 3]
    before = _entry(env)
    env.load(
        [{**ev("$identify", "user", "2024-03-04T00:00:00Z", **{"$anon_distinct_id": "anon"}), "uuid": "m"}]
    )
    assert values(env.query(mau)) == [1, 1, 1, 1, 1, 1, 1, 2, 2, 2]  # anon and user are one person from day 1
    after = _entry(env)
    assert after.generation > before.generation and len(after.merges.survivor) == 1
    march_8 = date(2024, 3, 8)  # far from the write and without the absorbed id: kept as it was
    assert after.rollups.any_event[march_8] is before.rollups.any_event[march_8]


def test_unknown_changes_read_everything_again(env: Env) -> None:
    env.load([_ev(0, "a", day=0), _ev(1, "b", day=1)])
    env.query(DAU)
    before = _entry(env)
    env.ws.store._shared.changes = change_log.ChangeLog(keep=2)  # remembers two commits from now on
    for i in range(3):
        env.load([_ev(10 + i, "c", day=3)])
    assert values(env.query(DAU)) == [1, 1, 0, 1]
    after = _entry(env)
    assert after.rollups.any_event[date(2024, 3, 1)] is not before.rollups.any_event[date(2024, 3, 1)]
    again = _entry(env)
    env.load([_ev(20, "d", day=0)])  # one commit: known again
    assert values(env.query(DAU)) == [2, 1, 0, 1]
    assert _entry(env).rollups.any_event[date(2024, 3, 4)] is again.rollups.any_event[date(2024, 3, 4)]


def test_the_change_log_knows_only_complete_runs_of_recorded_commits() -> None:
    log = change_log.ChangeLog(keep=3)
    known = change_log.Changes()
    known.add(1, frozenset({10}), ((5, 6),))
    known.add(2, frozenset({11}), ())
    known.add(1, frozenset({12}), ((7, 8),))
    log.record(2, known)
    other = change_log.Changes()
    other.add(2, frozenset({13}), ())
    log.record(4, other)
    assert log.since(0, 4, 1) == change_log.ProjectChange(frozenset({10, 12}), ((5, 6), (7, 8)))
    assert log.since(0, 4, 2) == change_log.ProjectChange(frozenset({11, 13}))
    assert log.since(2, 4, 1) == change_log.ProjectChange()
    assert log.since(4, 4, 1) == change_log.ProjectChange()
    assert log.since(0, 6, 1) is None  # the commit ending at 6 is not recorded (yet)
    assert log.since(1, 4, 1) is None and log.since(4, 2, 1) is None  # not quiet generations
    log.record(6, change_log.Changes(known=False))
    assert log.since(0, 6, 1) is None and log.since(4, 6, 1) is None
    log.record(8, None)
    log.record(10, change_log.Changes())
    assert log.since(8, 10, 1) == change_log.ProjectChange()
    assert log.since(0, 10, 1) is None  # the first commits were forgotten (three kept)


def test_the_change_log_forgets_the_oldest_appended_sets_past_its_budget() -> None:
    log = change_log.ChangeLog(keep=10, sets_bytes=3 * (64 + 4 * 10))  # three sets of ten persons
    for g in range(1, 5):
        changes = change_log.Changes()
        changes.add(1, frozenset({g}), (), ((g, None, BitMap(range(10 * g, 10 * g + 10))),))
        log.record(2 * g, changes)
    assert log.since(0, 8, 1).sets is None  # the first commit's set was forgotten
    assert log.since(0, 8, 1).utc_days == frozenset({1, 2, 3, 4})  # its days are still known
    assert [(d, len(p)) for d, _, p in log.since(2, 8, 1).sets] == [(2, 10), (3, 10), (4, 10)]
    assert log.since(0, 2, 2) == change_log.ProjectChange()  # another project: nothing changed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sets_bytes=st.sampled_from([change_log.SETS_BYTES, 0, 300]),
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("events"),
                st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 40)), min_size=1, max_size=4),
            ),
            st.tuples(st.just("merge"), st.tuples(st.sampled_from("abcdef"), st.sampled_from("abcdef"))),
            st.tuples(st.just("compact"), st.just(None)),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_refreshed_answers_equal_raw_events(
    tmp_path_factory: pytest.TempPathFactory, sets_bytes: int, steps: list[Any]
) -> None:
    """Queries between random writes (events on random days, merges, compactions): every answer, updated
    from the appended sets, from the days read again (no sets remembered, or some) or read afresh, equals raw
    events (Env.query compares)."""
    specs = [
        {**DAU, "date_from": "2024-02-20", "date_to": "2024-04-10"},
        {**MAU, "date_from": "2024-03-01", "date_to": "2024-04-10"},
        {**RETENTION, "period": "week", "intervals": 6, "date_from": "2024-02-26", "date_to": "2024-04-07"},
    ]
    with Workspace.init(tmp_path_factory.mktemp("ws") / "ws") as ws:
        env = Env(ws, ws.create_project("p", "Europe/Berlin"))
        ws.store._shared.changes = change_log.ChangeLog(sets_bytes=sets_bytes)  # type: ignore[union-attr]
        for i, (kind, arg) in enumerate(steps):
            if kind == "events":
                env.load(
                    [{**ev("x", who, (datetime(2024, 3, 1, 23, 30) + timedelta(days=d)).isoformat() + "Z"),
                      "uuid": f"{i}-{j}"} for j, (who, d) in enumerate(arg)]
                )  # fmt: skip
            elif kind == "merge":
                env.load([{**ev("$identify", arg[0], "2024-03-10T00:00:00Z", **{"$anon_distinct_id": arg[1]}),
                           "uuid": f"m{i}"}])  # fmt: skip
            else:
                ws.store.compact_rollups(env.project.id)
            for spec in specs:
                env.query(spec)


def test_compaction_between_queries_reads_afresh_with_the_same_answers(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_store, "COMPACT_AFTER", 10**9)
    for i in range(8):
        env.load([_ev(i, f"u{i % 3}"), _ev(i, f"v{i}", "y")])
    before = [env.query(spec) for spec in (DAU, MAU, RETENTION, ADOPTION)]
    entry = _entry(env)
    assert entry is not None and env.ws.store.compact_rollups(env.project.id) > 0
    assert [env.query(spec) for spec in (DAU, MAU, RETENTION, ADOPTION)] == before
    assert _entry(env) is not None and _entry(env).generation != entry.generation


def test_a_rebuild_in_another_timezone_between_queries_stops_the_rollup_answering(env: Env) -> None:
    env.load([_ev(0, "a")])
    assert values(env.query(DAU)) == [1, 0, 0, 0] and env.engine.last_source == "rollups"
    assert env.ws.store.ensure_rollups(env.project.id, "America/New_York")
    assert values(env.query(DAU)) == [1, 0, 0, 0] and env.engine.last_source == "events"
    assert _sets(env) is None


def test_a_write_through_another_store_of_the_same_file_is_seen(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    with Workspace.init(home) as ws:
        project = ws.create_project("p", "UTC")
        env = Env(ws, project)
        env.load([_ev(0, "a")])
        assert values(env.query(DAU)) == [1, 0, 0, 0]
        with Workspace.open(home) as ws2:  # one DuckDB database, two EventStore objects
            Env(ws2, project).load([_ev(0, "b"), _ev(1, "b")])
        assert values(env.query(DAU)) == [2, 1, 0, 0] and env.engine.last_source == "rollups"


def test_reads_while_a_commit_is_under_way_are_answered_but_not_cached(env: Env) -> None:
    env.load([_ev(0, "a"), _ev(1, "b")])
    store = env.ws.store
    rollup_store.commit_begins(store)
    try:
        assert values(env.query(DAU)) == [1, 1, 0, 0] and env.engine.last_source == "rollups"
        assert _entry(env) is None
    finally:
        rollup_store.commit_ended(store)
    env.query(DAU)
    assert _entry(env) is not None


def test_a_longer_range_loads_the_missing_days(env: Env) -> None:
    env.load([_ev(0, "a", day=d) for d in range(4)] + [_ev(9, "b", day=1), _ev(9, "b", "y", day=3)])
    env.query({**DAU, "date_from": "2024-03-03", "date_to": "2024-03-03"})
    entry = _entry(env)
    assert entry is not None and entry.spans[None][0] > date(2024, 3, 1) - timedelta(days=30)
    wider = {**DAU, "date_from": "2024-01-20", "date_to": "2024-03-10"}
    assert sum(values(env.query(wider))) == 6  # a on four days, b on two
    assert _entry(env).spans[None] == (date(2024, 1, 20) - timedelta(days=30), date(2024, 3, 10))
    env.query({**MAU, "date_to": "2024-04-15"})
    env.query(ADOPTION)  # another event joins the entry
    assert set(_entry(env).spans) == {None, "y"}


def test_the_cache_drops_least_recently_used_projects_past_its_budget(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollup_cache, "CACHE_BYTES", 1)
    other = env.other_project("other")
    env.load([_ev(0, "a")])
    other.load([_ev(0, "b"), _ev(0, "c")])
    for _ in range(2):
        assert values(env.query(DAU))[0] == 1 and values(other.query(DAU))[0] == 2
        assert list(rollup_cache._CACHES[env.ws.store].entries) == [other.project.id]


def test_queries_while_writes_commit_end_current(env: Env) -> None:
    """Readers race a writer (their answers cannot be compared with raw events read a moment later); once
    it is done, every query equals raw events: nothing stale was kept."""
    errors: list[BaseException] = []
    done = threading.Event()
    answered: list[int] = []

    def read() -> None:
        engine = DuckDBEngine(env.ws.store, rollups=True)
        try:
            while not done.is_set():
                for spec in (DAU, MAU, RETENTION):
                    run_query(engine, env.project, parse_spec(spec))
                    answered.append(engine.last_source == "rollups")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(12):
            env.load([_ev(i, f"p{i}"), _ev(i + 1, f"p{i // 2}", "y")])
            if i % 4 == 3:
                env.load(
                    [{**ev("$identify", f"p{i}", "2024-03-02T00:00:00Z", **{"$anon_distinct_id": f"p{i - 1}"}),
                      "uuid": f"m{i}"}]
                )  # fmt: skip
    finally:
        done.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]
    assert all(answered) and answered
    for spec in (DAU, MAU, RETENTION, ADOPTION):
        env.query(spec)
        assert env.engine.last_source == "rollups"


# ---- the shortcuts ----------------------------------------------------------------------------------------
day_sets = st.lists(st.lists(st.integers(0, 300), max_size=20), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(day_sets, st.integers(1, 12), st.integers(0, 5))
def test_rolling_windows_equal_plain_unions(sets: list[list[int]], window: int, offset: int) -> None:
    first = date(2024, 3, 1)
    r = Rollups(1, "UTC")
    for i, persons in enumerate(sets):
        if persons:
            r.any_event[first + timedelta(days=i - offset)] = BitMap(persons)
    lo, hi = first, first + timedelta(days=len(sets) - 1)
    want = [
        len(BitMap.union(BitMap(), *(r.day_set(d - timedelta(days=k), None) for k in range(window))))
        for d in rollups._days(lo, hi)
    ]
    assert rollups._rolling(r, None, lo, hi, window) == want


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=30), st.lists(st.integers(0, 60)))
def test_canonical_maps_every_absorbed_id_to_its_final_person(
    merges: list[tuple[int, int]], persons: list[int]
) -> None:
    r = Rollups(1, "UTC")
    for absorbed, into in merges:  # as the store records them: an absorbed person never absorbs again later
        if absorbed not in r.absorbed and into not in r.absorbed and absorbed != into:
            r.record_merge(absorbed, into)
    assert r.canonical(BitMap(persons)) == BitMap(r.final(p) for p in persons)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 200), max_size=40), max_size=40))
def test_times_seen_counts_each_person_once_by_the_number_of_sets_holding_it(sets: list[list[int]]) -> None:
    seen = Counter(p for s in sets for p in set(s))
    assert rollups._times_seen([BitMap(s) for s in sets]) == Counter(seen.values())


def test_deleting_a_project_invalidates_its_cached_sets_and_id_index(env: Env) -> None:
    env.load([_ev(0, "a"), _ev(1, "b")])
    assert values(env.query(DAU)) == [1, 1, 0, 0]
    assert env.ws.store._ids.loaded(env.project.id)
    env.ws.store.delete_project(env.project.id)
    assert env.ws.store._ids.loaded(env.project.id) == []
    assert env.ws.store.fetchall("SELECT count(*) FROM events WHERE project_id = ?", [env.project.id]) == [
        (0,)
    ]
    assert values(env.query(DAU)) == [0, 0, 0, 0]  # not the cached sets of before the delete
    env.load([_ev(0, "a")])  # the same ids are new again
    assert values(env.query(DAU)) == [1, 0, 0, 0]
