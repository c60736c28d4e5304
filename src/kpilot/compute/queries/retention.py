"""Retention: cohorts by calendar period of a start event, and who came back in each later period.

Semantics (docs/queries/retention.md, PostHog's conventions):

* Periods (hour, day, week, month) are calendar-aligned in the query timezone; weeks start on the project's
  week start unless the spec sets ``week_start``.
* The last cohort is the period holding the last instant of the range (``date_to``'s whole day when it is
  a date); the first cohort is ``intervals - 1`` periods before it. ``date_from`` plays no part.
* ``recurring``: cohort i = everyone who did the start event in period i. ``first_time``: a person's
  first-ever start event (all history, filters applied) picks their one cohort; people whose first start
  event is before the first cohort are in no cohort.
* ``values[0]`` = cohort size; ``values[k]`` (k >= 1) = cohort members who did the return event in period
  ``cohort + k``; a return in the cohort's own period does not count. With ``cumulative`` a member counts
  at every k from 1 to the latest period in which they returned ("on or after").
* Returns are counted up to the end of the last cohort's period; entries for periods after it have not
  happened yet and are 0, so every row has exactly ``intervals`` values.
* Filters apply to start and return events alike. A breakdown splits cohorts by the start event's property
  (event breakdown, the first-ever start event's for ``first_time``) or the person's property; returns are
  any return events of the person.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from kpilot.compute.buckets import bucket_label, bucket_start, next_bucket
from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import lit
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import RetentionSpec

__all__ = ["EARLIEST", "cohort_starts", "retention_sql", "run"]

EARLIEST = datetime(1, 1, 2)
"""Lower bound for "all history" (first-time cohorts): before any timestamp a Python datetime can hold."""


def shift(start: datetime, period: str, n: int) -> datetime:
    """``start`` (a period start) moved by ``n`` whole calendar periods (``n`` may be negative)."""
    if period == "month":
        months = start.year * 12 + start.month - 1 + n
        return start.replace(year=months // 12, month=months % 12 + 1)
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}[period]
    return start + n * step


def cohort_starts(spec: RetentionSpec, week_start: str) -> list[datetime]:
    """Starts of the ``intervals`` cohort periods, oldest first; the last holds the range's last instant."""
    _, end = spec.local_bounds()
    last = bucket_start(end - timedelta(microseconds=1), spec.period, week_start)
    return [shift(last, spec.period, i - spec.intervals + 1) for i in range(spec.intervals)]


def retention_sql(ctx: QueryContext, spec: RetentionSpec, first: datetime, bd: str | None) -> str:
    """SELECT bd, cohort, k, persons.

    Rows with k = 0 are cohort sizes. Otherwise ``persons`` is, per (bd, cohort, k >= 1), the members who
    returned in period cohort + k, or with ``cumulative`` the members whose latest return is in that period.
    """
    n = spec.intervals
    window_end = shift(first, spec.period, n)
    idx = ctx.dialect.periods_between(spec.period, lit(first), ctx.trunc(spec.period, "ts"))
    source = ctx.events_source(
        first,
        window_end,
        events=[spec.start_event, spec.return_event],
        filters=spec.filters,
        breakdown_expr=bd,
    )
    returns = (
        f"returns AS (\n  SELECT DISTINCT person_id, idx FROM ev\n"
        f"  WHERE {ctx.event_condition(spec.return_event, 'event')} AND idx BETWEEN 1 AND {n - 1}\n)"
    )
    if spec.retention_type == "recurring":
        starts = (
            f"starts AS (\n  SELECT DISTINCT bd, person_id, idx AS cohort FROM ev\n"
            f"  WHERE {ctx.event_condition(spec.start_event, 'event')} AND idx BETWEEN 0 AND {n - 1}\n)"
        )
    else:
        history = ctx.events_source(
            EARLIEST, window_end, events=[spec.start_event], filters=spec.filters, breakdown_expr=bd
        )
        starts = (
            f"firsts AS (\n"
            f"  SELECT bd, person_id, ts, row_number() OVER (PARTITION BY person_id ORDER BY ts, bd) AS rn\n"
            f"  FROM ({history}) h\n"
            f"), starts AS (\n"
            f"  SELECT bd, person_id, cohort FROM (\n"
            f"    SELECT bd, person_id, {idx} AS cohort FROM firsts WHERE rn = 1\n"
            f"  ) f WHERE cohort BETWEEN 0 AND {n - 1}\n)"
        )
    if spec.cumulative:
        # a member counts at every k up to their latest return: report the latest, sum suffixes later
        back = (
            "SELECT bd, cohort, k, count(*) AS persons FROM (\n"
            "  SELECT s.bd, s.person_id, s.cohort, max(r.idx) - s.cohort AS k\n"
            "  FROM starts s JOIN returns r ON r.person_id = s.person_id AND r.idx > s.cohort\n"
            "  GROUP BY 1, 2, 3\n) latest GROUP BY 1, 2, 3"
        )
    else:
        back = (
            "SELECT s.bd, s.cohort, r.idx - s.cohort AS k, count(*) AS persons\n"
            "FROM starts s JOIN returns r ON r.person_id = s.person_id AND r.idx > s.cohort\n"
            "GROUP BY 1, 2, 3"
        )
    return (
        f"WITH ev AS (\n  SELECT bd, person_id, event, {idx} AS idx FROM ({source}) src\n),\n"
        f"{starts},\n{returns}\n"
        f"SELECT bd, cohort, 0 AS k, count(*) AS persons FROM starts GROUP BY 1, 2\n"
        f"UNION ALL\n{back}"
    )


def run(engine: Any, ctx: QueryContext, spec: RetentionSpec) -> dict[str, Any]:
    starts = cohort_starts(spec, ctx.week_start)
    n = spec.intervals
    first, window_end = starts[0], next_bucket(starts[-1], spec.period)
    bd_expr, top = bdmod.resolve(
        engine, ctx, spec.breakdown, first, window_end, [spec.start_event], spec.filters
    )
    tables: dict[str, list[list[int]]] = defaultdict(lambda: [[0] * n for _ in range(n)])
    for bd_value, cohort, k, persons in engine.fetchall(retention_sql(ctx, spec, first, bd_expr)):
        tables[str(bd_value)][int(cohort)][int(k)] = int(persons)
    if spec.cumulative:
        for table in tables.values():
            for row in table:
                # row[1:] holds "latest return at k" counts: a suffix sum turns them into "on or after"
                for k in range(n - 2, 0, -1):
                    row[k] += row[k + 1]

    def build(bd: str) -> dict[str, Any]:
        table = tables.get(bd) or [[0] * n for _ in range(n)]
        return {
            "rows": [
                {"date": bucket_label(start, spec.period), "values": table[i]}
                for i, start in enumerate(starts)
            ]
        }

    return bdmod.wrap(spec.breakdown, top, set(tables), build)
