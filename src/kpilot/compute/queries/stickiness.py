"""Stickiness: how many persons were active in exactly k of the range's intervals.

Semantics (docs/queries/stickiness.md):

* The range ``[date_from, date_to]`` (local time) is cut into calendar intervals (day, week or month). Every
  interval that overlaps the range counts, including a partial first or last week or month, so the result
  has one entry per interval: ``intervals = N`` and ``values`` has N entries.
* Only events inside the range count; an interval counts as active for a person when the person did at
  least ``min_events`` matching events in it (the part of it inside the range).
* ``values[k-1]`` = persons active in exactly k intervals; with ``cumulative`` it is persons active in k or
  more intervals.
* With a breakdown, each person is counted once per breakdown value, using only the events carrying that
  value (an event-property breakdown) or all the person's events (a person-property breakdown).

The SQL returns one row per (breakdown value, k) with a person count; the cumulative sums are taken over
those at most N numbers.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kpilot.compute.buckets import buckets
from kpilot.compute.context import QueryContext
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import StickinessSpec

__all__ = ["run", "stickiness_sql"]


def stickiness_sql(ctx: QueryContext, spec: StickinessSpec, bd: str | None) -> str:
    """SELECT bd, k, persons: persons (per breakdown value) with exactly k active intervals."""
    start, end = spec.local_bounds()
    source = ctx.events_source(start, end, events=[spec.event], filters=spec.filters, breakdown_expr=bd)
    return (
        f"WITH per_interval AS (\n"
        f"  SELECT bd, person_id, {ctx.trunc(spec.interval, 'ts')} AS bucket, count(*) AS n\n"
        f"  FROM ({source}) s\n"
        f"  GROUP BY 1, 2, 3\n"
        f"), per_person AS (\n"
        f"  SELECT bd, person_id, count(*) AS k FROM per_interval WHERE n >= {int(spec.min_events)} GROUP BY 1, 2\n"
        f")\n"
        f"SELECT bd, k, count(*) AS persons FROM per_person GROUP BY 1, 2"
    )


def run(engine: Any, ctx: QueryContext, spec: StickinessSpec) -> dict[str, Any]:
    start, end = spec.local_bounds()
    n_intervals = len(buckets(start, end, spec.interval, ctx.week_start))
    bd_expr, top = bdmod.resolve(engine, ctx, spec.breakdown, start, end, [spec.event], spec.filters)
    exact: dict[str, list[int]] = defaultdict(lambda: [0] * n_intervals)
    for bd_value, k, persons in engine.fetchall(stickiness_sql(ctx, spec, bd_expr)):
        # k <= n_intervals always holds: a person's active intervals are distinct intervals of the range.
        exact[str(bd_value)][int(k) - 1] = int(persons)

    def build(bd: str) -> dict[str, Any]:
        counts = list(exact.get(bd, [0] * n_intervals))
        if spec.cumulative:
            for i in range(n_intervals - 2, -1, -1):
                counts[i] += counts[i + 1]
        return {"values": counts, "intervals": n_intervals}

    return bdmod.wrap(spec.breakdown, top, set(exact), build)
