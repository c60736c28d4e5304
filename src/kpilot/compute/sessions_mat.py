"""Sessions queries answered from the store's materialised sessions (:mod:`kpilot.store.session_store`).

A ``sessions`` spec is answered here when it has no ``filters``, no ``breakdown`` and the materialisation's
``inactivity_minutes`` and ``max_hours`` (the defaults); any timezone, interval, date range, ``engaged_seconds``,
``key_events`` and ``pageview_events`` work, because stored sessions are built on UTC instants and keep
their per-event-name counts. Otherwise :func:`answer_from_store` returns None and the engine reads raw
events. The answer is the raw-event query's, field for field:

* sessions whose whole run lies inside the range are read as stored; sessions crossing an edge of the range
  are rebuilt from the few raw events concerned (:func:`kpilot.store.session_store.edge_sessions`), as the
  raw query cuts them;
* durations are ``epoch(end) - epoch(start)`` in DuckDB, the same doubles the raw query subtracts, and the
  buckets, averages, medians and engagement rules are the same SQL (:func:`sessions.scored_sql`);
* a run that would need more than ``MAX_CAP_PASSES`` cap passes makes the raw query fail with an error: such
  a range is left to it (None), so it fails the same way.

Whole-day ranges in the project timezone at the default engagement rule are answered from the per-day
aggregates first (:func:`answer_from_days`): counts, exact duration sums and person bitmaps per day, and
medians selected exactly from the few stored duration slices that hold the middle values.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from kpilot.compute.buckets import buckets, next_bucket
from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import DIALECTS, lit
from kpilot.compute.queries import sessions as sq
from kpilot.compute.spec import QuerySpec, SessionsSpec
from kpilot.store import session_store
from kpilot.store.duckdb_store import EventStore
from kpilot.workspace import ProjectInfo

__all__ = [
    "answer_from_days",
    "answer_from_store",
    "answerable",
    "days_answer",
    "kth_smallest",
    "sessions_sql",
]


def answerable(spec: QuerySpec, params: session_store.SessionParams | None) -> bool:
    """Whether materialised sessions built with ``params`` answer ``spec``."""
    return (
        isinstance(spec, SessionsSpec)
        and params is not None
        and not spec.filters
        and spec.breakdown is None
        and spec.inactivity_minutes * 60 == params.inactivity_seconds
        and spec.max_hours * 3600 == params.max_seconds
    )


def sessions_sql(ctx: QueryContext, spec: SessionsSpec, lo: Any, hi: Any, edges: str) -> str:
    """SELECT rows as :func:`sessions.sessions_fast_sql` does, from ``person_sessions`` and the table
    ``edges`` (the edge-crossing sessions, rebuilt), for UTC instants ``[lo, hi)``."""
    cap = spec.max_hours * 3600
    return (
        f"WITH src AS (\n"
        f"  SELECT person_id, start_ts, end_ts, run_start, events FROM person_sessions\n"
        f"  WHERE project_id = {int(ctx.project_id)} AND run_start >= {lit(lo)} AND end_ts < {lit(hi)}\n"
        f"    AND start_ts >= {lit(lo)} AND start_ts < {lit(hi)}\n"
        f"  UNION ALL SELECT person_id, start_ts, end_ts, run_start, events FROM {edges}\n"
        f"), sess AS (\n"
        f"  SELECT person_id, '' AS bd, {ctx.local_ts('start_ts')} AS start_ts,\n"
        f"    epoch(end_ts) - epoch(start_ts) AS duration, epoch(end_ts) - epoch(run_start) AS run_span,\n"
        f"    {sq.count_sql('events', spec.pageview_events)} AS pageviews,\n"
        f"    {sq.count_sql('events', spec.key_events)} AS key_hits\n"
        f"  FROM src\n" + sq.scored_sql(ctx, spec) + f"\nUNION ALL\n"
        f"SELECT 'x' AS lvl, NULL AS bd, NULL AS bucket,\n"
        f"  coalesce(max(floor(run_span / {cap})), 0) AS sessions, 0 AS persons,\n"
        f"  NULL AS avg_duration, NULL AS median_duration, 0 AS engaged\n"
        f"FROM sess WHERE run_span > {cap}"
    )


def answer_from_store(store: Any, project: ProjectInfo, spec: QuerySpec) -> dict[str, Any] | None:
    """``spec``'s result from ``project``'s materialised sessions, or None (raw events must answer).

    Only the embedded store itself qualifies: a store reached through a running server (the CLI while
    ``kpilot serve`` holds it) answers with plain SELECTs, so its queries read raw events.
    """
    if not isinstance(spec, SessionsSpec) or spec.filters or spec.breakdown is not None:
        return None
    if not isinstance(store, EventStore):
        return None
    ctx = QueryContext(project.id, spec.timezone or project.timezone, project.week_start, DIALECTS["duckdb"])
    start, end = spec.local_bounds()
    lo, hi = ctx.utc_range(start, end)
    cur = store.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")  # one snapshot for the edges and the stored sessions
        try:
            try:
                params = session_store.params_of(cur, project.id)
            except duckdb.CatalogException:  # a store older than the sessions, opened read-only
                return None
            if params is None or not answerable(spec, params):
                return None
            if days_answer(spec, ctx.timezone):
                got = answer_from_days(cur, ctx, spec, params, lo, hi)
                if got is not None:
                    return got
            cur.register("session_edges", session_store.edge_sessions(cur, project.id, lo, hi, params))
            rows = cur.execute(sessions_sql(ctx, spec, lo, hi, "session_edges")).fetchall()
            cur.unregister("session_edges")
        finally:
            cur.execute("ROLLBACK")
    finally:
        cur.close()
    passes = next((int(r[3] or 0) for r in rows if r[0] == "x"), 0)
    if passes > sq.MAX_CAP_PASSES:
        return None  # the raw query refuses this range; let it say why
    return sq.assemble(ctx, spec, rows)


# ---- from the day aggregates ----------------------------------------------------------------------------------
_EPOCH = date(1970, 1, 1)
_US = 1_000_000
_DAY_US = 86_400 * _US


def days_answer(spec: SessionsSpec, timezone: str) -> bool:
    """Whether day aggregates (in the project timezone ``timezone``) hold what ``spec`` asks: whole local days
    in that timezone, and engagement by the default rule."""
    return (
        not isinstance(spec.date_from, datetime)
        and not isinstance(spec.date_to, datetime)
        and (spec.timezone or timezone) == timezone
        and spec.engaged_seconds == session_store.DAY_ENGAGED_SECONDS
        and not spec.key_events
        and sorted(set(spec.pageview_events)) == sorted(session_store.DAY_PAGEVIEWS)
    )


def kth_smallest(arrays: list[np.ndarray], k: int) -> float:
    """The ``k``-th smallest value (0-based) of the union of ascending arrays of non-negative doubles,
    by a binary search on the values' bit patterns (ordered like the values for non-negative doubles)."""
    arrays = [a for a in arrays if len(a)]
    if len(arrays) == 1:
        return float(arrays[0][k])
    lo = min(int(a[:1].view(np.int64)[0]) for a in arrays)
    hi = max(int(a[-1:].view(np.int64)[0]) for a in arrays)
    probe = np.zeros(1, np.int64)
    while lo < hi:  # smallest bit pattern with more than k values at or below it: an element
        mid = (lo + hi) // 2
        probe[0] = mid
        x = probe.view(np.float64)
        if sum(int(np.searchsorted(a, x, side="right")[0]) for a in arrays) > k:
            hi = mid
        else:
            lo = mid + 1
    probe[0] = lo
    return float(probe.view(np.float64)[0])


def _median(arrays: list[np.ndarray], n: int) -> float:
    """The median of ``n`` values (ascending arrays), as DuckDB's ``quantile_cont(x, 0.5)`` gives it."""
    upper = kth_smallest(arrays, n // 2)
    if n % 2:
        return upper
    below = [a[: int(np.searchsorted(a, upper, side="left"))] for a in arrays]
    lower = max((float(b[-1]) for b in below if len(b)), default=upper)
    if sum(len(b) for b in below) < n // 2:  # the value below the middle equals it
        lower = upper
    return (lower + upper) / 2


class _Medians:
    """Exact medians of groups of days, reading only the stored duration slices that hold the middle values.

    Per group: add the days' slice counts by slice, find the slice holding each middle position, then
    select within the days' durations of that slice (stored ones are read, in one query for all groups;
    days rebuilt in memory are sliced in place).
    """

    def __init__(self, counts: dict[str, np.ndarray], days: dict[int, session_store.Day], memory: set[int]):
        self.days = days
        self.memory = memory
        self.slices: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        day = np.asarray(counts["day"], np.int64)
        bucket = np.asarray(counts["bucket"], np.int64)
        n = np.asarray(counts["n"], np.int64)
        idx = np.flatnonzero(np.concatenate([[True], day[1:] != day[:-1]]))[: len(day)]
        for a, b in zip(idx.tolist(), np.append(idx[1:], len(day))[: len(idx)].tolist(), strict=True):
            if int(day[a]) not in memory:
                self.slices[int(day[a])] = (bucket[a:b], n[a:b])
        for d in memory:
            values = days[d].durations
            buckets_, first = np.unique(session_store.value_buckets(values), return_index=True)
            self.slices[d] = (buckets_, np.diff(np.append(first, len(values))))
        self.plans: list[tuple[list[int], int, int, int]] = []
        """(days, position, slice, position within the slice)"""

    def plan(self, group: list[int], n: int) -> list[int]:
        """Plan the middle positions of ``group`` (``n`` sessions); returns their indices in :attr:`plans`."""
        group = [d for d in group if d in self.slices]
        bs = np.concatenate([self.slices[d][0] for d in group])
        cs = np.concatenate([self.slices[d][1] for d in group])
        uniq, inv = np.unique(bs, return_inverse=True)
        tot = np.bincount(inv.ravel(), weights=cs, minlength=len(uniq)).astype(np.int64)
        cum = np.cumsum(tot)
        out = []
        for p in sorted({(n - 1) // 2, n // 2}):
            i = int(np.searchsorted(cum, p, side="right"))
            out.append(len(self.plans))
            self.plans.append((group, p, int(uniq[i]), p - int(cum[i] - tot[i])))
        return out

    def wanted(self) -> list[tuple[int, int]]:
        pairs = {
            (d, b)
            for group, _, b, _ in self.plans
            for d in group
            if d not in self.memory and b in self.slices[d][0]
        }
        return sorted(pairs)

    def values(self, stored: dict[tuple[int, int], np.ndarray]) -> list[float]:
        out = []
        for group, _, b, offset in self.plans:
            arrays = []
            for d in group:
                if d in self.memory:
                    values = self.days[d].durations
                    bk = session_store.value_buckets(values)
                    arrays.append(
                        values[int(np.searchsorted(bk, b, "left")) : int(np.searchsorted(bk, b, "right"))]
                    )
                elif (d, b) in stored:
                    arrays.append(stored[(d, b)])
            out.append(kth_smallest(arrays, offset))
        return out


def _summary(
    lvl: str, bucket: datetime | None, days: list[session_store.Day]
) -> tuple[str, datetime | None, int, int, float, int] | None:
    """(lvl, bucket, sessions, persons, average duration, engaged) of ``days``; None without sessions."""
    days = [d for d in days if d.sessions]
    n = sum(d.sessions for d in days)
    if n == 0:
        return None
    persons = len(days[0].persons) if len(days) == 1 else len(BitMap.union(*(d.persons for d in days)))
    avg = sum(d.duration_us for d in days) / (n * _US)
    return (lvl, bucket, n, persons, avg, sum(d.engaged for d in days))


def answer_from_days(
    cur: duckdb.DuckDBPyConnection,
    ctx: QueryContext,
    spec: SessionsSpec,
    params: session_store.SessionParams,
    lo: datetime,
    hi: datetime,
) -> dict[str, Any] | None:
    """``spec``'s result from the day aggregates, or None (no aggregates in the query timezone, or a run the
    raw query would refuse to split).

    Days whose stored sessions all lie in the query's runs (no run from before the range, no session
    reaching past its end) and that receive no rebuilt edge session are read as stored; the others (at
    most a few, next to the edges) are aggregated from their stored sessions and the rebuilt edge
    sessions, exactly as :func:`sessions_sql` reads them.
    """
    if session_store.day_timezone(cur, ctx.project_id) != ctx.timezone:
        return None
    first, last = (spec.first_day - _EPOCH).days, (spec.last_day - _EPOCH).days
    lo_us, hi_us = _micros(lo), _micros(hi)
    days = session_store.load_days(cur, ctx.project_id, first, last, durations=False)
    dirty = {d for d, agg in days.items() if agg.min_run_start < lo_us or agg.max_end >= hi_us}
    crossing = cur.execute(
        """SELECT count(*) FROM session_days WHERE project_id = ? AND day < DATE '1970-01-01' + ?::INTEGER
             AND max_end >= ?""",
        [ctx.project_id, first, lo],
    ).fetchall()[0][0]
    cap = float(params.max_seconds)
    longest = 0.0
    memory: set[int] = set()
    if dirty or crossing:
        cur.register("session_edges", session_store.edge_sessions(cur, ctx.project_id, lo, hi, params))
        edge_days = cur.sql(
            f"SELECT DISTINCT day FROM ({session_store.measures_sql('session_edges', ctx.timezone)})"
        ).fetchall()
        dirty |= {int(r[0]) for r in edge_days}
        dirty = {d for d in dirty if first <= d <= last}
        if dirty:
            cur.register("session_dirty", _days_table(sorted(dirty)))
            near = " OR ".join(  # UTC days around each dirty local day, so row groups can be skipped
                f"start_ts >= make_timestamp({(d - 1) * _DAY_US}) AND start_ts < make_timestamp({(d + 2) * _DAY_US})"
                for d in sorted(dirty)
            )
            measures = session_store.measures_sql(
                f"""(SELECT person_id, start_ts, end_ts, run_start, events FROM person_sessions
                     WHERE project_id = {int(ctx.project_id)} AND run_start >= {lit(lo)} AND end_ts < {lit(hi)}
                       AND start_ts >= {lit(lo)} AND start_ts < {lit(hi)} AND ({near})
                     UNION ALL SELECT person_id, start_ts, end_ts, run_start, events FROM session_edges)""",
                ctx.timezone,
            )
            rows = cur.sql(
                f"SELECT * FROM ({measures}) WHERE day IN (SELECT day FROM session_dirty) ORDER BY day, duration"
            ).to_arrow_table()
            cur.unregister("session_dirty")
            rebuilt = session_store.days_from_rows(rows)
            for d in dirty:
                days.pop(d, None)
            days.update(rebuilt)
            memory = set(rebuilt)
        cur.unregister("session_edges")
    for agg in days.values():
        longest = max(longest, agg.max_run_seconds)
    if longest > cap and int(longest // cap) > sq.MAX_CAP_PASSES:
        return None  # perhaps refused by the raw query (the bound may overstate): let the exact path decide
    start, end = spec.local_bounds()
    groups: list[tuple[str, datetime | None, list[int]]] = []
    for b in buckets(start, end, spec.interval, ctx.week_start):
        d0 = max((b.date() - _EPOCH).days, first)
        d1 = min((next_bucket(b, spec.interval).date() - _EPOCH).days - 1, last)
        groups.append(("b", b, [d for d in range(d0, d1 + 1) if d in days]))
    groups.append(("t", None, sorted(days)))
    medians = _Medians(session_store.slice_counts(cur, ctx.project_id, first, last), days, memory)
    planned = []
    for lvl, bucket, group in groups:
        row = _summary(lvl, bucket, [days[d] for d in group])
        if row is not None:
            planned.append((row, medians.plan(group, row[2])))
    values = medians.values(session_store.duration_slices(cur, ctx.project_id, medians.wanted()))
    rows_out = []
    for (lvl, bucket, n, persons, avg, engaged), at in planned:
        median = values[at[0]] if len(at) == 1 else (values[at[0]] + values[at[1]]) / 2
        rows_out.append((lvl, "", bucket, n, persons, avg, median, engaged))
    return sq.assemble(ctx, spec, rows_out)


def _days_table(days: list[int]) -> pa.Table:
    return pa.table({"day": pa.array(days, pa.int32())})


def _micros(ts: datetime) -> int:
    delta = ts - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds
