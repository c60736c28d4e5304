"""Per-day aggregates of the materialised sessions (docs/queries/sessions.md, "Materialised sessions").

The tables (see :mod:`kpilot.store.schema`): ``session_day_projects(project_id, timezone, built_at)``,
``session_days(project_id, day, sessions, duration_us, engaged, min_run_start, max_end, max_run_seconds,
persons)`` and ``session_day_durations(project_id, day, bucket, n, durations)``: per local day of the
project timezone, the aggregates of the sessions starting that day (:class:`Day`; persons as a roaring
bitmap, durations as ascending float64 slices by value). :func:`build_days` builds them from the stored
sessions; :func:`apply_changes` applies the sessions one write of :mod:`kpilot.store.session_store`
deletes and writes, in the write's transaction.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from kpilot.store import duration_slices as slices
from kpilot.store.duration_slices import duration_slices, slice_counts, value_buckets
from kpilot.store.rollup_store import bitmap_from, day_chunks, utc_days

__all__ = [
    "DAY_ENGAGED_SECONDS",
    "DAY_PAGEVIEWS",
    "Day",
    "apply_changes",
    "build_days",
    "day_timezone",
    "days_from_rows",
    "drop_days",
    "duration_slices",
    "load_days",
    "measures_sql",
    "slice_counts",
    "value_buckets",
]

NONE = np.iinfo(np.int64).max
"""The largest int64: no run-start hint for a session element, an empty bound for a day."""


def seconds(us: np.ndarray) -> np.ndarray:
    """Microseconds since 1970 as the seconds the queries compare."""
    # The raw-event query compares epoch seconds as doubles (epoch(ts) = microseconds / 1e6); doing the
    # same here makes every gap and cap decision the same, bit for bit.
    return us.astype(np.float64) / 1e6


def micros_of(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as microseconds since 1970."""
    return np.asarray(col.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


DAY_ENGAGED_SECONDS = 10
"""The day aggregates count engaged sessions by the query's default rule: over 10 s, or 2+ page views."""
DAY_PAGEVIEWS = ("$pageview", "$screen")
"""The default ``pageview_events`` (``key_events`` default to none)."""

_US = 1_000_000
_DAY_US = 86_400 * _US
_DAY_COLUMNS = "day, sessions, duration_us, engaged, min_run_start, max_end, max_run_seconds, persons"


@dataclass(slots=True)
class Day:
    """The sessions that start on one local day: what a query needs of them, without the sessions."""

    sessions: int
    duration_us: int
    """Sum of the durations in microseconds (exact)."""
    engaged: int
    """Sessions engaged by the default rule (:data:`DAY_ENGAGED_SECONDS`, :data:`DAY_PAGEVIEWS`)."""
    durations: np.ndarray
    """Every duration in seconds, ascending, as the query computes it (``epoch(end) - epoch(start)``)."""
    persons: BitMap
    min_run_start: int
    """Microseconds; at most the earliest run start of the day's sessions (a bound: kept on removals)."""
    max_end: int
    """Microseconds; at least the latest end of the day's sessions (a bound)."""
    max_run_seconds: float
    """At least the longest ``end - run_start`` of the day's sessions, in seconds (a bound)."""


def _local(col: str, timezone: str) -> str:
    if timezone == "UTC":
        return col
    quoted = "'" + timezone.replace("'", "''") + "'"
    return f"timezone({quoted}, {col} AT TIME ZONE 'UTC')"


def measures_sql(source: str, timezone: str, extra: str = "") -> str:
    """SELECT per session of ``source`` (columns of ``person_sessions``): its local ``day`` (days since
    1970-01-01), person_id, duration (seconds, the query's double), duration_us, engaged (default rule),
    run_start_us, end_us and run_seconds, plus ``extra`` columns."""
    dur = "(epoch(end_ts) - epoch(start_ts))"
    names = ", ".join("'" + n + "'" for n in DAY_PAGEVIEWS)
    pageviews = f"coalesce(list_sum([x.n FOR x IN events IF x.event IN ({names})]), 0)"
    day = f"CAST(CAST({_local('start_ts', timezone)} AS DATE) - DATE '1970-01-01' AS INTEGER)"
    return (
        f"SELECT {day} AS day, person_id, {dur} AS duration,\n"
        f"  epoch_us(end_ts) - epoch_us(start_ts) AS duration_us,\n"
        f"  ({dur} > {DAY_ENGAGED_SECONDS} OR {pageviews} >= 2) AS engaged,\n"
        f"  epoch_us(run_start) AS run_start_us, epoch_us(end_ts) AS end_us,\n"
        f"  epoch(end_ts) - epoch(run_start) AS run_seconds{extra}\n"
        f"FROM {source}"
    )


def _np(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=dtype)


def _measure_columns(rows: pa.Table) -> tuple[np.ndarray, ...]:
    """The columns of :func:`measures_sql` rows as numpy arrays: day, person, duration (seconds), duration
    in microseconds, engaged, run start and end (microseconds), run length (seconds)."""
    return (
        _np(rows, "day", np.int64),
        _np(rows, "person_id", np.int64),
        _np(rows, "duration", np.float64),
        _np(rows, "duration_us", np.int64),
        _np(rows, "engaged", np.int64),
        _np(rows, "run_start_us", np.int64),
        _np(rows, "end_us", np.int64),
        _np(rows, "run_seconds", np.float64),
    )


def _measures(cur: duckdb.DuckDBPyConnection, sessions: pa.Table, timezone: str) -> tuple[np.ndarray, ...]:
    """What :func:`measures_sql` gives for ``sessions`` (rows of ``person_sessions``), in their order, as
    :func:`_measure_columns` returns it, computed here: the same doubles (``epoch`` is microseconds / 1e6),
    the same integers; only the local day of a timezone other than UTC is asked of DuckDB."""
    start, end, run_start = (micros_of(sessions.column(c)) for c in ("start_ts", "end_ts", "run_start"))
    start_s, end_s = seconds(start), seconds(end)
    duration = end_s - start_s
    events = sessions.column("events").combine_chunks()
    flat = pc.list_flatten(events)
    views = np.asarray(
        pc.is_in(flat.field("event").cast(pa.string()), pa.array(DAY_PAGEVIEWS)).to_numpy(
            zero_copy_only=False
        )
    )
    parents = pc.list_parent_indices(events).to_numpy().astype(np.int64)
    counts = flat.field("n").to_numpy(zero_copy_only=False).astype(np.int64)
    pageviews = np.bincount(parents[views], weights=counts[views], minlength=len(start))
    if timezone == "UTC":
        day = np.floor_divide(start, _DAY_US)
    else:
        cur.register(
            "session_starts", pa.table({"i": np.arange(len(start)), "start_ts": sessions.column("start_ts")})
        )
        local = f"CAST(CAST({_local('start_ts', timezone)} AS DATE) - DATE '1970-01-01' AS BIGINT)"
        day = _np(
            cur.sql(f"SELECT {local} AS day FROM session_starts ORDER BY i").to_arrow_table(), "day", np.int64
        )
        cur.unregister("session_starts")
    return (
        day,
        _np(sessions, "person_id", np.int64),
        duration,
        end - start,
        ((duration > DAY_ENGAGED_SECONDS) | (pageviews >= 2)).astype(np.int64),
        run_start,
        end,
        end_s - seconds(run_start),
    )


def days_from_rows(rows: pa.Table) -> dict[int, Day]:
    """Day aggregates of the rows of :func:`measures_sql` (sorted by day, then duration)."""
    if rows.num_rows == 0:
        return {}
    day, person, duration, duration_us, engaged, run_start, end, run_seconds = _measure_columns(rows)
    idx = np.flatnonzero(np.concatenate([[True], day[1:] != day[:-1]]))
    counts = np.diff(np.append(idx, len(day)))
    sums = np.add.reduceat(duration_us, idx)
    engaged_n = np.add.reduceat(engaged, idx)
    min_rs = np.minimum.reduceat(run_start, idx)
    max_end = np.maximum.reduceat(end, idx)
    max_run = np.maximum.reduceat(run_seconds, idx)
    out: dict[int, Day] = {}
    for i, (a, n) in enumerate(zip(idx.tolist(), counts.tolist(), strict=True)):
        out[int(day[a])] = Day(
            sessions=n,
            duration_us=int(sums[i]),
            engaged=int(engaged_n[i]),
            durations=duration[a : a + n].copy(),
            persons=bitmap_from(person[a : a + n]),
            min_run_start=int(min_rs[i]),
            max_end=int(max_end[i]),
            max_run_seconds=float(max_run[i]),
        )
    return out


def day_timezone(cur: duckdb.DuckDBPyConnection, project_id: int) -> str | None:
    """The timezone of ``project_id``'s day aggregates, or None when it has none."""
    rows = cur.execute(
        "SELECT timezone FROM session_day_projects WHERE project_id = ?", [project_id]
    ).fetchall()
    return str(rows[0][0]) if rows else None


def drop_days(cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
    cur.execute("DELETE FROM session_day_projects WHERE project_id = ?", [project_id])
    cur.execute("DELETE FROM session_days WHERE project_id = ?", [project_id])
    slices.delete_project(cur, project_id)


def _write_days(cur: duckdb.DuckDBPyConnection, project_id: int, days: dict[int, Day]) -> None:
    """Insert rows and duration slices for ``days`` (the caller deleted their old rows); days without
    sessions get none."""
    _write_day_rows(cur, project_id, days)
    keep = sorted(d for d, agg in days.items() if agg.sessions > 0)
    slices.insert_days(cur, project_id, keep, [days[d].durations for d in keep])


def _write_day_rows(cur: duckdb.DuckDBPyConnection, project_id: int, days: dict[int, Day]) -> None:
    """Insert the ``session_days`` rows of ``days`` (not their slices); days without sessions get none."""
    keep = sorted(d for d, agg in days.items() if agg.sessions > 0)
    if not keep:
        return
    aggs = [days[d] for d in keep]
    table = pa.table(
        {
            "day": pa.array(keep, pa.int32()),
            "sessions": pa.array([a.sessions for a in aggs], pa.int64()),
            "duration_us": pa.array([a.duration_us for a in aggs], pa.int64()),
            "engaged": pa.array([a.engaged for a in aggs], pa.int64()),
            "min_run_start": pa.array([a.min_run_start for a in aggs], pa.int64()),
            "max_end": pa.array([a.max_end for a in aggs], pa.int64()),
            "max_run_seconds": pa.array([a.max_run_seconds for a in aggs], pa.float64()),
            "persons": pa.array([a.persons.serialize() for a in aggs], pa.binary()),
        }
    )
    cur.register("session_day_rows", table)
    cur.execute(
        """INSERT INTO session_days
           SELECT ?, DATE '1970-01-01' + day, sessions, duration_us, engaged, make_timestamp(min_run_start),
                  make_timestamp(max_end), max_run_seconds, persons
           FROM session_day_rows""",
        [project_id],
    )
    cur.unregister("session_day_rows")


_NO_DURATIONS = np.zeros(0, np.float64)


def _day_of(row: tuple[Any, ...]) -> tuple[int, Day]:
    day, sessions, duration_us, engaged, min_rs, max_end, max_run, persons = row
    return (day - _EPOCH_DAY).days, Day(
        sessions=int(sessions),
        duration_us=int(duration_us),
        engaged=int(engaged),
        durations=_NO_DURATIONS,
        persons=BitMap.deserialize(persons),
        min_run_start=_micros(min_rs),
        max_end=_micros(max_end),
        max_run_seconds=float(max_run),
    )


_EPOCH_DAY = date(1970, 1, 1)
_EPOCH_TS = datetime(1970, 1, 1)


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH_TS
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def load_days(
    cur: duckdb.DuckDBPyConnection, project_id: int, first: int, last: int, durations: bool = True
) -> dict[int, Day]:
    """The stored day aggregates of days ``first``..``last`` (days since 1970-01-01); without
    ``durations``, their ``durations`` are left empty (read slices with :func:`duration_slices`)."""
    where = "project_id = ? AND day BETWEEN DATE '1970-01-01' + ?::INTEGER AND DATE '1970-01-01' + ?::INTEGER"
    rows = cur.execute(f"SELECT {_DAY_COLUMNS} FROM session_days WHERE {where}", [project_id, first, last])
    days = dict(_day_of(r) for r in rows.fetchall())
    if durations:
        slices.fill_durations(cur, project_id, first, last, days)
    return days


BUILD_DAYS = 7
"""A day build reads the sessions of this many days at a time."""


def build_days(cur: duckdb.DuckDBPyConnection, project_id: int, timezone: str) -> int:
    """(Re)build ``project_id``'s day aggregates (local days in ``timezone``) from its stored sessions;
    returns the number of days."""
    drop_days(cur, project_id)
    cur.execute(
        "INSERT INTO session_day_projects VALUES (?, ?, ?)",
        [project_id, timezone, datetime.now(UTC).replace(tzinfo=None)],
    )
    written = 0
    # Local days are within a day of UTC ones: chunks of UTC days with a margin, then exact local days.
    for d0, d1 in day_chunks(utc_days(cur, "person_sessions", "start_ts", project_id), BUILD_DAYS):
        table = cur.sql(
            f"""SELECT * FROM ({measures_sql("person_sessions", timezone)}
                               WHERE project_id = $1 AND start_ts >= make_timestamp($2::BIGINT)
                                 AND start_ts < make_timestamp($3::BIGINT))
                WHERE day BETWEEN $4 AND $5 ORDER BY day, duration""",
            params=[project_id, (d0 - 2) * _DAY_US, (d1 + 3) * _DAY_US, d0, d1],
        ).to_arrow_table()
        days = days_from_rows(table)
        _write_days(cur, project_id, days)
        written += len(days)
    return written


def _same_rows(columns: list[np.ndarray], plus: np.ndarray, minus: np.ndarray) -> bool:
    """Whether the rows ``plus`` and ``minus`` hold the same multiset of values of ``columns``."""
    p = [c[plus] for c in columns]
    m = [c[minus] for c in columns]
    po, mo = np.lexsort(p[::-1]), np.lexsort(m[::-1])
    return all(np.array_equal(x[po], y[mo]) for x, y in zip(p, m, strict=True))


def apply_changes(
    cur: duckdb.DuckDBPyConnection,
    project_id: int,
    timezone: str,
    removed: pa.Table | None,
    added: list[pa.Table],
    absorbed: set[int],
) -> None:
    """Apply a write's session changes to the day aggregates: ``removed`` stored sessions (``orig``: the
    person they were stored under) and ``added`` rows of ``person_sessions``; ``absorbed``: persons merged
    away in this write (they have no session left)."""
    cols = ["person_id", "start_ts", "end_ts", "run_start", "events"]
    parts = []
    if removed is not None and removed.num_rows:
        parts.append((removed.select(["orig", *cols[1:]]).rename_columns(cols), -1))
    parts.extend((t.select(cols), 1) for t in added if t.num_rows)
    if not parts:
        return
    delta = pa.concat_tables([t for t, _ in parts], promote_options="permissive")
    sign = np.concatenate([np.full(t.num_rows, sg, np.int64) for t, sg in parts])
    measures = _measures(cur, delta, timezone)
    order = np.lexsort((measures[2], measures[0]))  # by day, then duration
    day, person, duration, duration_us, engaged, run_start, end, run_seconds = (m[order] for m in measures)
    sign = sign[order]
    idx = np.flatnonzero(np.concatenate([[True], day[1:] != day[:-1]]))
    bounds = np.append(idx, len(day)).tolist()
    # Per day: what changes. A session deleted and written again as it was (the upkeep re-splits whole runs)
    # changes nothing; a merge that only re-keys sessions changes the persons of their days.
    changes: dict[int, tuple[np.ndarray, np.ndarray, set[int], set[int]]] = {}
    plain: dict[int, slice] = {}
    for a, b in itertools.pairwise(bounds):
        d = int(day[a])
        plus, minus = sign[a:b] > 0, sign[a:b] < 0
        p_dur, m_dur = duration[a:b][plus], duration[a:b][minus]
        # (the exact integer sums tell most changed days apart before the sort that proves sameness)
        same_sessions = (
            len(p_dur) == len(m_dur)
            and int(duration_us[a:b][plus].sum()) == int(duration_us[a:b][minus].sum())
            and int(end[a:b][plus].sum()) == int(end[a:b][minus].sum())
        ) and _same_rows([c[a:b] for c in (duration_us, engaged, run_start, end)], plus, minus)
        p_persons = set(person[a:b][plus].tolist())
        m_persons = set(person[a:b][minus].tolist())
        if same_sessions and p_persons == m_persons:
            continue
        changes[d] = (p_dur, m_dur, p_persons, m_persons)
        if not same_sessions:
            plain[d] = slice(a, b)
    if not changes:
        return
    # Persons losing a session on a day may keep another one there: those of them not merged away are
    # looked up in the stored sessions (already up to date).
    maybe_gone = [(d, p) for d, (_, _, pp, mp) in changes.items() for p in mp - pp if p not in absorbed]
    still: set[tuple[int, int]] = set()
    if maybe_gone:
        cur.register(
            "session_gone",
            pa.table(
                {
                    "day": pa.array([d for d, _ in maybe_gone], pa.int64()),
                    "person_id": pa.array([p for _, p in maybe_gone], pa.int64()),
                }
            ),
        )
        days_lo = min(d for d, _ in maybe_gone) - 2
        days_hi = max(d for d, _ in maybe_gone) + 3
        found = cur.sql(
            f"""SELECT DISTINCT m.day, m.person_id
                FROM ({measures_sql("person_sessions", timezone)}
                      WHERE project_id = $1 AND start_ts >= make_timestamp($2::BIGINT)
                        AND start_ts < make_timestamp($3::BIGINT)
                        AND person_id IN (SELECT person_id FROM session_gone)) m
                JOIN session_gone g ON g.day = m.day AND g.person_id = m.person_id""",
            params=[project_id, days_lo * _DAY_US, days_hi * _DAY_US],
        ).fetchall()
        cur.unregister("session_gone")
        still = {(int(d), int(p)) for d, p in found}
    cur.register("session_touched", pa.table({"day": pa.array(sorted(changes), pa.int32())}))
    touched = "project_id = ? AND day IN (SELECT DATE '1970-01-01' + day FROM session_touched)"
    stored = dict(
        _day_of(r)
        for r in cur.execute(
            f"SELECT {_DAY_COLUMNS} FROM session_days WHERE {touched}", [project_id]
        ).fetchall()
    )
    cur.execute(f"DELETE FROM session_days WHERE {touched}", [project_id])
    cur.unregister("session_touched")
    edit = slices.SliceEdit(cur, project_id, sorted(plain))
    out: dict[int, Day] = {}
    for d, (p_dur, m_dur, p_persons, m_persons) in changes.items():
        agg = stored.get(d) or Day(0, 0, 0, np.zeros(0, np.float64), BitMap(), NONE, -NONE, 0.0)
        persons = BitMap(agg.persons)
        gone = [p for p in m_persons - p_persons if (d, p) not in still]
        if gone:
            persons.difference_update(BitMap(gone))
        persons.update(p_persons)
        agg.persons = persons
        if d in plain:
            sl = plain[d]
            sg = sign[sl]
            agg.sessions += int(sg.sum())
            agg.duration_us += int((duration_us[sl] * sg).sum())
            agg.engaged += int((engaged[sl] * sg).sum())
            plus = sg > 0
            if plus.any():
                agg.min_run_start = min(agg.min_run_start, int(run_start[sl][plus].min()))
                agg.max_end = max(agg.max_end, int(end[sl][plus].max()))
                agg.max_run_seconds = max(agg.max_run_seconds, float(run_seconds[sl][plus].max()))
            if agg.sessions != edit.change(d, p_dur, m_dur):
                raise AssertionError("session day aggregates out of step with the stored sessions")
        out[d] = agg
    _write_day_rows(cur, project_id, out)
    edit.write()
