"""Sessions: count, duration, frequency and engagement of sessions built from events (docs/queries/sessions.md).

Semantics:

* Only events inside ``[date_from, date_to]`` (local time) that pass the filters are sessionized. A session
  that really started before the range (or ends after it) is cut at the range edge: its part inside the
  range is a session of its own.
* Per person (all distinct ids merged), events are ordered by their UTC instant. A new session starts when
  the gap since the previous event is longer than ``inactivity_minutes`` (a gap of exactly that long keeps
  the session going), or when the event is more than ``max_hours`` after the session's first event (so no
  session lasts longer than ``max_hours``). Durations and gaps are measured on UTC instants, so a daylight
  saving change never stretches or shrinks a session.
* Duration = last event minus first event, in seconds (a single-event session lasts 0 s).
* Engaged session (GA4's rule): it lasts longer than ``engaged_seconds``, or contains one of ``key_events``,
  or contains at least two events named in ``pageview_events``. Engagement rate = engaged / sessions;
  bounce rate = 1 - engagement rate.
* A session belongs to the interval (local calendar day/week/month) of its first event; its breakdown value
  is the one of its first event (on a tie at the first instant, the smallest value).
* ``persons`` = distinct persons with at least one session (in the interval, or in the whole range for the
  totals); ``sessions_per_person`` = sessions / persons. The totals are computed over all sessions of the
  range (the median is not a mean of interval medians).
* Empty intervals report 0 sessions, 0 persons, 0 engaged and ``null`` for the averages, the median and the
  rates (there is nothing to average).

The inactivity split is one LAG plus a running SUM. The ``max_hours`` cap is sequential (each cut depends on
where the previous session began), so it is applied in passes: each pass cuts every over-long session once,
at its first event more than ``max_hours`` after its start. Only runs longer than ``max_hours`` go through
the passes, and a first query tells how many passes the data needs (usually none).

Without a breakdown there is a faster plan (:func:`sessions_fast_sql`): sessions are the inactivity runs
grouped directly (two window passes instead of four), and the same statement reports how many cap passes
the data needs; only when that is more than none (activity with no pause long enough for over
``max_hours``: rare) does the full plan run. So the usual cost is one statement.

This is the raw-event path. Specs without filters or breakdown at the default splitting are answered by the
DuckDB engine from the store's materialised sessions (:mod:`kpilot.compute.sessions_mat`), which reuses
:func:`scored_sql` and :func:`assemble` so both paths report the same JSON.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kpilot.compute.buckets import as_datetime, bucket_label, buckets
from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import lit
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import SessionsSpec
from kpilot.errors import SpecError

__all__ = [
    "MAX_CAP_PASSES",
    "assemble",
    "cap_passes_sql",
    "count_sql",
    "run",
    "scored_sql",
    "sessions_fast_sql",
    "sessions_sql",
    "too_many_passes",
]

MAX_CAP_PASSES = 200
"""Upper bound on ``max_hours`` passes; more means months of unbroken activity (usually a bot)."""

_COLS = "person_id, event, ts, bd, t, run_no"


def _in_list(col: str, names: Sequence[str]) -> str:
    return f"{col} IN (" + ", ".join(lit(n) for n in sorted(set(names))) + ")" if names else "FALSE"


def count_sql(col: str, names: Sequence[str]) -> str:
    """SQL counting the events of a session named in ``names``, from its ``LIST<STRUCT(event, n)>`` column
    (materialised sessions, :mod:`kpilot.compute.sessions_mat`)."""
    if not names:
        return "0"
    return f"coalesce(list_sum([x.n FOR x IN {col} IF {_in_list('x.event', names)}]), 0)"


def _runs_sql(ctx: QueryContext, spec: SessionsSpec, bd: str | None, seg0: bool = True) -> str:
    """CTEs ``runs`` (events numbered by inactivity run per person) and ``seg0`` (with run start and end)."""
    start, end = spec.local_bounds()
    source = ctx.events_source(
        start,
        end,
        filters=spec.filters,
        breakdown_expr=bd,
        extra_columns=f"{ctx.dialect.epoch_seconds('e.timestamp')} AS t",
    )
    gap = spec.inactivity_minutes * 60
    # LAG is NULL for a person's first event: the comparison is NULL and the CASE yields 1 (a new run).
    # The running SUM uses a RANGE frame so events at the same instant always share a run number.
    return (
        f"WITH gapped AS (\n"
        f"  SELECT person_id, event, ts, bd, t,\n"
        f"    CASE WHEN t - LAG(t) OVER (PARTITION BY person_id ORDER BY t) <= {gap} THEN 0 ELSE 1 END AS brk\n"
        f"  FROM ({source}) s\n"
        f"), runs AS (\n"
        f"  SELECT person_id, event, ts, bd, t,\n"
        f"    SUM(brk) OVER (PARTITION BY person_id ORDER BY t\n"
        f"                   RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run_no\n"
        f"  FROM gapped\n"
        + (
            f"), seg0 AS (\n"
            f"  SELECT {_COLS},\n"
            f"    MIN(t) OVER (PARTITION BY person_id, run_no) AS seg_start,\n"
            f"    MAX(t) OVER (PARTITION BY person_id, run_no) AS run_end\n"
            f"  FROM runs\n"
            if seg0
            else ""
        )
        + ")"
    )


def cap_passes_sql(ctx: QueryContext, spec: SessionsSpec, bd: str | None = None) -> str:
    """SELECT the number of ``max_hours`` passes needed: the longest run divided by the cap, rounded down.

    With n cuts in a run, its last event is more than n caps after its first, so floor(length / cap) passes
    always suffice; an extra pass changes nothing.
    """
    cap = spec.max_hours * 3600
    return (
        _runs_sql(ctx, spec, bd)
        + f"\nSELECT coalesce(max(floor((run_end - seg_start) / {cap})), 0) FROM seg0 WHERE run_end - seg_start > {cap}"
    )


def sessions_sql(ctx: QueryContext, spec: SessionsSpec, bd: str | None, passes: int) -> str:
    """SELECT lvl, bd, bucket, sessions, persons, avg_duration, median_duration, engaged.

    ``lvl`` is ``'b'`` for one row per (breakdown value, interval) and ``'t'`` for the range totals of each
    breakdown value (``bucket`` NULL).
    """
    cap = spec.max_hours * 3600
    parts = [_runs_sql(ctx, spec, bd)]
    parts.append(f", long0 AS (SELECT {_COLS}, seg_start FROM seg0 WHERE run_end - seg_start > {cap})")
    for k in range(1, passes + 1):
        # One cut per over-long session: its first event more than `cap` after the session start begins the
        # next session, together with every later event of the run segment.
        parts.append(
            f", long{k} AS (\n"
            f"  SELECT {_COLS}, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start\n"
            f"  FROM (SELECT {_COLS}, seg_start,\n"
            f"          MIN(CASE WHEN t > seg_start + {cap} THEN t END)\n"
            f"            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt\n"
            f"        FROM long{k - 1}) x\n"
            f")"
        )
    parts.append(
        f", cut AS (\n"
        f"  SELECT {_COLS}, seg_start FROM seg0 WHERE run_end - seg_start <= {cap}\n"
        f"  UNION ALL SELECT {_COLS}, seg_start FROM long{passes}\n"
        f"), marked AS (\n"
        f"  SELECT {_COLS}, seg_start,\n"
        f"    ROW_NUMBER() OVER (PARTITION BY person_id, run_no, seg_start ORDER BY t, bd) AS pos\n"
        f"  FROM cut\n"
        f"), sess AS (\n"
        f"  SELECT person_id,\n"
        f"    MAX(CASE WHEN pos = 1 THEN bd END) AS bd,\n"
        f"    MAX(CASE WHEN pos = 1 THEN ts END) AS start_ts,\n"
        f"    MAX(t) - MIN(t) AS duration,\n"
        f"    SUM(CASE WHEN {_in_list('event', spec.pageview_events)} THEN 1 ELSE 0 END) AS pageviews,\n"
        f"    SUM(CASE WHEN {_in_list('event', spec.key_events)} THEN 1 ELSE 0 END) AS key_hits\n"
        f"  FROM marked GROUP BY person_id, run_no, seg_start\n" + scored_sql(ctx, spec)
    )
    return "\n".join(parts)


def scored_sql(ctx: QueryContext, spec: SessionsSpec) -> str:
    """From CTE ``sess`` (one row per session) to the reported rows (continues a WITH list)."""
    engaged = (
        f"CASE WHEN duration > {spec.engaged_seconds} OR key_hits > 0 OR pageviews >= 2 THEN 1 ELSE 0 END"
    )
    agg = (
        f"count(*) AS sessions, count(DISTINCT person_id) AS persons, avg(duration) AS avg_duration,\n"
        f"  {ctx.dialect.median('duration')} AS median_duration, sum(engaged) AS engaged"
    )
    return (
        f"), scored AS (\n"
        f"  SELECT person_id, bd, {ctx.trunc(spec.interval, 'start_ts')} AS bucket, duration, {engaged} AS engaged\n"
        f"  FROM sess\n"
        f")\n"
        f"SELECT 'b' AS lvl, bd, bucket, {agg}\nFROM scored GROUP BY bd, bucket\n"
        f"UNION ALL\n"
        f"SELECT 't' AS lvl, bd, NULL AS bucket, {agg}\nFROM scored GROUP BY bd"
    )


def sessions_fast_sql(ctx: QueryContext, spec: SessionsSpec) -> str:
    """Like :func:`sessions_sql` without breakdown and with no cap pass, plus a row ``lvl`` ``'x'`` whose
    ``sessions`` column is the number of ``max_hours`` passes the data needs (0: the other rows are final).

    Each inactivity run is one session (true when no run is longer than ``max_hours``); its first event's
    local time is the one at its smallest instant (events at the same instant share their local time).
    """
    cap = spec.max_hours * 3600
    return (
        _runs_sql(ctx, spec, None, seg0=False) + f", sess AS (\n"
        f"  SELECT person_id, MIN(bd) AS bd, {ctx.dialect.arg_min('ts', 't')} AS start_ts,\n"
        f"    MAX(t) - MIN(t) AS duration,\n"
        f"    SUM(CASE WHEN {_in_list('event', spec.pageview_events)} THEN 1 ELSE 0 END) AS pageviews,\n"
        f"    SUM(CASE WHEN {_in_list('event', spec.key_events)} THEN 1 ELSE 0 END) AS key_hits\n"
        f"  FROM runs GROUP BY person_id, run_no\n" + scored_sql(ctx, spec) + f"\nUNION ALL\n"
        f"SELECT 'x' AS lvl, NULL AS bd, NULL AS bucket,\n"
        f"  coalesce(max(floor(duration / {cap})), 0) AS sessions, 0 AS persons,\n"
        f"  NULL AS avg_duration, NULL AS median_duration, 0 AS engaged\n"
        f"FROM sess WHERE duration > {cap}"
    )


def _round(value: Any) -> float | None:
    # Durations come from differences of epoch seconds held as doubles: round off the float noise below
    # the store's microsecond resolution.
    return None if value is None else round(float(value), 6)


def summary(sessions: int, persons: int, avg: Any, median: Any, engaged: int) -> dict[str, Any]:
    """The reported fields for one interval or the totals; ratios are ``None`` when there is no session."""
    return {
        "sessions": sessions,
        "persons": persons,
        "avg_duration_seconds": _round(avg) if sessions else None,
        "median_duration_seconds": _round(median) if sessions else None,
        "sessions_per_person": sessions / persons if persons else None,
        "engaged_sessions": engaged,
        "engagement_rate": engaged / sessions if sessions else None,
        "bounce_rate": (sessions - engaged) / sessions if sessions else None,
    }


EMPTY = summary(0, 0, None, None, 0)


def run(engine: Any, ctx: QueryContext, spec: SessionsSpec) -> dict[str, Any]:
    start, end = spec.local_bounds()
    bd_expr, top = bdmod.resolve(engine, ctx, spec.breakdown, start, end, None, spec.filters)
    rows: list[Any] | None = None
    if bd_expr is None:
        rows = engine.fetchall(sessions_fast_sql(ctx, spec))
        passes = next((int(r[3] or 0) for r in rows if r[0] == "x"), 0)
    else:
        passes = int(engine.fetchall(cap_passes_sql(ctx, spec))[0][0] or 0)
    if passes > MAX_CAP_PASSES:
        raise too_many_passes(passes, spec)
    if rows is None or passes:
        rows = engine.fetchall(sessions_sql(ctx, spec, bd_expr, passes))
    return assemble(ctx, spec, rows, top)


def too_many_passes(passes: int, spec: SessionsSpec) -> SpecError:
    return SpecError(
        f"a person has an unbroken run of activity over {passes} x {spec.max_hours} h long; splitting it "
        f"needs more than {MAX_CAP_PASSES} passes. Narrow the date range, filter out the automated "
        f"traffic, or raise max_hours",
        field="max_hours",
    )


def assemble(
    ctx: QueryContext, spec: SessionsSpec, rows: Sequence[Any], top: Sequence[str] = ()
) -> dict[str, Any]:
    """The result JSON from rows (lvl, bd, bucket, sessions, persons, avg, median, engaged); rows with
    ``lvl`` 'x' are ignored."""
    start, end = spec.local_bounds()
    labels = buckets(start, end, spec.interval, ctx.week_start)
    per_bucket: dict[str, dict[datetime, dict[str, Any]]] = defaultdict(dict)
    totals: dict[str, dict[str, Any]] = {}
    for lvl, bd_value, bucket, n, persons, avg, median, engaged in rows:
        if lvl == "x":
            continue
        fields = summary(int(n), int(persons), avg, median, int(engaged))
        if lvl == "t":
            totals[str(bd_value)] = fields
        else:
            per_bucket[str(bd_value)][as_datetime(bucket)] = fields

    def build(bd: str) -> dict[str, Any]:
        series = per_bucket.get(bd, {})
        return {
            "totals": totals.get(bd, dict(EMPTY)),
            "series": [{"date": bucket_label(b, spec.interval), **series.get(b, EMPTY)} for b in labels],
        }

    return bdmod.wrap(spec.breakdown, top, set(totals), build)
