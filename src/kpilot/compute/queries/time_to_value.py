"""Time to value: how long after signing up persons first reach value, by signup cohort (docs/queries/time_to_value.md).

Semantics:

* A person's signup is their first-ever ``signup_event`` (all distinct ids merged; events before the range
  count when looking for the first one). Only persons whose first signup lies inside ``[date_from,
  date_to]`` (local time) are in the result; their cohort is the local calendar interval
  (``cohort_interval``) of that signup.
* Their value moment is their first ``value_event`` at or after the signup instant (same instant = 0 s);
  value events before the signup are ignored. Value events after ``date_to`` count too: ``reached`` means
  "reached value by now", with every stored event.
* Persons who never reached value stay in ``persons`` (they are censored, not dropped), so ``reached <=
  persons``. ``reached_within_window`` counts those whose time to value is at most ``window`` (inclusive);
  ``share_within_window`` = reached_within_window / persons (``null`` for an empty cohort). For a cohort
  younger than the window the share is still growing.
* ``median_seconds`` and ``p75_seconds`` are continuous quantiles (linear interpolation between the two
  nearest values) of the time to value of the persons who reached it; ``null`` when nobody did.
* Filters apply to both signup and value events. Times are measured between UTC instants.
* With a breakdown, the value is taken from the first signup event (an event property) or the person.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from kpilot.compute.buckets import as_datetime, bucket_label, buckets
from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import lit
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import TimeToValueSpec

__all__ = ["EARLIEST", "LATEST", "run", "time_to_value_sql"]

EARLIEST = datetime(1900, 1, 1)
"""Lower bound when looking for a person's first-ever signup."""
LATEST = datetime(9999, 1, 1)
"""Upper bound for value events: every stored event counts."""


def time_to_value_sql(ctx: QueryContext, spec: TimeToValueSpec, bd: str | None) -> str:
    """SELECT lvl, bd, cohort, persons, reached, within, median, p75 (``lvl`` 't' rows are per-bd totals)."""
    start, end = spec.local_bounds()
    utc_start, _ = ctx.utc_range(start, end)
    epoch = ctx.dialect.epoch_seconds("e.timestamp")
    signups = ctx.events_source(
        EARLIEST,
        end,
        events=[spec.signup_event],
        filters=spec.filters,
        breakdown_expr=bd,
        extra_columns=f"e.timestamp AS uts, {epoch} AS t",
    )
    values = ctx.events_source(
        start, LATEST, events=[spec.value_event], filters=spec.filters, extra_columns=f"{epoch} AS t"
    )
    secs = "reach.t - f.t"
    agg = (
        f"count(*) AS persons, count(secs) AS reached,\n"
        f"  sum(CASE WHEN secs <= {spec.window.seconds} THEN 1 ELSE 0 END) AS within,\n"
        f"  {ctx.dialect.median('secs')} AS median_secs, {ctx.dialect.quantile('secs', 0.75)} AS p75_secs"
    )
    return (
        f"WITH ranked AS (\n"
        f"  SELECT person_id, ts, bd, uts, t,\n"
        f"    ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY t, bd) AS pos\n"
        f"  FROM ({signups}) s\n"
        f"), first_signup AS (\n"
        f"  SELECT person_id, ts, bd, t FROM ranked WHERE pos = 1 AND uts >= {lit(utc_start)}\n"
        f"), reach AS (\n"
        f"  SELECT f.person_id, MIN(v.t) AS t\n"
        f"  FROM first_signup f JOIN ({values}) v ON v.person_id = f.person_id AND v.t >= f.t\n"
        f"  GROUP BY f.person_id\n"
        f"), per_person AS (\n"
        f"  SELECT f.bd, {ctx.trunc(spec.cohort_interval, 'f.ts')} AS cohort, {secs} AS secs\n"
        f"  FROM first_signup f LEFT JOIN reach ON reach.person_id = f.person_id\n"
        f")\n"
        f"SELECT 'b' AS lvl, bd, cohort, {agg}\nFROM per_person GROUP BY bd, cohort\n"
        f"UNION ALL\n"
        f"SELECT 't' AS lvl, bd, NULL AS cohort, {agg}\nFROM per_person GROUP BY bd"
    )


def _num(value: Any) -> float | None:
    # Differences of epoch seconds held as doubles: round off the noise below microseconds.
    return None if value is None else round(float(value), 6)


def summary(persons: int, reached: int, within: int, median: Any, p75: Any) -> dict[str, Any]:
    return {
        "persons": persons,
        "reached": reached,
        "reached_within_window": within,
        "share_within_window": within / persons if persons else None,
        "median_seconds": _num(median),
        "p75_seconds": _num(p75),
    }


EMPTY = summary(0, 0, 0, None, None)


def run(engine: Any, ctx: QueryContext, spec: TimeToValueSpec) -> dict[str, Any]:
    start, end = spec.local_bounds()
    bd_expr, top = bdmod.resolve(engine, ctx, spec.breakdown, start, end, [spec.signup_event], spec.filters)
    cohorts: dict[str, dict[datetime, dict[str, Any]]] = defaultdict(dict)
    totals: dict[str, dict[str, Any]] = {}
    for lvl, bd_value, cohort, persons, reached, within, median, p75 in engine.fetchall(
        time_to_value_sql(ctx, spec, bd_expr)
    ):
        fields = summary(int(persons), int(reached), int(within or 0), median, p75)
        if lvl == "t":
            totals[str(bd_value)] = fields
        else:
            cohorts[str(bd_value)][as_datetime(cohort)] = fields
    labels = buckets(start, end, spec.cohort_interval, ctx.week_start)

    def build(bd: str) -> dict[str, Any]:
        rows = cohorts.get(bd, {})
        return {
            "cohorts": [
                {"date": bucket_label(b, spec.cohort_interval), **rows.get(b, EMPTY)} for b in labels
            ],
            "totals": totals.get(bd, dict(EMPTY)),
        }

    return bdmod.wrap(spec.breakdown, top, set(totals), build)
