"""Deduplication through the in-memory id index: exact window semantics, budget, commit-only learning."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpilot.collect.normalize import Normalized
from kpilot.store.duckdb_store import DEDUP_WINDOW, EventStore, uuid_hash
from kpilot.store.id_index import IdIndex, days_of

T0 = datetime(2024, 3, 10, 12, 0)


def ev(uuid: str, ts: datetime, name: str = "e", who: str = "u") -> Normalized:
    return Normalized(uuid=uuid, event=name, distinct_id=who, timestamp=ts, properties={})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "events.duckdb")
    yield s
    s.close()


def stored(store: EventStore, project: int = 1) -> list[tuple[str, datetime]]:
    return [
        (r[0], r[1])
        for r in store.fetchall(
            "SELECT uuid, timestamp FROM events WHERE project_id = ? ORDER BY uuid, timestamp", [project]
        )
    ]


def test_days_of_floors_before_1970() -> None:
    ts = np.array(
        ["1969-12-31T23:59:59", "1970-01-01T00:00:00", "2024-03-10T12:00:00"], dtype="datetime64[us]"
    )
    assert days_of(ts).tolist() == [-1, 0, 19792]


@pytest.mark.parametrize(
    ("gap", "duplicate"),
    [
        (timedelta(0), True),
        (DEDUP_WINDOW, True),  # exactly a day apart still counts
        (DEDUP_WINDOW + timedelta(microseconds=1), False),
        (-DEDUP_WINDOW, True),
        (-DEDUP_WINDOW - timedelta(microseconds=1), False),
        (timedelta(days=5), False),
    ],
)
def test_window_is_a_day_either_side_of_each_event(
    store: EventStore, gap: timedelta, duplicate: bool
) -> None:
    store.write_batch(1, [ev("a", T0)])
    result = store.write_batch(1, [ev("a", T0 + gap)])
    assert (result.accepted, result.deduplicated) == ((0, 1) if duplicate else (1, 0))


def test_window_is_per_event_not_per_batch(store: EventStore) -> None:
    store.write_batch(1, [ev("a", T0)])
    # "a" three days later is new, even though the same batch holds an event next to the stored one
    result = store.write_batch(1, [ev("a", T0 + timedelta(days=3)), ev("b", T0 + timedelta(hours=1))])
    assert (result.accepted, result.deduplicated) == (2, 0)


def test_ids_are_per_project(store: EventStore) -> None:
    store.write_batch(1, [ev("a", T0)])
    assert store.write_batch(2, [ev("a", T0)]).accepted == 1
    assert store.write_batch(2, [ev("a", T0)]).deduplicated == 1


def test_index_learns_only_committed_writes(store: EventStore) -> None:
    store.write_batch(1, [ev("x", T0)])  # loads the day into the index

    def fail(_cur: object) -> None:
        raise RuntimeError("the caller's part of the transaction failed")

    with pytest.raises(RuntimeError):
        store.write_batch(1, [ev("a", T0)], also=fail)
    assert store.write_batch(1, [ev("a", T0)]).accepted == 1  # the rolled-back "a" was never stored
    assert store.write_batch(1, [ev("a", T0)]).deduplicated == 1


def test_index_is_loaded_from_what_an_earlier_process_stored(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    first = EventStore(path)
    first.write_batch(1, [ev(f"id{i}", T0 + timedelta(minutes=i)) for i in range(100)])
    first.close()
    again = EventStore(path)
    try:
        result = again.write_batch(1, [ev(f"id{i}", T0 + timedelta(minutes=i)) for i in range(50, 150)])
        assert (result.accepted, result.deduplicated) == (50, 50)
    finally:
        again.close()


def test_two_writers_of_one_file_share_the_index(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    one = EventStore(path)
    two = EventStore(path)
    try:
        assert one._ids is two._ids
        one.write_batch(1, [ev("x", T0)])
        two.write_batch(1, [ev("y", T0)])  # two's index holds the day now, including one's write
        assert one.write_batch(1, [ev("y", T0)]).deduplicated == 1
        assert two.write_batch(1, [ev("x", T0)]).deduplicated == 1
    finally:
        one.close()
        two.close()


def test_a_zero_budget_moves_every_needed_day_to_disk_and_stays_exact(tmp_path: Path) -> None:
    s = EventStore(tmp_path / "events.duckdb", id_index_mb=0)
    try:
        s.write_batch(1, [ev(f"id{i}", T0 + timedelta(hours=i)) for i in range(48)])
        assert s._ids.nbytes == 0 and s._ids.disk_bytes == 48 * 8
        (spill,) = tmp_path.glob(".kpilot-ids-*")
        assert spill.is_dir() and any(spill.iterdir())
        result = s.write_batch(1, [ev(f"id{i}", T0 + timedelta(hours=i)) for i in range(40, 60)])
        assert (result.accepted, result.deduplicated) == (12, 8)
        assert s._ids.loads == 1  # the days the second write needed were on disk, not read again
        # the first day (12 ids) is outside the second write's window: it went, files and all
        assert s._ids.nbytes == 0 and s._ids.disk_bytes == (60 - 12) * 8
    finally:
        s.close()
    assert not spill.exists()  # the run files go with the last writer of the store


def test_least_recently_used_days_go_first() -> None:
    index = IdIndex(budget_bytes=3 * 8)

    class Cur:  # a store with nothing in it: loading gives empty days
        def execute(self, _sql: str, _params: list[object]) -> Cur:
            return self

        def fetchnumpy(self) -> dict[str, np.ndarray]:
            return {"day": np.array([], dtype=np.int64), "uuid_hash": np.array([], dtype=np.uint64)}

    h = np.array([1, 2, 3], dtype=np.uint64)
    index.candidates(Cur(), 1, h, np.array([10, 10, 10]))  # type: ignore[arg-type]
    index.add(1, h, np.array([10, 10, 10]))
    assert index.nbytes == 24 and index.loaded(1) == [9, 10, 11]
    index.candidates(Cur(), 1, h[:1], np.array([20]))  # type: ignore[arg-type]
    index.add(1, h[:1], np.array([20]))  # over budget: the oldest day, 10, goes
    assert index.loaded(1) == [11, 19, 20, 21]
    assert index.nbytes == 8


def test_events_at_the_ends_of_time(store: EventStore) -> None:
    first, last = datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)
    store.write_batch(1, [ev("a", first), ev("b", last)])
    result = store.write_batch(1, [ev("a", first + timedelta(hours=3)), ev("b", last - timedelta(hours=3))])
    assert (result.accepted, result.deduplicated) == (0, 2)


# ---- against a plain-Python reference --------------------------------------------------------------------
_ts = st.integers(min_value=0, max_value=96).map(lambda h: T0 + timedelta(hours=h))
_batch = st.lists(st.tuples(st.sampled_from("abcdefgh"), _ts), min_size=0, max_size=8)


def reference(batches: list[list[tuple[str, datetime]]]) -> list[tuple[str, datetime]]:
    """The documented rule: in a batch the earliest of one id wins (first among equals); a row whose id is
    stored within a day of its timestamp is dropped."""
    kept: list[tuple[str, datetime]] = []
    for batch in batches:
        first: dict[str, tuple[str, datetime]] = {}
        for row in sorted(batch, key=lambda r: r[1]):  # sorted() is stable: first in the batch among equals
            first.setdefault(row[0], row)
        for uid, ts in first.values():
            if not any(k == uid and abs(t - ts) <= DEDUP_WINDOW for k, t in kept):
                kept.append((uid, ts))
    return sorted(kept)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_batch, min_size=1, max_size=6), budget=st.sampled_from([0, 64]))
def test_dedupe_matches_the_reference(
    tmp_path: Path, batches: list[list[tuple[str, datetime]]], budget: int
) -> None:
    path = tmp_path / f"p{abs(hash(str(batches)))}-{budget}.duckdb"
    s = EventStore(path, id_index_mb=budget)
    try:
        for i, batch in enumerate(batches):
            s.write_batch(1, [ev(uid, ts, name=f"b{i}") for uid, ts in batch])
        assert stored(s) == reference(batches)
    finally:
        s.close()
        path.unlink()


@pytest.mark.parametrize("uuid", ["", "abc", "0190c2a4-7e1f-7000-8000-1234567890ab", "é-✓-日本", "x" * 300])
def test_python_id_hash_is_duckdbs(uuid: str) -> None:
    import duckdb

    assert uuid_hash(uuid) == duckdb.execute("SELECT md5_number_lower(?)", [uuid]).fetchall()[0][0]


def test_ids_hashed_in_python_and_in_sql_deduplicate_each_other(store: EventStore) -> None:
    from kpilot.store.duckdb_store import canonical_batch

    table, merges, props = canonical_batch([ev("a", T0)], [T0])
    assert "uuid_hash" in table.column_names
    store.write_arrow(1, table, merges, props)
    unhashed = canonical_batch([ev("a", T0), ev("b", T0)], [T0, T0])[0].drop_columns(["uuid_hash"])
    result = store.write_arrow(1, unhashed, [], [])
    assert (result.accepted, result.deduplicated) == (1, 1)
    assert store.fetchall("SELECT count(*) FROM events WHERE uuid_hash = md5_number_lower(uuid)")[0][0] == 2
