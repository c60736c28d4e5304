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
* the per-day aggregates of the sessions (:mod:`kpilot.store.session_days`, whose public names this module
  re-exports), brought up to date from the sessions each write deletes and writes.

Everything here runs inside the caller's write transaction, so the sessions change exactly when events do.

**Upkeep** (:func:`maintain`). New events of a person can only change the person's runs that come within
the inactivity timeout of them; every other run (and so every other session) stays as it is. For each
window of a person's new events (events at most two timeouts apart share one, :func:`_near`) the stored
sessions with ``end_ts >= first event - gap`` and ``run_start <= last event + gap`` (the affected runs, from
the earliest such session on) are read, deleted, and split again together with the new events, treating each stored session as one *element*
(its events are known to chain with gaps of at most the timeout and to span at most the cap). The earliest
element is a session start of the new stream too (nothing before it changed), so splitting from it gives
the sessions the whole stream would. When the cap would cut *inside* a stored session (or inside two
sessions that now overlap), the element's events are not known, and that person's affected window is split
again from raw events instead. An identity merge does the same with every stored session of both persons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kpilot.store import session_days
from kpilot.store.batch_rows import BatchRows
from kpilot.store.rollup_store import pipelined
from kpilot.store.session_days import (
    DAY_ENGAGED_SECONDS,
    DAY_PAGEVIEWS,
    NONE,
    Day,
    build_days,
    day_timezone,
    days_from_rows,
    drop_days,
    duration_slices,
    load_days,
    measures_sql,
    micros_of,
    seconds,
    slice_counts,
    value_buckets,
)
from kpilot.store.session_pending import PendingRows

__all__ = [
    "DAY_ENGAGED_SECONDS",
    "DAY_PAGEVIEWS",
    "DEFAULT",
    "Day",
    "SessionParams",
    "Sessionized",
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
    is known to belong to (``NONE`` when unknown). Times are microseconds since 1970.
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
    gs = seconds(g_start)
    ge = gs if g_end is g_start else seconds(g_end)
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
    long_runs = np.flatnonzero((seconds(r_end) - seconds(r_hint)) > cap)
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
    if bool((counts == 1).all()) and bool((session_of[1:] >= session_of[:-1]).all()):
        # raw events in session order (a build): the keys are sorted but within a session, where a sort
        # finds them nearly in order; far cheaper than counting into a sessions x names array
        ordered = np.sort(key, kind="stable")
        starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
        uniq = ordered[starts]
        sums = np.diff(np.append(starts, len(ordered))).astype(np.int32)
    elif n_sessions * nd <= min(max(8 * len(key), 1 << 20), 1 << 24):  # few keys: count them in place
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
    ts = micros_of(table.column("timestamp"))
    hint = table.column("hint").cast(pa.int64()).fill_null(NONE).to_numpy().astype(np.int64)
    s = sessionize(person, ts, ts, hint, params)
    events = _event_lists(s.of_element, table.column("event"), np.ones(len(ts), np.int64), len(s.person))
    return _output(s, np.ones(len(s.person), dtype=bool), events), s.bad


# ---- tables ---------------------------------------------------------------------------------------------------
def params_of(cur: duckdb.DuckDBPyConnection, project_id: int) -> SessionParams | None:
    """The splitting parameters of ``project_id``'s materialised sessions, or None when it has none, or has
    stored events whose upkeep is pending (:mod:`kpilot.store.session_pending`)."""
    # (a store older than session_pending, opened read-only, has none: it cannot have deferred upkeep)
    pending = cur.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'session_pending' AND schema_name = 'main'"
    ).fetchall()[0][0]
    unless = " AND project_id NOT IN (SELECT project_id FROM session_pending)" if pending else ""
    rows = cur.execute(
        f"SELECT inactivity_seconds, max_seconds FROM session_projects WHERE project_id = $1{unless}",
        [project_id],
    ).fetchall()
    return SessionParams(int(rows[0][0]), int(rows[0][1])) if rows else None


def drop(cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
    """Remove ``project_id``'s materialised sessions: queries read raw events until they are built again."""
    cur.execute("DELETE FROM session_projects WHERE project_id = ?", [project_id])
    cur.execute("DELETE FROM session_pending WHERE project_id = ?", [project_id])
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
    batch: BatchRows | PendingRows | None = None,
) -> None:
    """Bring the sessions up to date with the batch in the temp tables ``staged`` (its deduplicated events)
    and ``batch_persons`` (its distinct ids and their current persons), and the merges ``remap``
    (absorbed person -> surviving person). With ``timezone`` (the project has day aggregates in it), the
    days whose sessions changed are brought up to date too (:func:`_update_days`). ``batch`` is the batch as
    the write read it for every upkeep (read here when not given)."""
    merged = {int(a): int(b) for a, b in remap.items() if a != b}
    batch = batch or BatchRows(cur)
    new = batch.events()
    new_ts = micros_of(new.column("timestamp"))
    parts: list[pa.Table] = []
    # Stored sessions the batch can change: for persons with new events, those of the runs within the
    # timeout of them (the constant bounds let DuckDB skip row groups); for merged persons, all of both
    # persons' sessions (under the survivor's id).
    new_person = new.column("person_id").to_numpy().astype(np.int64)
    new_order = _order(new_person, new_ts)
    if len(new_ts):
        gap_us = params.inactivity_seconds * 1_000_000
        cur.register("session_windows", _near(new_person[new_order], new_ts[new_order], gap_us))
        involved = [*merged, *set(merged.values())]  # read below with all their sessions
        cur.register("session_merged", pa.table({"person_id": pa.array(involved, pa.int64())}))
        # bounds as microseconds: Python's datetime cannot hold a gap before year 1 or after year 9999
        lo, hi = int(new_ts.min()) - gap_us, int(new_ts.max()) + gap_us
        near = cur.sql(
            """SELECT m.rowid AS rid, m.person_id, m.person_id AS orig, m.start_ts, m.end_ts, m.run_start,
                      m.events
               FROM person_sessions m JOIN session_windows t USING (person_id)
               WHERE m.project_id = $1 AND m.end_ts >= make_timestamp($2::BIGINT)
                 AND m.run_start <= make_timestamp($3::BIGINT)
                 AND m.end_ts >= t.lo AND m.run_start <= t.hi
                 AND m.person_id NOT IN (SELECT person_id FROM session_merged)""",
            params=[project_id, lo, hi],
        ).to_arrow_table()
        # a session near two windows of its person comes twice
        first = np.unique(near.column("rid").to_numpy(), return_index=True)[1]
        parts.append(near if len(first) == near.num_rows else near.take(pa.array(np.sort(first))))
        cur.unregister("session_windows")
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
    person = np.concatenate([new_person, old.column("person_id").to_numpy().astype(np.int64)])
    start = np.concatenate([new_ts, micros_of(old.column("start_ts"))])
    end = np.concatenate([new_ts, micros_of(old.column("end_ts"))])
    hint = np.concatenate([np.full(n_new, NONE, np.int64), micros_of(old.column("run_start"))])
    order = _merged_order(person, start, new_order)
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


def _near(p: np.ndarray, t: np.ndarray, gap_us: int) -> pa.Table:
    """Windows (person_id, lo, hi) of new events (persons ``p``, times ``t``, sorted) such that a stored session can change only if
    ``end_ts >= lo`` and ``run_start <= hi`` for one of its person's windows: an event at t changes the runs
    within the timeout of it, from the session near t on (``end_ts >= t - gap``; the later sessions of a run
    that began before ``t + gap`` may be cut differently). A person's events closer than two timeouts share
    a window; farther apart, the sessions between them are left alone (a batch spanning weeks would
    otherwise re-split every session of its persons in between)."""
    cut = np.flatnonzero(np.concatenate([[True], (p[1:] != p[:-1]) | (t[1:] - t[:-1] > 2 * gap_us)]))
    last = np.append(cut[1:], len(t)) - 1
    return pa.table(
        {"person_id": pa.array(p[cut], pa.int64()), "lo": _ts(t[cut] - gap_us), "hi": _ts(t[last] + gap_us)}
    )


def _sort_key(person: np.ndarray, start: np.ndarray) -> np.ndarray | None:
    """One integer per element that orders like (person, start), or None when both do not fit in 63 bits."""
    t0 = int(start.min())
    bits = (int(start.max()) - t0).bit_length()
    if int(person.min()) < 0 or int(person.max()).bit_length() + bits > 62:
        return None
    key: np.ndarray = (person << bits) | (start - t0)
    return key


def _order(person: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The permutation sorting elements by (person, start): one integer sort when both fit in 63 bits."""
    if len(person) == 0:
        return np.zeros(0, dtype=np.int64)
    key = _sort_key(person, start)
    return np.lexsort((start, person)) if key is None else np.argsort(key)


def _merged_order(person: np.ndarray, start: np.ndarray, new_order: np.ndarray) -> np.ndarray:
    """:func:`_order` of elements whose first ``len(new_order)`` (new events) are sorted by ``new_order``: the
    others (stored sessions, usually far fewer) are sorted and merged in, after new events with the same
    person and start (which end no later)."""
    n_new = len(new_order)
    if len(person) == n_new:
        return new_order
    key = None if (len(person) - n_new) * 8 > len(person) else _sort_key(person, start)
    if key is None:
        return _order(person, start)
    old_order = n_new + np.argsort(key[n_new:])
    return np.insert(new_order, np.searchsorted(key[new_order], key[old_order], side="right"), old_order)


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


_update_days = session_days.apply_changes
"""The day aggregates' upkeep (a module attribute here: benchmarks time it as a phase of its own)."""


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
