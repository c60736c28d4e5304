"""The session durations per day held as slices of change rows (kpilot.store.duration_slices), against a
plain multiset per day."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.store import duration_slices as ds
from kpilot.store.schema import SCHEMA_SQL

PROJECT = 3


@pytest.fixture
def cur() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(":memory:")
    con.execute(SCHEMA_SQL)
    yield con
    con.close()


def rows_per_slice(cur: duckdb.DuckDBPyConnection) -> Counter[tuple[int, int]]:
    got = cur.execute(
        "SELECT CAST(day - DATE '1970-01-01' AS INTEGER), bucket FROM session_day_durations WHERE project_id = ?",
        [PROJECT],
    ).fetchall()
    return Counter((int(d), int(b)) for d, b in got)


def check(cur: duckdb.DuckDBPyConnection, reference: dict[int, list[float]]) -> None:
    """Every reader gives the reference multisets, and no slice has more than MAX_ROWS rows."""
    days = {d: sorted(v) for d, v in reference.items() if v}

    class Holder:
        durations: np.ndarray = np.zeros(0)

    holders = {d: Holder() for d in range(-5, 40)}
    ds.fill_durations(cur, PROJECT, -5, 40, holders)
    assert {d: h.durations.tolist() for d, h in holders.items() if len(h.durations)} == days
    counts = ds.slice_counts(cur, PROJECT, -5, 40)
    expected = Counter(
        (d, int(b)) for d, values in days.items() for b in ds.value_buckets(np.array(values, np.float64))
    )
    got = zip(counts["day"].tolist(), counts["bucket"].tolist(), counts["n"].tolist(), strict=True)
    assert {(d, b): n for d, b, n in got} == dict(expected)
    assert list(counts["day"]) == sorted(counts["day"])
    wanted = sorted(expected)
    slices = ds.duration_slices(cur, PROJECT, wanted)
    for d, b in wanted:
        values = [v for v in days[d] if int(ds.value_buckets(np.array([v]))[0]) == b]
        assert slices[(d, b)].tolist() == values
    assert max(rows_per_slice(cur).values(), default=0) <= ds.MAX_ROWS


def edit(cur: duckdb.DuckDBPyConnection, changes: dict[int, tuple[list[float], list[float]]]) -> int:
    """One write: per day, durations added and removed; returns the day totals the edit reports."""
    e = ds.SliceEdit(cur, PROJECT, sorted(changes))
    total = 0
    for d in sorted(changes):
        added, removed = changes[d]
        total += e.change(d, np.sort(np.array(added, np.float64)), np.sort(np.array(removed, np.float64)))
    e.write()
    return total


# a few values per slice, so that slices collect several rows and fold
VALUES = st.sampled_from([0.0, 0.5, 1.0, 3.0, 3.1, 40.0, 41.0, 1800.0, 86_400.0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.lists(VALUES, max_size=6), st.integers(0, 4)), max_size=3),
        min_size=1,
        max_size=25,
    )
)
def test_change_rows_and_folds_keep_every_reader_exact(
    writes: list[list[tuple[int, list[float], int]]],
) -> None:
    con = duckdb.connect(":memory:")
    con.execute(SCHEMA_SQL)
    reference: dict[int, list[float]] = {}
    ds.insert_days(con, PROJECT, [10], [np.array([1.0, 1.0, 2.0, 40.0, 1800.0])])
    reference[10] = [1.0, 1.0, 2.0, 40.0, 1800.0]
    for write in writes:
        changes: dict[int, tuple[list[float], list[float]]] = {}
        for day, added, n_removed in write:
            have = sorted(reference.get(day + 9, []))
            # a sub-multiset of what the day holds before the write (as the upkeep removes stored sessions)
            changes.setdefault(day + 9, (added, have[n_removed % 2 :: 2][:n_removed]))
        expected_total = 0
        for day, (a, r) in changes.items():
            values = Counter(reference.get(day, [])) + Counter(a)
            values.subtract(Counter(r))
            reference[day] = sorted(values.elements())
            expected_total += len(reference[day])
        assert edit(con, changes) == expected_total
        check(con, reference)
    con.close()


def test_a_small_change_appends_rows_and_a_large_one_folds(cur: duckdb.DuckDBPyConnection) -> None:
    base = np.sort(np.linspace(10.0, 10.49, 100))  # one slice: 10.0 .. 10.5 share their top 16 bits
    assert len(set(ds.value_buckets(base).tolist())) == 1
    ds.insert_days(cur, PROJECT, [5], [base])
    key = (5, int(ds.value_buckets(base)[0]))
    edit(cur, {5: ([10.25, 10.3], [float(base[0])])})
    assert rows_per_slice(cur)[key] == 3  # the stored row, one of additions, one of removals
    stored = cur.execute(
        "SELECT n FROM session_day_durations WHERE project_id = ? ORDER BY n", [PROJECT]
    ).fetchall()
    assert [n for (n,) in stored] == [-1, 2, 100]  # the 100 durations were not written again
    reference = {5: sorted([*base.tolist()[1:], 10.25, 10.3])}
    check(cur, reference)
    # changes as large as the slice: folded into one row
    more = np.linspace(10.1, 10.4, 99)
    edit(cur, {5: (more.tolist(), [])})
    assert rows_per_slice(cur)[key] == 1
    reference[5] = sorted([*reference[5], *more.tolist()])
    check(cur, reference)


def test_many_small_changes_fold_at_the_row_limit(cur: duckdb.DuckDBPyConnection) -> None:
    ds.insert_days(cur, PROJECT, [5], [np.linspace(10.0, 10.49, 1000)])
    reference = {5: np.linspace(10.0, 10.49, 1000).tolist()}
    seen = []
    for i in range(3 * ds.MAX_ROWS):
        edit(cur, {5: ([10.0 + i / 100], [])})
        reference[5].append(10.0 + i / 100)
        seen.append(max(rows_per_slice(cur).values()))
    check(cur, {5: sorted(reference[5])})
    assert max(seen) == ds.MAX_ROWS and min(seen[ds.MAX_ROWS :]) == 1  # folded, then grew again


def test_a_removal_of_what_is_not_stored_is_found(cur: duckdb.DuckDBPyConnection) -> None:
    ds.insert_days(cur, PROJECT, [5], [np.array([10.0] * 10)])
    edit(cur, {5: ([], [15.0])})  # a small change: appended, found by the readers
    with pytest.raises(AssertionError, match="out of step"):
        ds.fill_durations(cur, PROJECT, 5, 5, {})
    with pytest.raises(AssertionError, match="out of step"):  # folding the slice: found by the write
        edit(cur, {5: ([], [15.0])})


def test_a_duration_removed_and_added_again_changes_nothing(cur: duckdb.DuckDBPyConnection) -> None:
    ds.insert_days(cur, PROJECT, [5], [np.array([10.0, 20.0, 30.0])])
    before = cur.execute("SELECT * FROM session_day_durations ORDER BY bucket").fetchall()
    assert edit(cur, {5: ([20.0], [20.0])}) == 3
    assert cur.execute("SELECT * FROM session_day_durations ORDER BY bucket").fetchall() == before
