"""The revenue, acquisition and customer-voice catalog metrics evaluate to the numbers worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from kpilot.catalog import evaluate_metric, load_catalog
from tests.conftest import Env, ev
from tests.revenue_helpers import import_rows, sub


def _value(env: Env, name: str, date_from: str, date_to: str, **params: Any) -> float | None:
    catalog = load_catalog()
    return evaluate_metric(
        env.engine, env.project, catalog.get(name), date_from, date_to, params, catalog=catalog
    ).value


def test_every_revenue_and_voice_metric_parses() -> None:
    catalog = load_catalog()
    names = {m.name for m in catalog.list("revenue")} | {m.name for m in catalog.list("customer_voice")}
    assert {"mrr", "arr", "nrr", "grr", "ltv", "cltv", "quick_ratio", "predicted_clv"} <= names
    assert {
        "nps",
        "csat",
        "ces",
        "customer_sentiment_score",
        "escalation_rate",
        "first_response_time",
    } <= names
    assert {"cac", "cpa", "visitor_conversion_rate", "ltv_cac", "cac_payback_months"} <= {
        m.name for m in catalog.list("acquisition")
    }


def test_revenue_metrics_over_a_quarter(env: Env) -> None:
    # Jan: a (100) and b (50) new. Feb: b churns. Mar: c new (80), a expands to 120.
    import_rows(env, "subscriptions", [
        sub("a", "a", "2024-01-10", "2024-03-05", amount=100), sub("a", "a", "2024-03-05", amount=120),
        sub("b", "b", "2024-01-20", "2024-02-15", amount=50), sub("c", "c", "2024-03-12", amount=80),
    ])  # fmt: skip
    q = ("2024-01-01", "2024-03-31")
    assert _value(env, "mrr", *q) == 200.0  # MRR on Mar 31: 120 + 80
    assert _value(env, "arr", *q) == 2400.0
    assert _value(env, "new_mrr", *q) == 230.0  # 100 + 50 + 80
    assert _value(env, "net_new_mrr", *q) == 200.0  # from 0 to 200
    assert _value(env, "new_customers", *q) == 3
    # churn rate per month: Jan no customers at start (null, skipped), Feb 1/2, Mar 0/1 -> mean 0.25
    assert _value(env, "customer_churn_rate", *q) == pytest.approx(0.25)


def test_spend_based_and_voice_metrics(env: Env) -> None:
    env.load([ev("$pageview", "u1", "2024-03-01T10:00:00Z"), ev("signed_up", "u1", "2024-03-01T10:05:00Z"),
              ev("$pageview", "u2", "2024-03-02T10:00:00Z")])  # fmt: skip
    import_rows(env, "subscriptions", [sub("a", "a", "2024-03-10"), sub("b", "b", "2024-03-11")])
    import_rows(env, "spend", [{"date": "2024-03-01", "channel": "google", "amount": 300}])
    m = ("2024-03-01", "2024-03-31")
    assert _value(env, "cac", *m) == 150.0  # 300 / 2 new customers
    assert _value(env, "cpa", *m) == 300.0  # 300 / 1 signup
    assert _value(env, "visitor_conversion_rate", *m) == 0.5
    import_rows(env, "surveys", [
        {"response_id": str(i), "survey": "nps", "metric": "nps", "score": s, "responded_at": "2024-03-05T00:00:00Z"}
        for i, s in enumerate([10, 9, 8, 3])
    ])  # fmt: skip
    assert _value(env, "nps", *m) == 25.0  # (2 - 1) / 4
    assert _value(env, "nps_responses", *m) == 4
    import_rows(env, "tickets", [
        {"ticket_id": "t1", "created_at": "2024-03-01T10:00:00Z", "first_response_at": "2024-03-01T10:30:00Z"},
        {"ticket_id": "t2", "created_at": "2024-03-01T10:00:00Z", "first_response_at": "2024-03-01T11:30:00Z", "escalated": True},
    ])  # fmt: skip
    assert _value(env, "first_response_time", *m) == 3600.0  # median of 30 and 90 minutes, in seconds
    assert _value(env, "escalation_rate", *m) == 50.0
