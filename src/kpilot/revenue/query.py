"""The ``revenue`` query kind: one measure per query, a value per period (docs/revenue.md).

Result: ``{"measure", "interval", "currency", "series": [{"date", "value", ...}]}``; with a breakdown,
``{"breakdown", "results": [{"breakdown_value", "series"}]}`` like every query kind. Customer-based measures
(MRR, movements, churn, LTV, CAC ...) break down by customer attributes (see :mod:`kpilot.revenue.scope`);
spend, CAC and CPA by ``channel`` only; the conversion rate by any event or person property (the funnel's
breakdown). ``predicted_clv`` returns a per-customer table instead of a series.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from kpilot.compute.buckets import bucket_label
from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import lit
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import RevenueSpec
from kpilot.errors import SpecError
from kpilot.revenue import acquisition, saas_metrics
from kpilot.revenue.movements import MOVEMENT_KINDS, Period, compute_periods, period_bounds
from kpilot.revenue.schema import missing_tables
from kpilot.revenue.scope import customer_scope

__all__ = ["MOVEMENT_MEASURES", "run"]

MOVEMENT_MEASURES = frozenset(
    {
        "mrr", "arr", "customers", "arpa", "movements", "new_mrr", "expansion_mrr", "contraction_mrr",
        "churned_mrr", "reactivation_mrr", "net_new_mrr", "new_customers", "churned_customers",
        "reactivated_customers", "customer_churn_rate", "gross_mrr_churn_rate", "net_mrr_churn_rate", "nrr",
        "grr", "quick_ratio", "ltv",
    }
)  # fmt: skip

Bounds = list[tuple[date, date, date]]


def run(engine: Any, ctx: QueryContext, spec: RevenueSpec) -> dict[str, Any]:
    missing = missing_tables(engine)
    if missing:
        from kpilot.errors import NotFoundError

        raise NotFoundError(
            f"no business data imported yet (table {missing[0]} is missing): run `kpilot import subscriptions FILE`"
        )
    if spec.measure == "predicted_clv":
        from kpilot.revenue.clv import run_predicted

        return run_predicted(engine, ctx, spec)
    bounds = period_bounds(spec.first_day, spec.last_day, spec.interval, ctx.week_start)
    series, top = _compute(engine, ctx, spec, bounds)
    header = {"measure": spec.measure, "interval": spec.interval, "currency": spec.settings.currency}

    def build(bd: str) -> dict[str, Any]:
        return {"series": series.get(bd) or [_point(label, None) for label, _, _ in bounds]}

    result = bdmod.wrap(spec.breakdown, top, set(series), build)
    return {**header, **result}


def _point(label: date, value: float | int | None, **extra: Any) -> dict[str, Any]:
    return {"date": bucket_label(label, "day"), "value": value, **extra}


def _trunc(ctx: QueryContext, interval: str) -> Callable[[str], str]:
    return lambda expr: ctx.trunc(interval, expr)


def _extended(bounds: Bounds, spec: RevenueSpec, ctx: QueryContext, extra: int) -> Bounds:
    """``bounds`` with ``extra`` more calendar periods before them (for averages over past periods)."""
    if extra <= 0:
        return bounds
    first = bounds[0][0]
    probe = first
    for _ in range(extra):
        probe = period_bounds(
            probe - timedelta(days=1), probe - timedelta(days=1), spec.interval, ctx.week_start
        )[0][0]
    return period_bounds(probe, bounds[0][1] - timedelta(days=1), spec.interval, ctx.week_start) + bounds


def _periods(
    engine: Any, ctx: QueryContext, spec: RevenueSpec, bounds: Bounds
) -> tuple[dict[str, list[Period]], list[str]]:
    scope, top = customer_scope(engine, ctx, spec.filters, spec.breakdown)
    return compute_periods(
        engine, ctx.project_id, spec.settings, bounds, _trunc(ctx, spec.interval), scope
    ), top


def _compute(
    engine: Any, ctx: QueryContext, spec: RevenueSpec, bounds: Bounds
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    m, s = spec.measure, spec.settings
    if m in MOVEMENT_MEASURES:
        extra = s.ltv_churn_periods - 1 if m == "ltv" else 0
        ext = _extended(bounds, spec, ctx, extra)
        groups, top = _periods(engine, ctx, spec, ext)
        out: dict[str, list[dict[str, Any]]] = {}
        for bd, periods in groups.items():
            points = []
            for i in range(len(ext) - len(bounds), len(ext)):
                p = periods[i]
                value = saas_metrics.period_value(m, periods, i, s)
                if m == "movements":
                    points.append(_point(p.label, value, **_movement_fields(p)))
                else:
                    points.append(_point(p.label, value))
            out[bd] = points
        return out, top
    if m == "arpu":
        return _arpu(engine, ctx, spec, bounds), []
    if m in ("revenue", "cltv"):
        return _transactional(engine, ctx, spec, bounds), []
    if m in ("spend", "cac", "cpa", "cac_payback_months", "ltv_cac", "conversions"):
        return _acquisition(engine, ctx, spec, bounds)
    if m == "conversion_rate":
        rates = acquisition.conversion_rates(engine, ctx, s, bounds, list(spec.filters), spec.breakdown)
        top = [] if spec.breakdown is None else [k for k in rates if k not in ("$other", "$none")]
        result = {
            bd: [
                _point(label, saas_metrics.ratio(conv, visits), visitors=visits, conversions=conv)
                for label, _, _ in bounds
                for visits, conv in [per.get(label, (0, 0))]
            ]
            for bd, per in rates.items()
        }
        return result, top
    raise SpecError(f"measure {m!r} is not handled by the revenue query", field="measure")


def _movement_fields(p: Period) -> dict[str, Any]:
    fields: dict[str, Any] = {"mrr_start": float(p.mrr_start), "mrr_end": float(p.mrr_end)}
    for kind in MOVEMENT_KINDS:
        fields[kind] = float(p.movements[kind])
    return fields


def _no_breakdown(spec: RevenueSpec) -> None:
    if spec.breakdown is not None:
        raise SpecError(f"measure {spec.measure!r} has no breakdown", field="breakdown")


def _arpu(
    engine: Any, ctx: QueryContext, spec: RevenueSpec, bounds: Bounds
) -> dict[str, list[dict[str, Any]]]:
    """ARPU = MRR / active users (distinct persons doing ``active_event``, any event when None)."""
    _no_breakdown(spec)
    groups, _ = _periods(engine, ctx, spec.model_copy(update={"filters": []}), bounds)
    start = datetime.combine(bounds[0][1], datetime.min.time())
    end = datetime.combine(bounds[-1][2], datetime.min.time())
    source = ctx.events_source(start, end, events=[spec.settings.active_event], filters=spec.filters)
    users: dict[date, int] = {}
    for bucket, n in engine.fetchall(
        f"SELECT {ctx.trunc(spec.interval, 'ts')} AS b, count(DISTINCT person_id) FROM ({source}) s GROUP BY 1"
    ):
        users[bucket.date() if isinstance(bucket, datetime) else bucket] = int(n)
    periods = groups[""]
    return {
        "": [
            _point(p.label, saas_metrics.ratio(p.mrr_end, users.get(p.label, 0)), users=users.get(p.label, 0))
            for p in periods
        ]
    }


def _transactional(
    engine: Any, ctx: QueryContext, spec: RevenueSpec, bounds: Bounds
) -> dict[str, list[dict[str, Any]]]:
    """Paid invoice revenue (excluding tax) per period, and the transactional CLTV formula on it."""
    _no_breakdown(spec)
    s = spec.settings
    lo, hi = bounds[0][1], bounds[-1][2]
    cur = lit(s.currency)
    rates = (
        f"SELECT day, currency, CAST(rate AS DOUBLE) AS rate FROM fx_rates WHERE project_id = {ctx.project_id} AND quote = {cur} "
        f"UNION ALL SELECT day, quote, 1.0 / CAST(rate AS DOUBLE) FROM fx_rates WHERE project_id = {ctx.project_id} AND currency = {cur}"
    )
    sql = (
        f"WITH i AS (SELECT *, CAST(issued_at AS DATE) AS day FROM invoices WHERE project_id = {ctx.project_id}\n"
        f"  AND status = 'paid' AND issued_at >= {lit(lo)} AND issued_at < {lit(hi)}),\n"
        f"r AS (SELECT invoice_id, rate FROM (SELECT i.invoice_id, r.rate, row_number() OVER (PARTITION BY i.invoice_id ORDER BY r.day DESC) AS rn\n"
        f"  FROM i JOIN ({rates}) r ON r.currency = i.currency AND r.day <= i.day WHERE i.currency <> {cur}) y WHERE rn = 1)\n"
        f"SELECT {ctx.trunc(spec.interval, 'i.day')} AS b,\n"
        f"  sum(CAST(round(CAST(i.amount AS DOUBLE) * CASE WHEN i.currency = {cur} THEN 1.0 ELSE r.rate END, 4) AS DECIMAL(18, 4))),\n"
        f"  count(*), count(DISTINCT i.customer_id), sum(CASE WHEN i.currency <> {cur} AND r.rate IS NULL THEN 1 ELSE 0 END)\n"
        f"FROM i LEFT JOIN r ON r.invoice_id = i.invoice_id GROUP BY 1"
    )
    stats: dict[date, tuple[Decimal, int, int]] = {}
    for bucket, revenue, purchases, customers, missing in engine.fetchall(sql):
        if missing:
            from kpilot.errors import KpilotError

            raise KpilotError(f"no exchange rate to {s.currency} for some invoices")
        label = bucket.date() if isinstance(bucket, datetime) else bucket
        stats[label] = (Decimal(revenue or 0), int(purchases), int(customers))
    points = []
    for label, a, b in bounds:
        revenue, purchases, customers = stats.get(label, (Decimal(0), 0, 0))
        if spec.measure == "revenue":
            points.append(_point(label, float(revenue), purchases=purchases, customers=customers))
        else:
            parts = saas_metrics.transactional_ltv(revenue, purchases, customers, (b - a).days, s)
            points.append(_point(label, parts["cltv"], **parts))
    return {"": points}


def _acquisition(
    engine: Any, ctx: QueryContext, spec: RevenueSpec, bounds: Bounds
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    m, s = spec.measure, spec.settings
    by_channel = spec.breakdown is not None
    if spec.breakdown is not None and not (
        spec.breakdown.type == "event" and spec.breakdown.key == "channel"
    ):
        raise SpecError(
            f"measure {m!r} breaks down by channel only (type 'event', key 'channel')", field="breakdown"
        )
    top = acquisition.spend_channels(engine, ctx.project_id, spec.breakdown.limit) if spec.breakdown else []
    spend = acquisition.spend(engine, ctx, s, bounds, spec.interval, top if by_channel else None)
    if m == "conversions" or m == "cpa":
        conv = acquisition.conversions(
            engine, ctx, s, bounds, spec.interval, top if by_channel else None, list(spec.filters)
        )
        keys = set(spend) | set(conv) if by_channel else {""}
        out = {}
        for bd in keys:
            points = []
            for label, _, _ in bounds:
                n = conv.get(bd, {}).get(label, 0)
                cost = spend.get(bd, {}).get(label, Decimal(0))
                value = n if m == "conversions" else saas_metrics.ratio(cost, n)
                points.append(_point(label, value, spend=float(cost), conversions=n))
            out[bd] = points
        return out, top
    if m == "spend":
        keys = set(spend) if by_channel else {""}
        return {
            bd: [_point(label, float(spend.get(bd, {}).get(label, Decimal(0)))) for label, _, _ in bounds]
            for bd in keys
        }, top
    # CAC family: new customers from the movements, by the customers' channel when broken down
    extra = s.ltv_churn_periods - 1 if m == "ltv_cac" else 0
    ext = _extended(bounds, spec, ctx, extra)
    scope_spec = spec
    if spec.breakdown is not None:
        scope_spec = spec.model_copy(update={"breakdown": spec.breakdown.model_copy(update={"limit": 100})})
    groups, _ = _periods(engine, ctx, scope_spec, ext)
    if by_channel:
        groups = _regroup(groups, top)
    out = {}
    offset = len(ext) - len(bounds)
    for bd in set(groups) | set(spend):
        periods = groups.get(bd) or [Period(label, a, b) for label, a, b in ext]
        points = []
        for j, (label, _, _) in enumerate(bounds):
            i = j + offset
            cost = spend.get(bd, {}).get(label, Decimal(0))
            new = periods[i].counts["new"]
            cac_value = saas_metrics.cac(cost, new)
            if m == "cac":
                value = cac_value
            elif m == "cac_payback_months":
                value = saas_metrics.cac_payback_months(cac_value, saas_metrics.arpa(periods[i]), s)
            else:
                value = saas_metrics.ratio(saas_metrics.ltv(periods, i, s), cac_value)
            points.append(_point(label, value, spend=float(cost), new_customers=new))
        out[bd] = points
    return out, top


def _regroup(groups: dict[str, list[Period]], top: list[str]) -> dict[str, list[Period]]:
    """Customer channel groups folded onto the spend channels: channels without spend go to ``$other``."""
    out: dict[str, list[Period]] = {}
    for bd, periods in groups.items():
        key = bd if bd in top or bd == "$none" else "$other"
        if key not in out:
            out[key] = periods
            continue
        for acc, p in zip(out[key], periods, strict=True):
            for kind in MOVEMENT_KINDS:
                acc.movements[kind] += p.movements[kind]
                acc.counts[kind] += p.counts[kind]
            acc.mrr_start += p.mrr_start
            acc.mrr_end += p.mrr_end
            acc.customers_start += p.customers_start
            acc.customers_end += p.customers_end
            acc.churned_customers += p.churned_customers
            acc.cohort_mrr_end += p.cohort_mrr_end
            acc.cohort_capped_mrr_end += p.cohort_capped_mrr_end
    return out
