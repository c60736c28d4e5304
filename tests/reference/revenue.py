"""Naive MRR and movement reference: plain Python, day by day, written from docs/revenue.md.

Subscription rows are dicts with the kpilot import columns (already typed: dates, Decimals). For every
customer and every day it prices each subscription state covering the day, sums them, and compares each day
with the day before to find movements. Slow, obvious, independent of the SQL.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["RefPeriod", "customer_mrr", "reference_periods", "sub_mrr_on"]

_FACTOR = {
    "day": Decimal(365) / 12,
    "week": Decimal(52) / 12,
    "month": Decimal(1),
    "quarter": Decimal(1) / 3,
    "year": Decimal(1) / 12,
}
KINDS = ("new", "expansion", "reactivation", "contraction", "churn")


def _end(sub: dict[str, Any], settings: dict[str, Any]) -> date | None:
    ends = [sub.get("end_date")]
    if settings.get("churn_recognition") == "cancellation":
        ends.append(sub.get("canceled_at"))
    grace = settings.get("past_due_grace_days")
    if grace is not None and sub.get("status") in ("past_due", "unpaid") and sub.get("past_due_since"):
        ends.append(sub["past_due_since"] + timedelta(days=grace))
    if sub.get("status") == "canceled" and sub.get("end_date") is None:
        ends.append(sub.get("canceled_at") or sub["start_date"])
    known = [e for e in ends if e is not None]
    return min(known) if known else None


def sub_mrr_on(
    sub: dict[str, Any], day: date, settings: dict[str, Any], rates: dict[str, Decimal]
) -> Decimal:
    """The state's MRR on ``day`` (0 outside its range). ``rates``: currency -> rate to the reporting one."""
    end = _end(sub, settings)
    if day < sub["start_date"] or (end is not None and day >= end):
        return Decimal(0)
    status = sub.get("status", "active")
    trial_end = sub.get("trial_end")
    if (
        status in ("incomplete", "paused")
        or (trial_end and day < trial_end)
        or (status == "trialing" and not trial_end)
    ):
        return Decimal(0)
    factor = _FACTOR[sub.get("billing_interval", "month")] / sub.get("interval_count", 1)
    gross = Decimal(sub["amount"]) * Decimal(sub.get("quantity", 1)) * factor
    if sub.get("tax_inclusive"):
        gross /= 1 + Decimal(sub.get("tax_percent") or 0) / 100
    mode = settings.get("discounts", "all")
    duration = sub.get("discount_duration") or ("repeating" if sub.get("discount_end") else "forever")
    d_end = sub.get("discount_end")
    if mode == "all":
        applies = duration != "once" and (d_end is None or day < d_end)
    elif mode == "forever_only":
        applies = duration == "forever" and d_end is None
    else:
        applies = False
    value = gross
    if applies:
        pct = Decimal(sub.get("discount_percent") or 0)
        off = Decimal(sub.get("discount_amount") or 0) * factor
        value = max(gross * (1 - pct / 100) - off, Decimal(0))
    currency = sub.get("currency", "USD")
    if currency != settings.get("currency", "USD"):
        value *= rates[currency]
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def customer_mrr(
    subs: list[dict[str, Any]], day: date, settings: dict[str, Any], rates: dict[str, Decimal]
) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for s in subs:
        out[s["customer_id"]] += sub_mrr_on(s, day, settings, rates)
    return out


@dataclass
class RefPeriod:
    start: date
    end: date
    mrr_start: Decimal = Decimal(0)
    mrr_end: Decimal = Decimal(0)
    movements: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(KINDS, Decimal(0)))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    customers_start: int = 0
    customers_end: int = 0
    churned_customers: int = 0


def reference_periods(
    subs: list[dict[str, Any]],
    bounds: list[tuple[date, date]],
    settings: dict[str, Any] | None = None,
    rates: dict[str, Decimal] | None = None,
) -> list[RefPeriod]:
    """Periods ``[start, end)`` with MRR on the day before / last day, movements, and customer counts."""
    settings = settings or {}
    rates = rates or {}
    if not subs:
        return [RefPeriod(a, b) for a, b in bounds]
    first = min(s["start_date"] for s in subs) - timedelta(days=1)
    last = bounds[-1][1]
    customers = sorted({s["customer_id"] for s in subs})
    day = first
    prev = customer_mrr(subs, day, settings, rates)
    paid_ever = {c: prev[c] > 0 for c in customers}
    daily: dict[date, dict[str, Decimal]] = {day: prev}
    moves: dict[date, list[tuple[str, Decimal]]] = defaultdict(list)
    while day < last:
        day += timedelta(days=1)
        cur = customer_mrr(subs, day, settings, rates)
        for c in customers:
            before, after = prev[c], cur[c]
            if before == after:
                continue
            if before == 0:
                kind = "reactivation" if paid_ever[c] else "new"
            elif after == 0:
                kind = "churn"
            else:
                kind = "expansion" if after > before else "contraction"
            moves[day].append((kind, abs(after - before)))
            if after > 0:
                paid_ever[c] = True
        daily[day] = cur
        prev = cur
    out = []
    for a, b in bounds:
        p = RefPeriod(a, b)
        s_state = daily.get(a - timedelta(days=1)) or customer_mrr(
            subs, a - timedelta(days=1), settings, rates
        )
        e_state = daily.get(b - timedelta(days=1)) or customer_mrr(
            subs, b - timedelta(days=1), settings, rates
        )
        p.mrr_start = sum(s_state.values(), Decimal(0))
        p.mrr_end = sum(e_state.values(), Decimal(0))
        p.customers_start = sum(1 for v in s_state.values() if v > 0)
        p.customers_end = sum(1 for v in e_state.values() if v > 0)
        p.churned_customers = sum(1 for c in customers if s_state.get(c, 0) > 0 and e_state.get(c, 0) == 0)
        d = a
        while d < b:
            for kind, amount in moves.get(d, []):
                p.movements[kind] += amount
                p.counts[kind] += 1
            d += timedelta(days=1)
        out.append(p)
    return out
