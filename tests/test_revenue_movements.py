"""MRR movements: the dbt mrr-playbook data and random subscription histories against the naive reference,
and exact reconciliation MRR(end) = MRR(start) + new + expansion + reactivation - contraction - churn."""

from __future__ import annotations

import csv
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpilot.compute.dialect import DIALECTS
from kpilot.compute.engine import DuckDBEngine
from kpilot.revenue.importing import write_rows
from kpilot.revenue.movements import compute_periods, period_bounds
from kpilot.revenue.settings import RevenueSettings
from kpilot.revenue.sources import parse_subscription
from kpilot.workspace import Workspace
from tests.conftest import Env
from tests.reference.revenue import reference_periods
from tests.revenue_helpers import import_rows, revenue, series

PLAYBOOK = Path(__file__).resolve().parents[2] / "shared" / "data" / "subscription_periods.csv"


def _playbook() -> list[dict[str, Any]]:
    with PLAYBOOK.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _trunc(expr: str) -> str:
    return DIALECTS["duckdb"].trunc("month", expr)


def _typed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [parse_subscription(dict(r))["subscriptions"][0] for r in rows]


def _check_against_reference(
    engine: Any, project_id: int, rows: list[dict[str, Any]], first: date, last: date, s: RevenueSettings
) -> None:
    bounds = period_bounds(first, last, "month", "monday")
    got = compute_periods(engine, project_id, s, bounds, _trunc)
    periods = got[""]
    ref = reference_periods(_typed(rows), [(a, b) for _, a, b in bounds], s.model_dump())
    for p, r in zip(periods, ref, strict=True):
        label = p.label.isoformat()
        assert p.mrr_start + p.net_new == p.mrr_end, label  # exact, Decimal
        assert (p.mrr_start, p.mrr_end) == (r.mrr_start, r.mrr_end), label
        assert p.movements == r.movements, label
        assert p.counts == r.counts, label
        assert (p.customers_start, p.customers_end, p.churned_customers) == (
            r.customers_start,
            r.customers_end,
            r.churned_customers,
        ), label


@pytest.mark.skipif(not PLAYBOOK.exists(), reason="shared/data/subscription_periods.csv not beside the repo")
def test_mrr_playbook_matches_reference_and_reconciles(env: Env) -> None:
    report = import_rows(env, "subscriptions", _playbook())
    assert (report.imported, report.rejected) == (121, 0)
    rows = _playbook()
    _check_against_reference(
        env.engine, env.project.id, rows, date(2017, 9, 1), date(2020, 2, 29), RevenueSettings()
    )


@pytest.mark.skipif(not PLAYBOOK.exists(), reason="shared/data/subscription_periods.csv not beside the repo")
def test_mrr_playbook_customer_5_by_hand(env: Env) -> None:
    import_rows(env, "subscriptions", _playbook())
    flt = [{"key": "customer_id", "value": "5"}]
    r = revenue(env, "movements", "2018-11-01", "2020-01-31", filters=flt)
    by_month = {p["date"][:7]: p for p in r["series"]}
    # periods 50 (Nov 18), 25 (Dec 18 - Feb 19), gap, 50 (Jul 19), 25 (Aug), 50 (Sep), 25 (Oct-Nov), 40 (Dec)
    expected = {
        "2018-11": ("new", 50.0),
        "2018-12": ("contraction", 25.0),
        "2019-03": ("churn", 25.0),
        "2019-07": ("reactivation", 50.0),
        "2019-08": ("contraction", 25.0),
        "2019-09": ("expansion", 25.0),
        "2019-10": ("contraction", 25.0),
        "2019-12": ("expansion", 15.0),
        "2020-01": ("churn", 40.0),
    }
    for month, p in by_month.items():
        kind, amount = expected.get(month, (None, 0.0))
        moves = {k: p[k] for k in ("new", "expansion", "reactivation", "contraction", "churn")}
        assert moves == {k: (amount if k == kind else 0.0) for k in moves}, month
    assert series(revenue(env, "mrr", "2019-12-01", "2019-12-31", filters=flt)) == [40.0]


# ---- property test: random subscription histories ------------------------------------------------------
DAY0 = date(2024, 1, 1)


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for i in range(draw(st.integers(1, 7))):
        start = draw(st.integers(0, 120))
        row: dict[str, Any] = {
            "subscription_id": f"s{i}",
            "customer_id": f"c{draw(st.integers(1, 4))}",
            "start_date": (DAY0 + timedelta(days=start)).isoformat(),
            "amount": draw(st.sampled_from([0, 10, 25, 100, 1200])),
            "interval": draw(st.sampled_from(["month", "year", "week", "quarter"])),
            "quantity": draw(st.integers(1, 3)),
            "status": draw(st.sampled_from(["active", "active", "past_due", "canceled", "trialing"])),
        }
        if draw(st.booleans()):
            row["end_date"] = (DAY0 + timedelta(days=start + draw(st.integers(1, 90)))).isoformat()
        if draw(st.booleans()):
            row["discount_percent"] = draw(st.sampled_from([10, 50, 100]))
            if draw(st.booleans()):
                row["discount_end"] = (DAY0 + timedelta(days=start + draw(st.integers(0, 60)))).isoformat()
        if draw(st.booleans()):
            row["trial_end"] = (DAY0 + timedelta(days=start + draw(st.integers(0, 40)))).isoformat()
        if draw(st.booleans()):
            row["canceled_at"] = (DAY0 + timedelta(days=start + draw(st.integers(0, 60)))).isoformat()
        if row["status"] == "past_due":
            row["past_due_since"] = (DAY0 + timedelta(days=start + draw(st.integers(0, 30)))).isoformat()
        rows.append(row)
    return rows


revenue_settings = st.builds(
    RevenueSettings,
    churn_recognition=st.sampled_from(["period_end", "cancellation"]),
    discounts=st.sampled_from(["all", "forever_only", "none"]),
    past_due_grace_days=st.sampled_from([None, 0, 7]),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=histories(), s=revenue_settings, first_day=st.integers(0, 40))
def test_random_histories_match_reference_and_reconcile(
    rows: list[dict[str, Any]], s: RevenueSettings, first_day: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        try:
            project = ws.create_project("p")
            parsed = [parse_subscription(dict(r)) for r in rows]
            tables = {
                "subscriptions": [p["subscriptions"][0] for p in parsed],
                "customers": [p["customers"][0] for p in parsed],
            }
            write_rows(ws, project.id, tables)
            first = DAY0 + timedelta(days=first_day)
            _check_against_reference(DuckDBEngine(ws.store), project.id, rows, first, date(2024, 7, 31), s)
        finally:
            ws.close()


def test_reconciliation_with_decimal_amounts(env: Env) -> None:
    # 99.99/year = 8.3325 a month; 3 seats at 33.33/quarter = 33.33; discounts on odd amounts
    rows = [
        {"subscription_id": "a", "customer_id": "a", "start_date": "2024-01-05", "amount": "99.99", "interval": "year"},
        {"subscription_id": "b", "customer_id": "a", "start_date": "2024-02-07", "end_date": "2024-04-02",
         "amount": "33.33", "interval": "quarter", "quantity": 3, "discount_percent": 15},
        {"subscription_id": "c", "customer_id": "b", "start_date": "2024-01-31", "amount": "7.77", "interval": "week",
         "discount_amount": "1.11", "discount_end": "2024-03-03"},
    ]  # fmt: skip
    import_rows(env, "subscriptions", rows)
    _check_against_reference(
        env.engine, env.project.id, rows, date(2024, 1, 1), date(2024, 6, 30), RevenueSettings()
    )
    # the monthly amounts: 99.99 / 12 = 8.3325 exactly
    assert series(revenue(env, "mrr", "2024-01-01", "2024-01-31")) == [
        pytest.approx(8.3325 + 7.77 * 52 / 12 - 1.11 * 52 / 12, abs=1e-4)
    ]


def test_rates_to_reference_values(env: Env) -> None:
    # a start: 4 customers x 100 = 400; in March: a churns (-100), b contracts to 60 (-40), c expands to 150
    # (+50), e is new (+80), f reactivates (+30; it paid in January).
    import_rows(env, "subscriptions", [
        {"subscription_id": "a", "customer_id": "a", "start_date": "2024-01-01", "end_date": "2024-03-10", "amount": 100},
        {"subscription_id": "b", "customer_id": "b", "start_date": "2024-01-01", "end_date": "2024-03-05", "amount": 100},
        {"subscription_id": "b", "customer_id": "b", "start_date": "2024-03-05", "amount": 60},
        {"subscription_id": "c", "customer_id": "c", "start_date": "2024-01-01", "end_date": "2024-03-20", "amount": 100},
        {"subscription_id": "c", "customer_id": "c", "start_date": "2024-03-20", "amount": 150},
        {"subscription_id": "d", "customer_id": "d", "start_date": "2024-01-01", "amount": 100},
        {"subscription_id": "e", "customer_id": "e", "start_date": "2024-03-15", "amount": 80},
        {"subscription_id": "f1", "customer_id": "f", "start_date": "2024-01-01", "end_date": "2024-02-01", "amount": 30},
        {"subscription_id": "f2", "customer_id": "f", "start_date": "2024-03-01", "amount": 30},
    ])  # fmt: skip
    march = ("2024-03-01", "2024-03-31")

    def one(measure: str, **kw: Any) -> Any:
        return series(revenue(env, measure, *march, **kw))[0]

    # MRR start 400, end 400 - 100 - 40 + 50 + 80 + 30 = 420; customers start 4, end 5 (b c d e f)
    assert one("mrr") == 420.0
    assert one("customer_churn_rate") == 0.25  # a: 1 / 4
    assert one("gross_mrr_churn_rate") == pytest.approx(140 / 400)  # (100 + 40) / 400
    assert one("net_mrr_churn_rate") == pytest.approx((140 - 50 - 30) / 400)  # 0.15
    assert one("nrr") == pytest.approx((400 + 50 - 40 - 100) / 400)  # 0.775
    assert one("grr") == pytest.approx((400 - 40 - 100) / 400)  # 0.65
    # cohort basis: start customers a b c d end at 0 + 60 + 150 + 100 = 310; capped 0 + 60 + 100 + 100 = 260
    assert one("nrr", settings={"retention_basis": "cohort"}) == pytest.approx(310 / 400)
    assert one("grr", settings={"retention_basis": "cohort"}) == pytest.approx(260 / 400)
    assert one("quick_ratio") == pytest.approx((80 + 50) / (40 + 100))
    assert one("quick_ratio", settings={"quick_ratio_reactivation": True}) == pytest.approx(
        (80 + 50 + 30) / 140
    )
    # LTV with one period of churn: ARPA 420 / 5 = 84; 84 x 0.8 / 0.25 = 268.8
    assert one("ltv", settings={"ltv_churn_periods": 1, "gross_margin": 0.8}) == pytest.approx(268.8)
    # two periods: February churn = f (1 of 5 at Feb start) = 0.2; mean (0.2 + 0.25) / 2 = 0.225
    assert one("ltv", settings={"ltv_churn_periods": 2}) == pytest.approx(84 / 0.225)
