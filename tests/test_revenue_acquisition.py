"""Acquisition and unit economics: conversion rate by channel, spend, CAC and CPA by channel, payback,
LTV:CAC, ARPU and the transactional CLTV, on one hand-worked March."""

from __future__ import annotations

from typing import Any

import pytest

from kpilot.errors import SpecError
from tests.conftest import Env, ev
from tests.revenue_helpers import import_rows, revenue, series, sub

MARCH = ("2024-03-01", "2024-03-31")
SETTINGS = {"conversion_event": "signed_up", "ltv_churn_periods": 1}


@pytest.fixture
def march(env: Env) -> Env:
    env.load([
        ev("$pageview", "u1", "2024-03-01T10:00:00Z", utm_source="google"),
        ev("$pageview", "u2", "2024-03-01T11:00:00Z", utm_source="google"),
        ev("$pageview", "u3", "2024-03-02T10:00:00Z", utm_source="facebook"),
        ev("$pageview", "u4", "2024-03-02T11:00:00Z"),
        ev("signed_up", "u1", "2024-03-03T10:00:00Z"),
        ev("signed_up", "u3", "2024-03-04T10:00:00Z"),
    ])  # fmt: skip
    import_rows(env, "customers", [
        {"customer_id": "c1", "distinct_id": "u1"},
        {"customer_id": "c3", "distinct_id": "u3"},
        {"customer_id": "c5", "channel": "google"},
    ])  # fmt: skip
    import_rows(env, "subscriptions", [
        sub("s1", "c1", "2024-03-10", amount=100),
        sub("s3", "c3", "2024-03-12", amount=50),
        sub("s5", "c5", "2024-03-20", amount=30),
        sub("s9", "c9", "2024-01-01", "2024-03-05", amount=60),  # the one customer at the start churns
    ])  # fmt: skip
    import_rows(env, "spend", [
        {"date": "2024-03-01", "channel": "google", "amount": 300},
        {"date": "2024-03-02", "channel": "facebook", "amount": 100},
        {"date": "2024-03-03", "channel": "sales-team", "amount": 100, "category": "sales"},
    ])  # fmt: skip
    return env


def _one(env: Env, measure: str, **kw: Any) -> Any:
    return series(revenue(env, measure, *MARCH, settings={**SETTINGS, **kw.pop("settings", {})}, **kw))[0]


def _by(env: Env, measure: str, breakdown: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = revenue(env, measure, *MARCH, settings=SETTINGS, breakdown=breakdown, **kw)
    return {g["breakdown_value"]: g["series"][0]["value"] for g in r["results"]}


def test_conversion_rate_overall_and_by_utm_source(march: Env) -> None:
    # 4 visitors, 2 converted within 14 days -> 0.5
    assert _one(march, "conversion_rate") == 0.5
    # by the visit's utm_source: google 1 of 2, facebook 1 of 1, no source 0 of 1
    assert _by(march, "conversion_rate", {"key": "utm_source"}) == {
        "google": 0.5,
        "facebook": 1.0,
        "$none": 0.0,
    }


def test_spend_cac_and_cpa_by_channel(march: Env) -> None:
    assert _one(march, "spend") == 500.0
    assert _one(march, "spend", settings={"spend_categories": ["marketing"]}) == 400.0
    # 3 new customers (c1, c3, c5): CAC = 500 / 3
    assert _one(march, "cac") == pytest.approx(500 / 3)
    # channel of a customer: imported (c5: google) else first touch of its person (c1: google, c3: facebook);
    # google 300 / 2, facebook 100 / 1, sales-team 100 / 0 = undefined
    by = _by(march, "cac", {"key": "channel"})
    assert by["google"] == 150.0 and by["facebook"] == 100.0 and by["sales-team"] is None
    # CPA: conversions = persons doing signed_up: 500 / 2; by channel google 300 / 1, facebook 100 / 1
    assert _one(march, "cpa") == 250.0
    cpa = _by(march, "cpa", {"key": "channel"})
    assert (cpa["google"], cpa["facebook"], cpa["sales-team"]) == (300.0, 100.0, None)
    assert _one(march, "conversions") == 2
    with pytest.raises(SpecError, match="channel only"):
        _by(march, "cac", {"key": "plan", "type": "person"})


def test_payback_ltv_cac_and_arpu(march: Env) -> None:
    # ARPA at the end = (100 + 50 + 30) / 3 = 60; payback = CAC / (ARPA x margin) = 166.67 / (60 x 0.5)
    assert _one(march, "cac_payback_months", settings={"gross_margin": 0.5}) == pytest.approx(500 / 3 / 30)
    # customer churn in March = 1 / 1 (c9); LTV = 60 / 1 = 60; LTV:CAC = 60 / 166.67 = 0.36
    assert _one(march, "ltv") == 60.0
    assert _one(march, "ltv_cac") == pytest.approx(60 / (500 / 3))
    # ARPU = MRR 180 / 4 active persons (u1..u4)
    r = revenue(march, "arpu", *MARCH)["series"][0]
    assert (r["value"], r["users"]) == (45.0, 4)
    # MRR by customer channel: google c1 + c5 = 130, facebook 50, no channel (c9 churned) 0
    assert _by(march, "mrr", {"key": "channel"}) == {"google": 130.0, "facebook": 50.0, "$none": 0.0}


def test_transactional_cltv(env: Env) -> None:
    import_rows(env, "invoices", [
        {"invoice_id": "i1", "customer_id": "c1", "amount": 100, "issued_at": "2024-03-10T00:00:00Z", "subscription_id": "s1"},
        {"invoice_id": "i2", "customer_id": "c3", "amount": 50, "issued_at": "2024-03-12T00:00:00Z"},
        {"invoice_id": "i3", "customer_id": "c1", "amount": 30, "issued_at": "2024-03-20T00:00:00Z", "tax": 6},
        {"invoice_id": "i4", "customer_id": "c1", "amount": 99, "issued_at": "2024-03-21T00:00:00Z", "status": "open"},
    ])  # fmt: skip
    p = revenue(env, "cltv", *MARCH, settings={"profit_margin": 0.5})["series"][0]
    # paid: 180 over 3 purchases by 2 customers in 31 days. APV = 60; frequency = 1.5 x 365 / 31 = 17.661 a year;
    # LTV = 60 x 17.661 x 3 years = 3179.03; CLTV = LTV x 0.5 = 1589.52
    assert p["average_purchase_value"] == 60.0
    assert p["purchase_frequency"] == pytest.approx(1.5 * 365 / 31)
    assert p["ltv"] == pytest.approx(60 * 1.5 * 365 / 31 * 3)
    assert p["value"] == pytest.approx(60 * 1.5 * 365 / 31 * 3 * 0.5)
