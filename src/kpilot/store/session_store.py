"""Materialised sessions kept inside the event store (docs/queries/sessions.md, "Materialised sessions").

The tables (see :mod:`kpilot.store.schema`):

* ``session_projects(project_id, inactivity_seconds, max_seconds, built_at)``: which projects have
  materialised sessions, and the splitting parameters they were built with (kpilot's defaults: 30 minutes,
  24 hours).
* ``person_sessions(project_id, person_id, start_ts, end_ts, run_start, events)``: one row per session of
  every *current* person, built from all of the person's stored events: first and last event (UTC),
  the first event of the inactivity run the session belongs to (a run is a chain of events with no gap
  longer than the inactivity timeout; the ``max_hours`` cap cuts a run into sessions, measured from each
  session's start), and the number of events per event name (``LIST<STRUCT(event, n)>``).
* ``session_day_projects(project_id, timezone, built_at)``, ``session_days(project_id, day, sessions,
  duration_us, engaged, min_run_start, max_end, max_run_seconds, persons)`` and
  ``session_day_durations(project_id, day, bucket, n, durations)``: per local day of the project timezone, the
  aggregates of the sessions starting that day (:class:`Day`; persons as a roaring bitmap, durations as
  ascending float64 slices by value), kept by :func:`_update_days` from the sessions each write deletes and
  writes.

Everything here runs inside the caller's write transaction, so the sessions change exactly when events do.

**Upkeep** (:func:`maintain`). New events of a person can only change the person's runs that come within
the inactivity timeout of them; every other run (and so every other session) stays as it is. For each
person of the batch the stored sessions with ``end_ts >= first new event - gap`` and
``run_start <= last new event + gap`` (the affected runs, from the earliest such session on) are read,
deleted, and split again together with the new events, treating each stored session as one *element*
(its events are known to chain with gaps of at most the timeout and to span at most the cap). The earliest
element is a session start of the new stream too (nothing before it changed), so splitting from it gives
the sessions the whole stream would. When the cap would cut *inside* a stored session (or inside two
sessions that now overlap), the element's events are not known, and that person's affected window is split
again from raw events instead. An identity merge does the same with every stored session of both persons.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from kpilot.store.batch_rows import BatchRows
from kpilot.store.rollup_store import bitmap_from, day_chunks, pipelined, utc_days

__all__ = [
    "DAY_ENGAGED_SECONDS",
    "DAY_PAGEVIEWS",
    "DEFAULT",
    "Day",
    "SessionParams",
    "Sessionized",
    "Upkeep",
    "build",
    "build_days",
    "day_timezone",
    "days_from_rows",
    "drop",
    "duration_slices",
    "edge_sessions",
    "load_days",
    "maintain",
    "measures_sql",
    "params_of",
    "sessionize",
    "slice_counts",
    "value_buckets",
]

_NONE = np.iinfo(np.int64).max
"""No run-start hint for an element."""

_EVENTS_TYPE = pa.list_(pa.struct([("event", pa.string()), ("n", pa.int32())]))
_OUT_SCHEMA = pa.schema(
    [
        ("person_id", pa.int64()),
        ("start_ts", pa.timestamp("us")),
        ("end_ts", pa.timestamp("us")),
        ("run_start", pa.timestamp("us")),
        ("events", _EVENTS_TYPE),
    ]
)

BUILD_EVENTS = 4_000_000
"""A build splits the persons into chunks of about this many events, so memory stays bounded."""


@dataclass(frozen=True, slots=True)
class SessionParams:
    inactivity_seconds: int
    max_seconds: int


DEFAULT = SessionParams(30 * 60, 24 * 3600)
"""The materialised splitting: the sessions query's defaults (30 minutes idle, 24 hours at most)."""


# ---- splitting ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Sessionized:
    """The sessions of sorted elements: ``of_element`` maps each element to its session."""

    of_element: np.ndarray
    person: np.ndarray
    start: np.ndarray
    end: np.ndarray
    run_start: np.ndarray
    bad: set[int]
    """Persons for whom the cap falls inside a composite element: their sessions are not valid."""


def _seconds(us: np.ndarray) -> np.ndarray:
    # The raw-event query compares epoch seconds as doubles (epoch(ts) = microseconds / 1e6); doing the
    # same here makes every gap and cap decision the same, bit for bit.
    return us.astype(np.float64) / 1e6


def _cummax_by_person(first: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per-person running maximum of ``end`` (rows sorted by person, then start)."""
    idx = np.flatnonzero(first)
    base = start[idx]
    span = np.maximum.reduceat(end, idx) - base + 1
    offsets = np.concatenate([[0], np.cumsum(span)[:-1]])
    if offsets[-1] + span[-1] < 2**62:
        seg = np.cumsum(first) - 1
        shift = offsets[seg] - base[seg]
        return np.asarray(np.maximum.accumulate(end + shift) - shift)
    out = end.copy()  # the shifted values would overflow: a plain loop (never in practice)
    for i in range(1, len(end)):
        if not first[i]:
            out[i] = max(out[i], out[i - 1])
    return out


def sessionize(
    person: np.ndarray, start: np.ndarray, end: np.ndarray, hint: np.ndarray, params: SessionParams
) -> Sessionized:
    """Split elements sorted by (person, start, end) into sessions.

    An element is one event (``start == end``) or a group of events known to chain with gaps of at most
    the timeout and to last at most the cap (a stored session); ``hint`` is the start of the run an element
    is known to belong to (``_NONE`` when unknown). Times are microseconds since 1970.
    """
    n = len(person)
    if n == 0:
        e = np.zeros(0, np.int64)
        return Sessionized(e, e, e, e, e, set())
    gap, cap = float(params.inactivity_seconds), float(params.max_seconds)
    first = np.ones(n, dtype=bool)
    first[1:] = person[1:] != person[:-1]
    # 1. Overlapping elements (a new event inside a stored session, sessions of two merged persons) are
    #    combined into one group; groups then follow each other without overlap.
    overlap = np.zeros(n, dtype=bool)
    overlap[1:] = ~first[1:] & (start[1:] < end[:-1])
    if overlap.any():
        # Only persons with a composite element can have overlaps (sorted points never do): the running
        # maximum is taken over their rows alone.
        heads = np.flatnonzero(first)
        sub = np.flatnonzero(np.logical_or.reduceat(end > start, heads)[np.cumsum(first) - 1])
        s_first, s_start = first[sub], start[sub]
        cm = _cummax_by_person(s_first, s_start, end[sub])
        overlap[:] = False
        overlap[sub[1:]] = ~s_first[1:] & (s_start[1:] < cm[:-1])
    grouped = bool(overlap.any())
    if grouped:
        g_idx = np.flatnonzero(~overlap)
        g_of = np.cumsum(~overlap) - 1
        g_person = person[g_idx]
        g_start = start[g_idx]
        g_end = np.maximum.reduceat(end, g_idx)
        g_hint = np.minimum.reduceat(hint, g_idx)
        g_first = first[g_idx]
    else:  # every element is its own group (always so for raw events): no copies
        g_idx = g_of = np.arange(n)
        g_person, g_start, g_end, g_hint, g_first = person, start, end, hint, first
    gs = _seconds(g_start)
    ge = gs if g_end is g_start else _seconds(g_end)
    # 2. Inactivity runs: a gap longer than the timeout between one event and the next starts a new run.
    brk = g_first.copy()
    brk[1:] |= (gs[1:] - ge[:-1]) > gap
    r_idx = np.flatnonzero(brk)
    r_of = np.cumsum(brk) - 1
    r_end = np.maximum.reduceat(g_end, r_idx)
    r_hint = np.minimum(np.minimum.reduceat(g_hint, r_idx), g_start[r_idx])
    # 3. The cap: a run longer than it (measured from the run's real start, as the raw query does) is cut
    #    at its first event more than the cap after the current session's start, again and again.
    s_flag = brk.copy()
    bad: set[int] = set()
    long_runs = np.flatnonzero((_seconds(r_end) - _seconds(r_hint)) > cap)
    r_bounds = np.append(r_idx, len(g_idx))
    for r in long_runs.tolist():
        a, b = int(r_bounds[r]), int(r_bounds[r + 1])
        i = a
        while i < b:
            limit = gs[i] + cap
            j = i + int(np.searchsorted(gs[i:b], limit, side="right"))
            if ge[j - 1] > limit:  # the cut falls inside a composite element
                bad.add(int(g_person[i]))
                break
            if j < b:
                s_flag[j] = True
            i = j
    s_idx = np.flatnonzero(s_flag)
    s_of = np.cumsum(s_flag) - 1
    return Sessionized(
        of_element=s_of[g_of] if grouped else s_of,
        person=g_person[s_idx],
        start=g_start[s_idx],
        end=np.maximum.reduceat(g_end, s_idx),
        run_start=r_hint[r_of[s_idx]],
        bad=bad,
    )


def _event_lists(session_of: np.ndarray, names: pa.Array, counts: np.ndarray, n_sessions: int) -> pa.Array:
    """Per session, the summed ``counts`` per event name, from payload rows (session, name, count)."""
    if n_sessions == 0:
        return pa.array([], _EVENTS_TYPE)
    enc = pc.dictionary_encode(names)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    nd = max(len(enc.dictionary), 1)
    key = session_of.astype(np.int64) * nd + codes
    weights = counts.astype(np.float64)  # exact: counts are far below 2**53
    if n_sessions * nd <= max(4 * len(key), 1 << 20):  # few enough keys: count them in place, no sort
        by_key = np.bincount(key, weights=weights, minlength=n_sessions * nd)
        uniq = np.flatnonzero(by_key)
        sums = by_key[uniq].astype(np.int32)
    else:
        uniq, inv = np.unique(key, return_inverse=True)
        sums = np.bincount(inv.ravel(), weights=weights, minlength=len(uniq)).astype(np.int32)
    u_sess = uniq // nd
    offsets = np.zeros(n_sessions + 1, dtype=np.int32)
    np.cumsum(np.bincount(u_sess, minlength=n_sessions), out=offsets[1:])
    struct = pa.StructArray.from_arrays(
        [enc.dictionary.take(pa.array(uniq % nd)), pa.array(sums, pa.int32())], names=["event", "n"]
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), struct)


def _with_names(encoded: pa.DictionaryArray, more: pa.Array) -> pa.DictionaryArray:
    """``encoded`` (a string dictionary) followed by the strings ``more``, encoded with the same dictionary
    (grown by the names it lacks)."""
    if len(more) == 0:
        return encoded
    dictionary = encoded.dictionary
    idx = pc.index_in(more, value_set=dictionary)
    if idx.null_count:
        dictionary = pa.concat_arrays([dictionary, pc.unique(more.filter(pc.is_null(idx)))])
        idx = pc.index_in(more, value_set=dictionary)
    indices = pa.concat_arrays([encoded.indices.cast(pa.int32()), idx.cast(pa.int32())])
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("datetime64[us]"), pa.timestamp("us"))


def _us(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(col.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _output(s: Sessionized, keep: np.ndarray, events: pa.Array) -> pa.Table:
    """The sessions ``keep`` (a boolean mask over sessions) as rows of ``person_sessions``."""
    return pa.table(
        {
            "person_id": pa.array(s.person[keep], pa.int64()),
            "start_ts": _ts(s.start[keep]),
            "end_ts": _ts(s.end[keep]),
            "run_start": _ts(s.run_start[keep]),
            "events": events if bool(keep.all()) else events.filter(pa.array(keep)),
        },
        schema=_OUT_SCHEMA,
    )


def _from_events(table: pa.Table, params: SessionParams) -> tuple[pa.Table, set[int]]:
    """Sessions of raw events: ``table`` has person_id, timestamp, event and hint (microseconds or null),
    sorted by person and time. Events never make a bad split, so the second value is always empty."""
    person = table.column("person_id").to_numpy().astype(np.int64)
    ts = _us(table.column("timestamp"))
    hint = table.column("hint").cast(pa.int64()).fill_null(_NONE).to_numpy().astype(np.int64)
    s = sessionize(person, ts, ts, hint, params)
    events = _event_lists(s.of_element, table.column("event"), np.ones(len(ts), np.int64), len(s.person))
    return _output(s, np.ones(len(s.person), dtype=bool), events), s.bad


# ---- tables ---------------------------------------------------------------------------------------------------
def params_of(cur: duckdb.DuckDBPyConnection, project_id: int) -> SessionParams | None:
    """The splitting parameters of ``project_id``'s materialised sessions, or None when it has none."""
    rows = cur.execute(
        "SELECT inactivity_seconds, max_seconds FROM session_projects WHERE project_id = ?", [project_id]
    ).fetchall()
    return SessionParams(int(rows[0][0]), int(rows[0][1])) if rows else None


def drop(cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
    """Remove ``project_id``'s materialised sessions: queries read raw events until they are built again."""
    cur.execute("DELETE FROM session_projects WHERE project_id = ?", [project_id])
    cur.execute("DELETE FROM person_sessions WHERE project_id = ?", [project_id])
    drop_days(cur, project_id)


def _insert(cur: duckdb.DuckDBPyConnection, project_id: int, rows: pa.Table) -> None:
    if rows.num_rows == 0:
        return
    cur.register("session_rows", rows)
    cur.execute(
        """INSERT INTO person_sessions
           SELECT ?, person_id, start_ts, end_ts, run_start, events FROM session_rows""",
        [project_id],
    )
    cur.unregister("session_rows")


def _raw_events(cur: duckdb.DuckDBPyConnection, project_id: int, windows: pa.Table) -> pa.Table:
    """Events of the persons in ``windows`` (person_id, lo, hi, hint) with ``lo <= timestamp < hi``, sorted
    by person and time, each window's first event carrying its hint."""
    if windows.num_rows == 0:
        return pa.table(
            {
                "person_id": pa.array([], pa.int64()),
                "timestamp": pa.array([], pa.timestamp("us")),
                "event": pa.array([], pa.string()),
                "hint": pa.array([], pa.timestamp("us")),
            }
        )
    cur.register("session_windows", windows)
    lo = int(pc.min(windows.column("lo")).cast(pa.int64()).as_py())
    hi = int(pc.max(windows.column("hi")).cast(pa.int64()).as_py())
    table = cur.sql(
        """SELECT p.person_id, e.timestamp, e.event,
                  CASE WHEN e.timestamp = w.lo THEN w.hint END AS hint
           FROM events e
           JOIN (SELECT distinct_id, person_id FROM person_distinct_ids
                 WHERE project_id = $1 AND person_id IN (SELECT person_id FROM session_windows)) p
             ON p.distinct_id = e.distinct_id
           JOIN session_windows w ON w.person_id = p.person_id AND e.timestamp >= w.lo AND e.timestamp < w.hi
           WHERE e.project_id = $1 AND e.timestamp >= make_timestamp($2::BIGINT)
             AND e.timestamp < make_timestamp($3::BIGINT)
           ORDER BY p.person_id, e.timestamp""",
        params=[project_id, lo, hi],
    ).to_arrow_table()
    cur.unregister("session_windows")
    return table


def build(cur: duckdb.DuckDBPyConnection, project_id: int, params: SessionParams = DEFAULT) -> int:
    """(Re)build ``project_id``'s sessions from its stored events; returns the number of sessions."""
    drop(cur, project_id)
    cur.execute(
        "INSERT INTO session_projects VALUES (?, ?, ?, ?)",
        [project_id, params.inactivity_seconds, params.max_seconds, datetime.now(UTC).replace(tzinfo=None)],
    )
    n_events = cur.execute("SELECT count(*) FROM events WHERE project_id = ?", [project_id]).fetchall()[0][0]
    chunks = max(1, -(-int(n_events) // BUILD_EVENTS))

    def events_of(k: int) -> pa.Table:
        return cur.sql(
            """SELECT p.person_id, e.timestamp, e.event, NULL::TIMESTAMP AS hint
               FROM events e JOIN person_distinct_ids p
                 ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
               WHERE e.project_id = $1 AND p.person_id % $2 = $3
               ORDER BY p.person_id, e.timestamp""",
            params=[project_id, chunks, k],
        ).to_arrow_table()

    def insert(rows: pa.Table) -> int:
        _insert(cur, project_id, rows)
        return int(rows.num_rows)

    return pipelined(list(range(chunks)), events_of, lambda table: _from_events(table, params)[0], insert)


# ---- upkeep -----------------------------------------------------------------------------------------------
def maintain(
    cur: duckdb.DuckDBPyConnection,
    project_id: int,
    remap: dict[int, int],
    params: SessionParams,
    timezone: str | None = None,
    batch: BatchRows | None = None,
) -> None:
    """Bring the sessions up to date with the batch in the temp tables ``staged`` (its deduplicated events)
    and ``batch_persons`` (its distinct ids and their current persons), and the merges ``remap``
    (absorbed person -> surviving person). With ``timezone`` (the project has day aggregates in it), the
    days whose sessions changed are brought up to date too (:func:`_update_days`). ``batch`` is the batch as
    the write read it for every upkeep (read here when not given)."""
    gap = timedelta(seconds=params.inactivity_seconds)
    merged = {int(a): int(b) for a, b in remap.items() if a != b}
    batch = batch or BatchRows(cur)
    new = batch.events()
    new_ts = _us(new.column("timestamp"))
    parts: list[pa.Table] = []
    # Stored sessions the batch can change: for persons with new events, those of the runs within the
    # timeout of them (the constant bounds let DuckDB skip row groups); for merged persons, all of both
    # persons' sessions (under the survivor's id).
    if len(new_ts):
        cur.register("session_new", new.select(["person_id", "timestamp"]))
        involved = [*merged, *set(merged.values())]  # read below with all their sessions
        cur.register("session_merged", pa.table({"person_id": pa.array(involved, pa.int64())}))
        # bounds as microseconds: Python's datetime cannot hold a gap before year 1 or after year 9999
        gap_us = params.inactivity_seconds * 1_000_000
        lo, hi = int(new_ts.min()) - gap_us, int(new_ts.max()) + gap_us
        parts.append(
            cur.sql(
                """SELECT m.rowid AS rid, m.person_id, m.person_id AS orig, m.start_ts, m.end_ts, m.run_start,
                          m.events
                   FROM person_sessions m
                   JOIN (SELECT person_id, min(timestamp) - $2 AS lo, max(timestamp) + $2 AS hi
                         FROM session_new GROUP BY person_id) t USING (person_id)
                   WHERE m.project_id = $1 AND m.end_ts >= make_timestamp($3::BIGINT)
                     AND m.run_start <= make_timestamp($4::BIGINT)
                     AND m.end_ts >= t.lo AND m.run_start <= t.hi
                     AND m.person_id NOT IN (SELECT person_id FROM session_merged)""",
                params=[project_id, gap, lo, hi],
            ).to_arrow_table()
        )
        cur.unregister("session_new")
        cur.unregister("session_merged")
    if merged:
        survivors = sorted(set(merged.values()))
        cur.register(
            "session_merges",
            pa.table(
                {
                    "person_id": pa.array([*merged, *survivors], pa.int64()),
                    "survivor": pa.array([*merged.values(), *survivors], pa.int64()),
                }
            ),
        )
        parts.append(
            cur.sql(
                """SELECT m.rowid AS rid, g.survivor AS person_id, m.person_id AS orig, m.start_ts, m.end_ts,
                          m.run_start, m.events
                   FROM person_sessions m JOIN session_merges g USING (person_id)
                   WHERE m.project_id = $1""",
                params=[project_id],
            ).to_arrow_table()
        )
        cur.unregister("session_merges")
    old = pa.concat_tables(parts) if parts else None
    if old is not None and old.num_rows:
        cur.register("session_old", old.select(["rid"]))
        cur.execute("DELETE FROM person_sessions WHERE rowid IN (SELECT rid FROM session_old)")
        cur.unregister("session_old")
    if old is None or (new.num_rows == 0 and old.num_rows == 0):
        return
    # Elements: the new events (points) and the stored sessions (composites), sorted.
    n_new = new.num_rows
    person = np.concatenate(
        [
            new.column("person_id").to_numpy().astype(np.int64),
            old.column("person_id").to_numpy().astype(np.int64),
        ]
    )
    start = np.concatenate([new_ts, _us(old.column("start_ts"))])
    end = np.concatenate([new_ts, _us(old.column("end_ts"))])
    hint = np.concatenate([np.full(n_new, _NONE, np.int64), _us(old.column("run_start"))])
    order = _order(person, start)
    s = sessionize(person[order], start[order], end[order], hint[order], params)
    session_of = np.empty(len(order), dtype=np.int64)
    session_of[order] = s.of_element
    # Payload: one row per new event, one per (stored session, event name).
    stored = old.column("events").combine_chunks() if old.num_rows else pa.array([], _EVENTS_TYPE)
    parents = (
        pc.list_parent_indices(stored).to_numpy().astype(np.int64) if len(stored) else np.zeros(0, np.int64)
    )
    flat = pc.list_flatten(stored)
    names = _with_names(batch.event_names(), flat.field("event").cast(pa.string()))
    counts = np.concatenate([np.ones(n_new, np.int64), flat.field("n").to_numpy().astype(np.int64)])
    payload_session = np.concatenate([session_of[:n_new], session_of[n_new + parents]])
    events = _event_lists(payload_session, names, counts, len(s.person))
    keep = ~np.isin(s.person, np.fromiter(s.bad, np.int64, len(s.bad)))
    inserted = [_output(s, keep, events)]
    _insert(cur, project_id, inserted[0])
    if s.bad:
        # The cap falls inside a stored session: split these persons' windows again from raw events.
        bad = np.isin(person, np.fromiter(s.bad, np.int64, len(s.bad)))
        windows = _windows(person[bad], start[bad], end[bad], hint[bad])
        rows, _ = _from_events(_raw_events(cur, project_id, windows), params)
        _insert(cur, project_id, rows)
        inserted.append(rows)
    if timezone is not None:
        _update_days(cur, project_id, timezone, old, inserted, set(merged))


def _order(person: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The permutation sorting elements by (person, start): one integer sort when both fit in 63 bits."""
    if len(person) == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(start.min())
    bits = (int(start.max()) - t0).bit_length()
    if int(person.min()) >= 0 and int(person.max()).bit_length() + bits <= 62:
        return np.argsort((person << bits) | (start - t0))
    return np.lexsort((start, person))


def _windows(person: np.ndarray, start: np.ndarray, end: np.ndarray, hint: np.ndarray) -> pa.Table:
    """Per person, [first element start, last element end + 1 us) and the smallest run-start hint."""
    order = np.lexsort((start, person))
    person, start, end, hint = person[order], start[order], end[order], hint[order]
    idx = np.flatnonzero(np.concatenate([[True], person[1:] != person[:-1]]))
    lo = start[idx]
    h = np.minimum.reduceat(hint, idx)
    return pa.table(
        {
            "person_id": pa.array(person[idx], pa.int64()),
            "lo": _ts(lo),
            "hi": _ts(np.maximum.reduceat(end, idx) + 1),
            "hint": pa.array(np.where(h < lo, h, lo).astype("datetime64[us]"), pa.timestamp("us")),
        }
    )


# ---- day aggregates ------------------------------------------------------------------------------------------
DAY_ENGAGED_SECONDS = 10
"""The day aggregates count engaged sessions by the query's default rule: over 10 s, or 2+ page views."""
DAY_PAGEVIEWS = ("$pageview", "$screen")
"""The default ``pageview_events`` (``key_events`` default to none)."""

_US = 1_000_000
_DAY_US = 86_400 * _US
_DAY_COLUMNS = "day, sessions, duration_us, engaged, min_run_start, max_end, max_run_seconds, persons"
_BUCKET_SHIFT = 48
"""A day's durations are stored in slices by value: the top 16 bits of the double (sign, exponent and 4
mantissa bits, so each slice spans 1/16 of an octave), which order like the values for durations >= 0."""


def value_buckets(values: np.ndarray) -> np.ndarray:
    """The storage slice of each (non-negative) duration; ascending with the value."""
    return np.ascontiguousarray(values, np.float64).view(np.int64) >> _BUCKET_SHIFT


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
    start, end, run_start = (_us(sessions.column(c)) for c in ("start_ts", "end_ts", "run_start"))
    start_s, end_s = _seconds(start), _seconds(end)
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
        end_s - _seconds(run_start),
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
    cur.execute("DELETE FROM session_day_durations WHERE project_id = ?", [project_id])


def _write_days(cur: duckdb.DuckDBPyConnection, project_id: int, days: dict[int, Day]) -> None:
    """Insert rows and duration slices for ``days`` (the caller deleted their old rows); days without
    sessions get none."""
    _write_day_rows(cur, project_id, days)
    keep = sorted(d for d, agg in days.items() if agg.sessions > 0)
    if not keep:
        return
    # Every slice of every day at once: one buffer of all durations, cut where (day, bucket) changes.
    values = np.concatenate([np.ascontiguousarray(days[d].durations, "<f8") for d in keep])
    days_of = np.repeat(np.asarray(keep, np.int64), [len(days[d].durations) for d in keep])
    bucket = value_buckets(values)
    starts = np.flatnonzero(
        np.concatenate([[True], (bucket[1:] != bucket[:-1]) | (days_of[1:] != days_of[:-1])])
    )
    _insert_slices(cur, project_id, days_of[starts], bucket[starts], starts, values)


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


def _insert_slices(
    cur: duckdb.DuckDBPyConnection,
    project_id: int,
    days: np.ndarray,
    buckets: np.ndarray,
    starts: np.ndarray,
    values: np.ndarray,
) -> None:
    """Insert slices: slice i is (``days[i]``, ``buckets[i]``) holding ``values[starts[i]:starts[i + 1]]``."""
    values = np.ascontiguousarray(values, "<f8")
    offsets = np.append(starts, len(values)).astype(np.int64) * 8
    blobs = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(values.tobytes())]
    )
    slices = pa.table(
        {
            "day": pa.array(days, pa.int32()),
            "bucket": pa.array(buckets, pa.int32()),
            "n": pa.array(np.diff(np.append(starts, len(values))), pa.int64()),
            "durations": blobs,
        }
    )
    cur.register("session_day_slices", slices)
    cur.execute(
        """INSERT INTO session_day_durations
           SELECT ?, DATE '1970-01-01' + day, bucket, n, durations FROM session_day_slices""",
        [project_id],
    )
    cur.unregister("session_day_slices")


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
        _fill_durations(
            cur, days, f"SELECT * FROM session_day_durations WHERE {where}", [project_id, first, last]
        )
    return days


def _fill_durations(
    cur: duckdb.DuckDBPyConnection, days: dict[int, Day], source: str, params: list[Any]
) -> None:
    parts: dict[int, list[bytes]] = {}
    for d, blob in cur.execute(
        f"SELECT day - DATE '1970-01-01', durations FROM ({source}) ORDER BY day, bucket", params
    ).fetchall():
        parts.setdefault(int(d), []).append(blob)
    for d, blobs in parts.items():
        days[d].durations = np.frombuffer(b"".join(blobs), dtype="<f8")


def slice_counts(
    cur: duckdb.DuckDBPyConnection, project_id: int, first: int, last: int
) -> dict[str, np.ndarray]:
    """``day`` (days since 1970-01-01), ``bucket`` and ``n`` of every stored slice of days ``first``..``last``."""
    table = cur.sql(
        """SELECT CAST(day - DATE '1970-01-01' AS INTEGER) AS day, bucket, n FROM session_day_durations
           WHERE project_id = $1 AND day BETWEEN DATE '1970-01-01' + $2::INTEGER AND DATE '1970-01-01' + $3::INTEGER
           ORDER BY day, bucket""",
        params=[project_id, first, last],
    ).to_arrow_table()
    return {name: table.column(name).to_numpy() for name in ("day", "bucket", "n")}


def duration_slices(
    cur: duckdb.DuckDBPyConnection, project_id: int, wanted: list[tuple[int, int]]
) -> dict[tuple[int, int], np.ndarray]:
    """The stored durations of the slices ``wanted`` (day, bucket), ascending."""
    if not wanted:
        return {}
    # Constant filters on the small columns: the scan reads the blobs of the matching rows only.
    buckets = ", ".join(str(int(b)) for b in sorted({b for _, b in wanted}))
    rows = cur.execute(
        f"""SELECT CAST(day - DATE '1970-01-01' AS INTEGER), bucket, durations FROM session_day_durations
            WHERE project_id = ? AND day BETWEEN DATE '1970-01-01' + ?::INTEGER AND DATE '1970-01-01' + ?::INTEGER
              AND bucket IN ({buckets})""",
        [project_id, min(d for d, _ in wanted), max(d for d, _ in wanted)],
    ).fetchall()
    keep = set(wanted)
    return {(int(d), int(b)): np.frombuffer(blob, dtype="<f8") for d, b, blob in rows if (d, b) in keep}


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


def _remove_sorted(values: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """``values`` (ascending) without the multiset ``drop`` (ascending, a sub-multiset of ``values``)."""
    if len(drop) == 0:
        return values
    uniq, first, counts = np.unique(drop, return_index=True, return_counts=True)
    pos = np.searchsorted(values, uniq, side="left")
    idx = np.repeat(pos, counts) + (np.arange(len(drop)) - np.repeat(first, counts))
    if idx.max() >= len(values) or not np.array_equal(values[idx], drop):
        raise AssertionError("session day aggregates out of step with the stored sessions")
    return np.delete(values, idx)


def _same_rows(columns: list[np.ndarray], plus: np.ndarray, minus: np.ndarray) -> bool:
    """Whether the rows ``plus`` and ``minus`` hold the same multiset of values of ``columns``."""
    p = [c[plus] for c in columns]
    m = [c[minus] for c in columns]
    po, mo = np.lexsort(p[::-1]), np.lexsort(m[::-1])
    return all(np.array_equal(x[po], y[mo]) for x, y in zip(p, m, strict=True))


def _update_days(
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
    slices = _SliceEdit.read(cur, project_id, {d: changes[d][:2] for d in plain})
    out: dict[int, Day] = {}
    for d, (p_dur, m_dur, p_persons, m_persons) in changes.items():
        agg = stored.get(d) or Day(0, 0, 0, np.zeros(0, np.float64), BitMap(), _NONE, -_NONE, 0.0)
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
            if agg.sessions != slices.apply(d, p_dur, m_dur):
                raise AssertionError("session day aggregates out of step with the stored sessions")
        out[d] = agg
    _write_day_rows(cur, project_id, out)
    slices.write(cur, project_id)


class _SliceEdit:
    """The duration slices a write changes: only the (day, bucket) slices that lose or gain a duration are
    read, edited and written again; the day's other slices stay as they are.

    Per day, the edited slices are held as one ascending array (slices order like their values), so an edit
    is one removal and one insertion per day, whatever the number of slices."""

    def __init__(self, days: dict[int, tuple[np.ndarray, np.ndarray]], counts: dict[int, int]) -> None:
        self.days = days
        """Per day: the buckets edited (ascending) and the durations of those slices (stored, then edited)."""
        self.counts = counts
        """Per day, the number of durations in the slices that are not edited."""

    @classmethod
    def read(
        cls,
        cur: duckdb.DuckDBPyConnection,
        project_id: int,
        deltas: dict[int, tuple[np.ndarray, np.ndarray]],
    ) -> _SliceEdit:
        """The slices that ``deltas`` (per day: durations added, durations removed) touch."""
        if not deltas:
            return cls({}, {})
        wanted = {
            d: np.union1d(value_buckets(p_dur), value_buckets(m_dur)) for d, (p_dur, m_dur) in deltas.items()
        }
        first, last = min(deltas), max(deltas)
        keys = np.concatenate([_slice_key(np.full(len(b), d, np.int64), b) for d, b in wanted.items()])
        # Every slice of the days' range by (day, bucket), the durations of the edited ones only: constant
        # filters on the small columns, so the scan reads the blobs of the matching rows alone.
        buckets = ", ".join(str(int(b)) for b in np.unique(np.concatenate(list(wanted.values()))).tolist())
        table = cur.sql(
            f"""SELECT CAST(day - DATE '1970-01-01' AS INTEGER) AS day, bucket, n,
                       CASE WHEN bucket IN ({buckets}) THEN durations END AS durations
                FROM session_day_durations
                WHERE project_id = $1 AND day BETWEEN DATE '1970-01-01' + $2::INTEGER AND DATE '1970-01-01' + $3::INTEGER
                ORDER BY day, bucket""",
            params=[project_id, first, last],
        ).to_arrow_table()
        day = _np(table, "day", np.int64)
        n = _np(table, "n", np.int64)
        edited = np.isin(_slice_key(day, _np(table, "bucket", np.int64)), keys)
        counts = dict.fromkeys(deltas, 0)
        other_days, other_n = np.unique(day[~edited], return_inverse=True)
        sums = np.bincount(other_n.ravel(), weights=n[~edited], minlength=len(other_days))
        for d, k in zip(other_days.tolist(), sums.tolist(), strict=True):
            if d in counts:
                counts[d] = int(k)
        values = _blob_values(table.column("durations").filter(pa.array(edited)))
        e_day = day[edited]
        ends = np.cumsum(n[edited])
        if len(ends) and int(ends[-1]) != len(values):
            raise AssertionError("session day aggregates out of step with the stored sessions")
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for d, b in wanted.items():
            lo, hi = int(np.searchsorted(e_day, d, "left")), int(np.searchsorted(e_day, d, "right"))
            v0 = int(ends[lo - 1]) if lo else 0
            v1 = int(ends[hi - 1]) if hi else 0
            out[d] = (b.astype(np.int64), values[v0:v1])
        return cls(out, counts)

    def apply(self, day: int, added: np.ndarray, removed: np.ndarray) -> int:
        """Remove ``removed`` and add ``added`` (both ascending) to ``day``'s slices; returns the number of
        durations the day then holds."""
        buckets, values = self.days[day]
        values = _remove_sorted(values, removed)
        if len(added):
            values = np.insert(values, np.searchsorted(values, added), added)
        self.days[day] = (buckets, values)
        return self.counts[day] + len(values)

    def write(self, cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
        if not self.days:
            return
        order = sorted(self.days)
        cur.register(
            "session_slice_keys",
            pa.table(
                {
                    "day": pa.array(np.repeat(order, [len(self.days[d][0]) for d in order]), pa.int32()),
                    "bucket": pa.array(np.concatenate([self.days[d][0] for d in order]), pa.int32()),
                }
            ),
        )
        cur.execute(
            """DELETE FROM session_day_durations s USING session_slice_keys k
               WHERE s.project_id = ? AND s.day = DATE '1970-01-01' + k.day AND s.bucket = k.bucket""",
            [project_id],
        )
        cur.unregister("session_slice_keys")
        values = np.concatenate([self.days[d][1] for d in order])
        if len(values) == 0:
            return
        days_of = np.repeat(np.asarray(order, np.int64), [len(self.days[d][1]) for d in order])
        bucket = value_buckets(values)
        starts = np.flatnonzero(
            np.concatenate([[True], (bucket[1:] != bucket[:-1]) | (days_of[1:] != days_of[:-1])])
        )
        _insert_slices(cur, project_id, days_of[starts], bucket[starts], starts, values)


def _slice_key(day: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """One integer per (day, bucket): buckets are the top 16 bits of a non-negative double."""
    return (day.astype(np.int64) << 16) | bucket.astype(np.int64)


def _blob_values(blobs: pa.ChunkedArray) -> np.ndarray:
    """The float64 durations of ``blobs`` (non-null binary values), concatenated in order."""
    arr = blobs.combine_chunks() if isinstance(blobs, pa.ChunkedArray) else blobs
    if len(arr) == 0:
        return _NO_DURATIONS
    arr = arr.cast(pa.large_binary())
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    if data is None:
        return _NO_DURATIONS
    raw = np.frombuffer(data, np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return raw.view("<f8").astype(np.float64)


# ---- range edges (queries) -----------------------------------------------------------------------------------
def edge_sessions(
    cur: duckdb.DuckDBPyConnection, project_id: int, lo: datetime, hi: datetime, params: SessionParams
) -> pa.Table:
    """The sessions a query on ``[lo, hi)`` (UTC) builds where stored sessions cross its edges.

    A run that began before ``lo`` is split again from its events inside the range (the query starts its
    cap chain at the first of them); a session that began inside the range but ends at or after ``hi`` keeps
    its start and loses its events from ``hi`` on. Every other stored session inside the range is the
    query's own (:mod:`kpilot.compute.sessions_mat` reads those directly).
    """
    windows = cur.sql(
        """SELECT person_id, $2::TIMESTAMP AS lo, least(max(end_ts) + INTERVAL 1 MICROSECOND, $3::TIMESTAMP) AS hi,
                  NULL::TIMESTAMP AS hint
           FROM person_sessions
           WHERE project_id = $1 AND run_start < $2 AND end_ts >= $2 AND start_ts < $3
           GROUP BY person_id
           UNION ALL
           SELECT person_id, start_ts, $3::TIMESTAMP, run_start FROM person_sessions
           WHERE project_id = $1 AND run_start >= $2 AND start_ts < $3 AND end_ts >= $3""",
        params=[project_id, lo, hi],
    ).to_arrow_table()
    rows, _ = _from_events(_raw_events(cur, project_id, windows), params)
    return rows


# ---- the store's hook -------------------------------------------------------------------------------------
class Upkeep:
    """What :class:`~kpilot.store.duckdb_store.EventStore` calls: keeps each project's sessions current."""

    def __init__(self) -> None:
        self._params: dict[int, SessionParams | None] = {}
        self._timezone: dict[int, str | None] = {}

    def forget(self) -> None:
        """Drop cached knowledge (after a rolled-back write)."""
        self._params.clear()
        self._timezone.clear()

    def maintain(
        self,
        cur: duckdb.DuckDBPyConnection,
        project_id: int,
        remap: dict[int, int],
        keep: bool,
        batch: BatchRows | None = None,
    ) -> None:
        if project_id not in self._params:
            self._params[project_id] = params_of(cur, project_id)
        params = self._params[project_id]
        if params is None:
            return
        if not keep:  # writing without upkeep: drop them rather than let them go stale
            drop(cur, project_id)
            self._params[project_id] = None
            self._timezone[project_id] = None
            return
        if project_id not in self._timezone:
            self._timezone[project_id] = day_timezone(cur, project_id)
        maintain(cur, project_id, remap, params, self._timezone[project_id], batch)

    def ensure(self, cur: duckdb.DuckDBPyConnection, project_id: int, timezone: str | None = None) -> bool:
        """Build ``project_id``'s sessions when it has none, and its day aggregates when it has none in
        ``timezone`` (when given); True if anything was built."""
        built = False
        if params_of(cur, project_id) is None:
            build(cur, project_id)
            self._params[project_id] = DEFAULT
            self._timezone[project_id] = None
            built = True
        if timezone is not None and day_timezone(cur, project_id) != timezone:
            build_days(cur, project_id, timezone)
            self._timezone[project_id] = timezone
            built = True
        return built
