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
"""

from __future__ import annotations

from typing import Any

import duckdb

from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import DIALECTS, lit
from kpilot.compute.queries import sessions as sq
from kpilot.compute.spec import QuerySpec, SessionsSpec
from kpilot.store import session_store
from kpilot.store.duckdb_store import EventStore
from kpilot.workspace import ProjectInfo

__all__ = ["answer_from_store", "answerable", "sessions_sql"]


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
