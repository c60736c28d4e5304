"""Acquisition: spend, conversions and conversion rate per period, overall and by channel.

* **Spend** = sales and marketing spend on the period's days (``settings.spend_categories``), converted to
  the reporting currency at the rate in force on each spend day.
* **Channel** of a person: the imported customer channel if the person is a customer with one, else the
  ``utm_source`` (or ``$referring_domain``) of their first event that has one (first touch).
* **Conversions** = distinct persons doing ``settings.conversion_event`` in the period, attributed to their
  channel. **CPA** = spend / conversions (per channel: the channel's spend / its conversions).
* **Conversion rate** = the funnel ``[visitor_event, conversion_event]`` run by the funnel engine on each
  period (conversion within ``conversion_window_days`` of the visit, both inside the period): persons who
  converted / persons who visited. Its breakdown is the funnel's: the value on the visit event (e.g.
  ``utm_source``), so "conversion rate by channel" is a breakdown on ``utm_source``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from kpilot.compute.context import BREAKDOWN_NONE, BREAKDOWN_OTHER, QueryContext
from kpilot.compute.dialect import lit
from kpilot.compute.spec import Breakdown, FunnelSpec, PropertyFilter, Window
from kpilot.errors import KpilotError, SpecError
from kpilot.revenue.scope import first_touch_cte
from kpilot.revenue.settings import RevenueSettings

__all__ = ["channel_case", "conversion_rates", "conversions", "spend", "spend_channels"]

Bounds = list[tuple[date, date, date]]


def spend_channels(engine: Any, project_id: int, limit: int) -> list[str]:
    """Channels with most spend (all time), for breakdown top values."""
    rows = engine.fetchall(
        f"SELECT channel, sum(amount) AS s FROM spend WHERE project_id = {project_id} "
        f"GROUP BY channel ORDER BY s DESC, channel LIMIT {limit}"
    )
    return [str(r[0]) for r in rows]


def channel_case(expr: str, top: list[str]) -> str:
    if not top:
        return f"CASE WHEN {expr} IS NULL THEN {lit(BREAKDOWN_NONE)} ELSE {lit(BREAKDOWN_OTHER)} END"
    values = ", ".join(lit(v) for v in top)
    return (
        f"CASE WHEN {expr} IS NULL THEN {lit(BREAKDOWN_NONE)} WHEN {expr} IN ({values}) THEN {expr} "
        f"ELSE {lit(BREAKDOWN_OTHER)} END"
    )


def _label(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value  # type: ignore[no-any-return]


def spend(
    engine: Any,
    ctx: QueryContext,
    s: RevenueSettings,
    bounds: Bounds,
    interval: str,
    top: list[str] | None,
) -> dict[str, dict[date, Decimal]]:
    """Spend per channel group (``''`` when ``top`` is None) and period label."""
    lo, hi = bounds[0][1], bounds[-1][2]
    cur = lit(s.currency)
    cats = ", ".join(lit(c) for c in s.spend_categories)
    rates = (
        f"SELECT day, currency, CAST(rate AS DOUBLE) AS rate FROM fx_rates WHERE project_id = {ctx.project_id} AND quote = {cur} "
        f"UNION ALL SELECT day, quote, 1.0 / CAST(rate AS DOUBLE) FROM fx_rates WHERE project_id = {ctx.project_id} AND currency = {cur}"
    )
    bd = "''" if top is None else channel_case("x.channel", top)
    sql = (
        f"WITH x AS (SELECT row_number() OVER (ORDER BY day, channel, campaign, category) AS rid, * FROM spend\n"
        f"  WHERE project_id = {ctx.project_id} AND day >= {lit(lo)} AND day < {lit(hi)} AND category IN ({cats})),\n"
        f"r AS (SELECT rid, rate FROM (SELECT x.rid, r.rate, row_number() OVER (PARTITION BY x.rid ORDER BY r.day DESC) AS rn\n"
        f"  FROM x JOIN ({rates}) r ON r.currency = x.currency AND r.day <= x.day WHERE x.currency <> {cur}) y WHERE rn = 1)\n"
        f"SELECT {bd} AS bd, {ctx.trunc(interval, 'x.day')} AS bucket,\n"
        f"  sum(CAST(round(CAST(x.amount AS DOUBLE) * CASE WHEN x.currency = {cur} THEN 1.0 ELSE r.rate END, 4) AS DECIMAL(18, 4))),\n"
        f"  sum(CASE WHEN x.currency <> {cur} AND r.rate IS NULL THEN 1 ELSE 0 END), min(CASE WHEN x.currency <> {cur} AND r.rate IS NULL THEN x.currency END)\n"
        f"FROM x LEFT JOIN r ON r.rid = x.rid GROUP BY 1, 2"
    )
    out: dict[str, dict[date, Decimal]] = defaultdict(dict)
    for group, bucket, amount, missing, currency in engine.fetchall(sql):
        if missing:
            raise KpilotError(f"no exchange rate from {currency} to {s.currency} for some spend days")
        out[str(group)][_label(bucket)] = Decimal(amount or 0)
    return out


def conversions(
    engine: Any,
    ctx: QueryContext,
    s: RevenueSettings,
    bounds: Bounds,
    interval: str,
    top: list[str] | None,
    filters: list[PropertyFilter],
) -> dict[str, dict[date, int]]:
    """Distinct persons doing the conversion event per channel group (``''`` when ``top`` is None)."""
    if s.conversion_event is None:
        raise SpecError("this measure needs settings.conversion_event (e.g. 'signed_up')", field="settings")
    start = datetime.combine(bounds[0][1], datetime.min.time())
    end = datetime.combine(bounds[-1][2], datetime.min.time())
    source = ctx.events_source(start, end, events=[s.conversion_event], filters=filters)
    if top is None:
        bd = "''"
        ctes, joins = "", ""
    else:
        channel = "coalesce(c.channel, ft.channel)"
        bd = channel_case(channel, top)
        ctes = first_touch_cte(ctx) + ",\n"
        joins = (
            f"LEFT JOIN ft ON ft.person_id = s.person_id\n"
            f"LEFT JOIN (SELECT p.person_id, min(c.channel) AS channel FROM customers c JOIN person_distinct_ids p\n"
            f"  ON p.project_id = c.project_id AND p.distinct_id = c.distinct_id WHERE c.project_id = {ctx.project_id}\n"
            f"  GROUP BY p.person_id) c ON c.person_id = s.person_id"
        )
    sql = (
        f"WITH {ctes}s AS ({source})\n"
        f"SELECT {bd} AS bd, {ctx.trunc(interval, 's.ts')} AS bucket, count(DISTINCT s.person_id)\n"
        f"FROM s {joins} GROUP BY 1, 2"
    )
    out: dict[str, dict[date, int]] = defaultdict(dict)
    for group, bucket, n in engine.fetchall(sql):
        out[str(group)][_label(bucket)] = int(n)
    return out


def conversion_rates(
    engine: Any,
    ctx: QueryContext,
    s: RevenueSettings,
    bounds: Bounds,
    filters: list[PropertyFilter],
    breakdown: Breakdown | None,
) -> dict[str, dict[date, tuple[int, int]]]:
    """``(visitors, converted)`` per breakdown value and period, from one funnel per period."""
    from kpilot.compute.queries import funnel

    if s.conversion_event is None:
        raise SpecError(
            "conversion_rate needs settings.conversion_event (e.g. 'signed_up')", field="settings"
        )
    out: dict[str, dict[date, tuple[int, int]]] = defaultdict(dict)
    for label, a, b in bounds:
        spec = FunnelSpec(
            kind="funnel",
            date_from=a,
            date_to=b - timedelta(days=1),
            timezone=ctx.timezone,
            filters=filters,
            breakdown=breakdown,
            steps=[{"event": s.visitor_event}, {"event": s.conversion_event}],  # type: ignore[list-item]
            window=Window(value=s.conversion_window_days, unit="day"),
        )
        result = funnel.run(engine, ctx, spec)
        groups = result["results"] if breakdown is not None else [{"breakdown_value": "", **result}]
        for g in groups:
            steps = g["steps"]
            out[str(g["breakdown_value"])][label] = (int(steps[0]["count"]), int(steps[1]["count"]))
    return out
