"""Feature adoption: the share of active persons who used a feature, per interval (docs/queries/feature_adoption.md).

Semantics:

* The range ``[date_from, date_to]`` (local time) is cut into calendar intervals (day, week or month); every
  interval overlapping the range is reported, a partial first or last one counting only its part inside
  the range.
* ``active`` = distinct persons who did ``active_event`` in the interval (any event when it is null).
* ``adopters`` = distinct persons who did ``event`` in the interval *and* are active in it. With
  ``active_event`` null every adopter is active anyway; with a specific ``active_event`` a person who used
  the feature but did not do the active event is not counted, so ``value`` always lies in [0, 1].
* ``value`` = adopters / active, and 0.0 for an interval without active persons.
* Filters apply to every event considered (feature and active events alike).
* With a breakdown, both counts use only the events carrying the breakdown value (an event-property
  breakdown) or all the person's events (a person-property breakdown).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from kpilot.compute.buckets import as_datetime, bucket_label, buckets
from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import lit
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import FeatureAdoptionSpec

__all__ = ["adoption_sql", "run"]


def adoption_sql(ctx: QueryContext, spec: FeatureAdoptionSpec, bd: str | None) -> str:
    """SELECT bd, bucket, adopters, active: one row per breakdown value and interval with an active person."""
    start, end = spec.local_bounds()
    source = ctx.events_source(
        start, end, events=[spec.event, spec.active_event], filters=spec.filters, breakdown_expr=bd
    )
    return (
        f"WITH per_person AS (\n"
        f"  SELECT bd, {ctx.trunc(spec.interval, 'ts')} AS bucket, person_id,\n"
        f"    MAX(CASE WHEN event = {lit(spec.event)} THEN 1 ELSE 0 END) AS used,\n"
        f"    MAX(CASE WHEN {ctx.event_condition(spec.active_event, 'event')} THEN 1 ELSE 0 END) AS active\n"
        f"  FROM ({source}) s\n"
        f"  GROUP BY 1, 2, 3\n"
        f")\n"
        f"SELECT bd, bucket, SUM(used * active) AS adopters, SUM(active) AS active\n"
        f"FROM per_person GROUP BY bd, bucket HAVING SUM(active) > 0"
    )


def run(engine: Any, ctx: QueryContext, spec: FeatureAdoptionSpec) -> dict[str, Any]:
    start, end = spec.local_bounds()
    bd_expr, top = bdmod.resolve(
        engine, ctx, spec.breakdown, start, end, [spec.event, spec.active_event], spec.filters
    )
    counts: dict[str, dict[datetime, tuple[int, int]]] = defaultdict(dict)
    for bd_value, bucket, adopters, active in engine.fetchall(adoption_sql(ctx, spec, bd_expr)):
        counts[str(bd_value)][as_datetime(bucket)] = (int(adopters), int(active))
    labels = buckets(start, end, spec.interval, ctx.week_start)

    def build(bd: str) -> dict[str, Any]:
        series = counts.get(bd, {})
        out = []
        for b in labels:
            adopters, active = series.get(b, (0, 0))
            out.append(
                {
                    "date": bucket_label(b, spec.interval),
                    "adopters": adopters,
                    "active": active,
                    "value": adopters / active if active else 0.0,
                }
            )
        return {"series": out}

    return bdmod.wrap(spec.breakdown, top, set(counts), build)
