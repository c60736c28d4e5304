"""Trends: totals, unique persons (DAU), rolling WAU/MAU and DAU/MAU per interval.

Semantics (docs/metrics/engagement.md): DAU = distinct persons per local calendar bucket. With a day
interval, WAU and MAU are rolling windows of 7 and 30 days ending on (and including) the day; with week or
month intervals they are distinct persons per calendar bucket.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from kpilot.compute.buckets import as_datetime, bucket_label, buckets
from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import lit
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import TrendsSpec

__all__ = ["ROLLING_DAYS", "run"]

ROLLING_DAYS = {"wau": 7, "mau": 30}

Series = dict[str, dict[datetime, float]]


def run(engine: Any, ctx: QueryContext, spec: TrendsSpec) -> dict[str, Any]:
    start, end = spec.local_bounds()
    bd_expr, top = bdmod.resolve(engine, ctx, spec.breakdown, start, end, [spec.event], spec.filters)
    current = _compute(engine, ctx, spec, start, end, bd_expr)
    labels = buckets(start, end, spec.interval, ctx.week_start)
    previous: Series = {}
    prev_labels: list[datetime] = []
    if spec.compare:
        shift = end - start
        previous = _compute(engine, ctx, spec, start - shift, start, bd_expr)
        prev_labels = buckets(start - shift, start, spec.interval, ctx.week_start)
    present = set(current) | set(previous)

    def build(bd: str) -> dict[str, Any]:
        out: dict[str, Any] = {"series": _series(current.get(bd, {}), labels, spec)}
        if spec.compare:
            out["previous"] = _series(previous.get(bd, {}), prev_labels, spec)
        return out

    return bdmod.wrap(spec.breakdown, top, present, build)


def _series(values: dict[datetime, float], labels: list[datetime], spec: TrendsSpec) -> list[dict[str, Any]]:
    zero: float = 0.0 if spec.math == "dau_mau_ratio" else 0
    return [{"date": bucket_label(b, spec.interval), "value": values.get(b, zero)} for b in labels]


def _compute(
    engine: Any, ctx: QueryContext, spec: TrendsSpec, start: datetime, end: datetime, bd: str | None
) -> Series:
    if spec.math == "dau_mau_ratio":
        dau = _per_bucket(engine, ctx, spec, start, end, bd, distinct=True)
        mau = _rolling(engine, ctx, spec, start, end, bd, 30)
        return {
            k: {day: (dau.get(k, {}).get(day, 0) / m if m else 0.0) for day, m in mau[k].items()} for k in mau
        }
    if spec.math in ROLLING_DAYS and spec.interval == "day":
        return _rolling(engine, ctx, spec, start, end, bd, ROLLING_DAYS[spec.math])
    return _per_bucket(engine, ctx, spec, start, end, bd, distinct=spec.math != "total")


def _per_bucket(
    engine: Any,
    ctx: QueryContext,
    spec: TrendsSpec,
    start: datetime,
    end: datetime,
    bd: str | None,
    *,
    distinct: bool,
) -> Series:
    source = ctx.events_source(start, end, events=[spec.event], filters=spec.filters, breakdown_expr=bd)
    agg = "count(DISTINCT person_id)" if distinct else "count(*)"
    sql = f"SELECT bd, {ctx.trunc(spec.interval, 'ts')} AS bucket, {agg} AS value\nFROM ({source}) s\nGROUP BY 1, 2"
    out: Series = defaultdict(dict)
    for bd_value, bucket, value in engine.fetchall(sql):
        out[str(bd_value)][as_datetime(bucket)] = int(value)
    return out


def rolling_sql(ctx: QueryContext, source: str, days: list[date], window: int) -> str:
    """Distinct persons over ``[day - window + 1, day]`` for each of ``days``."""
    values = ", ".join(f"({lit(d)})" for d in days)
    lower = ctx.dialect.add_days("d.day", -(window - 1))
    return (
        f"WITH pd AS (SELECT DISTINCT bd, person_id, CAST(ts AS DATE) AS day FROM ({source}) s)\n"
        f"SELECT pd.bd, d.day, count(DISTINCT pd.person_id) AS value\n"
        f"FROM (VALUES {values}) AS d(day) JOIN pd ON pd.day <= d.day AND pd.day >= {lower}\n"
        f"GROUP BY 1, 2"
    )


def _rolling(
    engine: Any,
    ctx: QueryContext,
    spec: TrendsSpec,
    start: datetime,
    end: datetime,
    bd: str | None,
    window: int,
) -> Series:
    days = [d.date() for d in buckets(start, end, "day")]
    src_start = datetime.combine(days[0], datetime.min.time()) - timedelta(days=window - 1)
    source = ctx.events_source(src_start, end, events=[spec.event], filters=spec.filters, breakdown_expr=bd)
    out: Series = defaultdict(dict)
    for bd_value, day, value in engine.fetchall(rolling_sql(ctx, source, days, window)):
        out[str(bd_value)][as_datetime(day)] = int(value)
    # every breakdown value gets every day (zero where nobody was active in the window)
    for series in out.values():
        for d in days:
            series.setdefault(as_datetime(d), 0)
    if not out:
        out[""] = {as_datetime(d): 0 for d in days}
    return out
