"""MRR movements per period, ChartMogul style, and the per-period state they reconcile with.

A customer's MRR changes on a day; that change is one movement, classified by the MRR just before and just
after it (all of the customer's subscriptions combined):

* before 0, after > 0: **new** if the customer never paid before, else **reactivation**;
* before > 0, after 0: **churn** (so cancelling one of several subscriptions is contraction, not churn);
* otherwise **expansion** (up) or **contraction** (down).

Periods are the calendar buckets (day/week/month, project week start) clipped to ``[date_from, date_to]``.
A period's MRR is the MRR on its last day; its movements are the changes on its days. So, exactly,
``MRR(end) = MRR(start) + new + expansion + reactivation - contraction - churn`` where MRR(start) is the MRR
on the day before the period. Amounts are :class:`~decimal.Decimal` and sums are exact.

Besides movements, each period knows which customers paid at its start and at its end: ``churned_customers``
= paying at start and not at end (joining and leaving inside the period, or leaving and coming back, does not
count: ChartMogul's customer churn), and the start customers' MRR at the end (for cohort NRR/GRR).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from kpilot.compute.buckets import bucket_start, next_bucket
from kpilot.compute.dialect import lit
from kpilot.revenue.mrr import CustomerScope, as_of_sql, check_rates, timeline_sql
from kpilot.revenue.settings import RevenueSettings

__all__ = ["MOVEMENT_KINDS", "Period", "compute_periods", "period_bounds"]

MOVEMENT_KINDS = ("new", "expansion", "reactivation", "contraction", "churn")
ZERO = Decimal(0)


@dataclass(slots=True)
class Period:
    """One period ``[start, end)``; ``label`` is its calendar bucket's first day."""

    label: date
    start: date
    end: date
    mrr_start: Decimal = ZERO
    mrr_end: Decimal = ZERO
    customers_start: int = 0
    customers_end: int = 0
    movements: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(MOVEMENT_KINDS, ZERO))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MOVEMENT_KINDS, 0))
    churned_customers: int = 0
    cohort_mrr_end: Decimal = ZERO
    cohort_capped_mrr_end: Decimal = ZERO

    @property
    def net_new(self) -> Decimal:
        m = self.movements
        return m["new"] + m["expansion"] + m["reactivation"] - m["contraction"] - m["churn"]


def period_bounds(first: date, last: date, interval: str, week_start: str) -> list[tuple[date, date, date]]:
    """``(label, start, end_exclusive)`` of each calendar bucket of ``interval`` clipped to ``[first, last]``."""
    out: list[tuple[date, date, date]] = []
    cur = bucket_start(datetime.combine(first, datetime.min.time()), interval, week_start)
    stop = last + timedelta(days=1)
    while cur.date() < stop:
        nxt = next_bucket(cur, interval)
        out.append((cur.date(), max(cur.date(), first), min(nxt.date(), stop)))
        cur = nxt
    return out


_KIND_SQL = (
    "CASE WHEN mrr_before = 0 AND paid_before = 1 THEN 'reactivation' WHEN mrr_before = 0 THEN 'new' "
    "WHEN mrr_after = 0 THEN 'churn' WHEN mrr_after > mrr_before THEN 'expansion' ELSE 'contraction' END"
)


def compute_periods(
    engine: Any,
    project_id: int,
    settings: RevenueSettings,
    bounds: list[tuple[date, date, date]],
    trunc: Callable[[str], str],
    scope: CustomerScope | None = None,
) -> dict[str, list[Period]]:
    """Periods per breakdown value (``''`` without a breakdown). ``trunc(expr)`` truncates a date column to
    its bucket's first day (the query context's dialect and week start)."""
    scope = scope or CustomerScope()
    check_rates(engine, project_id, settings)
    base = timeline_sql(project_id, settings, scope)
    index = {label: i for i, (label, _, _) in enumerate(bounds)}
    lo, hi = bounds[0][1], bounds[-1][2]
    out: dict[str, list[Period]] = {}

    def periods_of(bd: str) -> list[Period]:
        if bd not in out:
            out[bd] = [Period(label, a, b) for label, a, b in bounds]
        return out[bd]

    moves = engine.fetchall(
        f"WITH {base},\nm AS (SELECT bd, {trunc('day')} AS bucket, {_KIND_SQL} AS kind, "
        f"abs(mrr_after - mrr_before) AS amount FROM timeline WHERE day >= {lit(lo)} AND day < {lit(hi)})\n"
        f"SELECT bd, bucket, kind, sum(amount), count(*) FROM m GROUP BY bd, bucket, kind"
    )
    for bd, bucket, kind, amount, count in moves:
        label = bucket.date() if isinstance(bucket, datetime) else bucket
        p = periods_of(str(bd))[index[label]]
        p.movements[str(kind)] = Decimal(amount)
        p.counts[str(kind)] = int(count)
    # states on the day before the first period (mark 0) and on each period's last day (mark i + 1)
    marks = [lo - timedelta(days=1)] + [b - timedelta(days=1) for _, _, b in bounds]
    states = (
        f"marks AS (SELECT * FROM (VALUES {as_of_sql(marks)}) AS v(i, x)),\n"
        f"states AS (SELECT m.i, t.bd, t.customer_id, t.mrr_after AS mrr FROM marks m JOIN timeline t\n"
        f"  ON t.day <= m.x AND (t.next_day IS NULL OR t.next_day > m.x) WHERE t.mrr_after > 0)"
    )
    for i, bd, mrr, customers in engine.fetchall(
        f"WITH {base},\n{states}\nSELECT i, bd, sum(mrr), count(*) FROM states GROUP BY i, bd"
    ):
        ps = periods_of(str(bd))
        if i > 0:
            ps[i - 1].mrr_end = Decimal(mrr)
            ps[i - 1].customers_end = int(customers)
        if i < len(ps):
            ps[i].mrr_start = Decimal(mrr)
            ps[i].customers_start = int(customers)
    transitions = (
        f"WITH {base},\n{states}\n"
        f"SELECT p.i, p.bd, sum(CASE WHEN c.customer_id IS NULL THEN 1 ELSE 0 END), sum(coalesce(c.mrr, 0)),\n"
        f"       sum(CASE WHEN c.mrr IS NULL THEN 0 WHEN c.mrr < p.mrr THEN c.mrr ELSE p.mrr END)\n"
        f"FROM states p LEFT JOIN states c ON c.i = p.i + 1 AND c.customer_id = p.customer_id\n"
        f"WHERE p.i < {len(bounds)} GROUP BY p.i, p.bd"
    )
    for i, bd, churned, cohort_end, capped in engine.fetchall(transitions):
        p = periods_of(str(bd))[i]
        p.churned_customers = int(churned)
        p.cohort_mrr_end = Decimal(cohort_end)
        p.cohort_capped_mrr_end = Decimal(capped)
    if not out:
        periods_of("")
    return out
