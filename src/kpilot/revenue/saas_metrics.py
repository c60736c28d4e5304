"""SaaS metrics from periods of MRR movements: formulas only, on plain numbers (docs/revenue.md).

Every ratio is ``None`` when its denominator is 0 (there is nothing to divide by), never 0 or infinity.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from kpilot.revenue.movements import Period
from kpilot.revenue.settings import RevenueSettings

__all__ = [
    "arpa",
    "cac",
    "cac_payback_months",
    "customer_churn_rate",
    "gross_mrr_churn_rate",
    "grr",
    "ltv",
    "net_mrr_churn_rate",
    "nrr",
    "period_value",
    "quick_ratio",
    "ratio",
    "transactional_ltv",
]

Number = Decimal | float | int


def ratio(num: Number | None, den: Number | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return float(num) / float(den)


def arpa(p: Period) -> float | None:
    """ARPA = MRR / paying customers, at the period end."""
    return ratio(p.mrr_end, p.customers_end)


def customer_churn_rate(p: Period) -> float | None:
    """Customers paying at the start and not at the end / customers paying at the start."""
    return ratio(p.churned_customers, p.customers_start)


def gross_mrr_churn_rate(p: Period) -> float | None:
    """(churn + contraction) / MRR at the start."""
    return ratio(p.movements["churn"] + p.movements["contraction"], p.mrr_start)


def net_mrr_churn_rate(p: Period) -> float | None:
    """(churn + contraction - expansion - reactivation) / MRR at the start (negative = net expansion)."""
    m = p.movements
    return ratio(m["churn"] + m["contraction"] - m["expansion"] - m["reactivation"], p.mrr_start)


def nrr(p: Period, s: RevenueSettings) -> float | None:
    """Net revenue retention. Movements basis: (MRR start + expansion - contraction - churn) / MRR start.
    Cohort basis: the start customers' MRR at the end / MRR start. Neither counts new or reactivated MRR
    (the cohort basis does count a start customer who left and came back within the period)."""
    if s.retention_basis == "cohort":
        return ratio(p.cohort_mrr_end, p.mrr_start)
    m = p.movements
    return ratio(p.mrr_start + m["expansion"] - m["contraction"] - m["churn"], p.mrr_start)


def grr(p: Period, s: RevenueSettings) -> float | None:
    """Gross revenue retention = 1 - gross MRR churn rate (movements basis), or the start customers' MRR at
    the end, each capped at its start MRR, / MRR start (cohort basis). Never above 1."""
    if s.retention_basis == "cohort":
        return ratio(p.cohort_capped_mrr_end, p.mrr_start)
    m = p.movements
    return ratio(p.mrr_start - m["contraction"] - m["churn"], p.mrr_start)


def quick_ratio(p: Period, s: RevenueSettings) -> float | None:
    """(new + expansion [+ reactivation]) / (contraction + churn)."""
    m = p.movements
    up = m["new"] + m["expansion"] + (m["reactivation"] if s.quick_ratio_reactivation else 0)
    return ratio(up, m["contraction"] + m["churn"])


def ltv(periods: Sequence[Period], i: int, s: RevenueSettings) -> float | None:
    """LTV at period ``i`` = ARPA x gross margin / customer churn rate, the churn rate averaged over the
    ``ltv_churn_periods`` periods ending at ``i`` (those with customers at their start)."""
    window = periods[max(0, i - s.ltv_churn_periods + 1) : i + 1]
    rates = [r for r in (customer_churn_rate(p) for p in window) if r is not None]
    a = arpa(periods[i])
    if a is None or not rates:
        return None
    return ratio(a * s.gross_margin, sum(rates) / len(rates))


def cac(spend: Decimal, new_customers: int) -> float | None:
    """CAC = sales and marketing spend / new customers."""
    return ratio(spend, new_customers)


def cac_payback_months(cac_value: float | None, arpa_value: float | None, s: RevenueSettings) -> float | None:
    """Months of gross-margin-adjusted ARPA that repay the CAC: CAC / (ARPA x gross margin)."""
    if cac_value is None or arpa_value is None:
        return None
    return ratio(cac_value, arpa_value * s.gross_margin)


def transactional_ltv(
    revenue: Decimal, purchases: int, customers: int, days: int, s: RevenueSettings
) -> dict[str, float | None]:
    """The simple transactional formula over one period of ``days`` days:

    average purchase value = revenue / purchases; purchase frequency = purchases / customers, per year
    (x 365 / days); LTV = APV x frequency x lifespan_years; CLTV = LTV x profit margin.
    """
    apv = ratio(revenue, purchases)
    freq = ratio(purchases, customers)
    yearly = None if freq is None else freq * 365 / days
    value = None if apv is None or yearly is None else apv * yearly * s.lifespan_years
    return {
        "average_purchase_value": apv,
        "purchase_frequency": yearly,
        "lifespan_years": s.lifespan_years,
        "ltv": value,
        "cltv": None if value is None else value * s.profit_margin,
    }


def period_value(measure: str, periods: Sequence[Period], i: int, s: RevenueSettings) -> float | int | None:
    """The value of a movement-based ``measure`` at period ``i``."""
    p = periods[i]
    m = p.movements
    simple: dict[str, float | int | None] = {
        "mrr": float(p.mrr_end),
        "arr": float(p.mrr_end * 12),
        "customers": p.customers_end,
        "new_mrr": float(m["new"]),
        "expansion_mrr": float(m["expansion"]),
        "contraction_mrr": float(m["contraction"]),
        "churned_mrr": float(m["churn"]),
        "reactivation_mrr": float(m["reactivation"]),
        "net_new_mrr": float(p.net_new),
        "movements": float(p.net_new),
        "new_customers": p.counts["new"],
        "reactivated_customers": p.counts["reactivation"],
        "churned_customers": p.churned_customers,
    }
    if measure in simple:
        return simple[measure]
    if measure == "arpa":
        return arpa(p)
    if measure == "customer_churn_rate":
        return customer_churn_rate(p)
    if measure == "gross_mrr_churn_rate":
        return gross_mrr_churn_rate(p)
    if measure == "net_mrr_churn_rate":
        return net_mrr_churn_rate(p)
    if measure == "nrr":
        return nrr(p, s)
    if measure == "grr":
        return grr(p, s)
    if measure == "quick_ratio":
        return quick_ratio(p, s)
    if measure == "ltv":
        return ltv(periods, i, s)
    raise ValueError(f"{measure!r} is not a movement-based measure")
