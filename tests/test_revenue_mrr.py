"""MRR: normalisation, discounts, taxes, trials, past due, churn timing and currency, worked by hand."""

from __future__ import annotations

import pytest

from kpilot.errors import KpilotError
from tests.conftest import Env
from tests.revenue_helpers import import_rows, revenue, series, sub

MARCH = ("2024-03-01", "2024-03-31")


def test_intervals_quantity_and_interval_count_normalise_to_a_month(env: Env) -> None:
    import_rows(
        env,
        "subscriptions",
        [
            sub("y", "c1", "2024-01-01", amount=1200, interval="year"),  # 1200 / 12 = 100
            sub("q", "c2", "2024-01-01", amount=300, interval="quarter"),  # 300 / 3 = 100
            sub("w", "c3", "2024-01-01", amount=10, interval="week"),  # 10 x 52 / 12 = 43.3333
            sub("d", "c4", "2024-01-01", amount=1, interval="day"),  # 1 x 365 / 12 = 30.4167
            sub("m2", "c5", "2024-01-01", amount=200, interval="month", interval_count=2),  # 200 / 2 = 100
            sub("seats", "c6", "2024-01-01", amount=20, quantity=3),  # 20 x 3 = 60
        ],
    )
    # 100 + 100 + 43.3333 + 30.4167 + 100 + 60 = 433.75
    r = revenue(env, "mrr", *MARCH)
    assert series(r) == [pytest.approx(433.75, abs=1e-9)]
    assert series(revenue(env, "arr", *MARCH)) == [pytest.approx(433.75 * 12)]
    assert series(revenue(env, "customers", *MARCH)) == [6]
    # ARPA = 433.75 / 6
    assert series(revenue(env, "arpa", *MARCH)) == [pytest.approx(433.75 / 6)]


def test_discounts_forever_and_while_active(env: Env) -> None:
    import_rows(
        env,
        "subscriptions",
        [
            sub("pct", "c1", "2024-01-01", discount_percent=20),  # 100 x 0.8 = 80, forever
            sub("off", "c2", "2024-01-01", discount_amount=10),  # 100 - 10 = 90, forever
            sub(
                "limited", "c3", "2024-01-01", discount_percent=50, discount_end="2024-03-15"
            ),  # 50 until Mar 15
            sub(
                "once", "c4", "2024-01-01", discount_percent=50, discount_duration="once"
            ),  # never deducted: 100
        ],
    )
    # February: 80 + 90 + 50 + 100 = 320; March (after the limited discount ends): 80 + 90 + 100 + 100 = 370
    r = revenue(env, "movements", "2024-02-01", "2024-03-31")
    assert series(revenue(env, "mrr", "2024-02-01", "2024-03-31")) == [320.0, 370.0]
    march = r["series"][1]
    assert march["expansion"] == 50.0 and march["contraction"] == 0.0
    # Stripe's older rule: only forever discounts; the limited one is ignored all along (100 in February)
    forever = revenue(env, "mrr", "2024-02-01", "2024-03-31", settings={"discounts": "forever_only"})
    assert series(forever) == [370.0, 370.0]
    assert series(revenue(env, "mrr", *MARCH, settings={"discounts": "none"})) == [400.0]


def test_taxes_are_excluded(env: Env) -> None:
    import_rows(
        env,
        "subscriptions",
        [
            sub(
                "incl", "c1", "2024-01-01", amount=120, tax_percent=20, tax_inclusive=True
            ),  # 120 / 1.2 = 100
            sub("excl", "c2", "2024-01-01", amount=100, tax_percent=20),  # already net: 100
        ],
    )
    assert series(revenue(env, "mrr", *MARCH)) == [200.0]


def test_trials_and_free_plans_are_zero_and_conversion_is_new(env: Env) -> None:
    import_rows(
        env,
        "subscriptions",
        [
            sub("t", "c1", "2024-02-20", amount=50, trial_end="2024-03-10"),
            sub("trialing", "c2", "2024-03-01", amount=50, status="trialing"),
            sub("free", "c3", "2024-01-01", amount=0),
        ],
    )
    feb = revenue(env, "movements", "2024-02-01", "2024-03-31")
    assert series(revenue(env, "mrr", "2024-02-01", "2024-03-31")) == [0.0, 50.0]
    assert [p["new"] for p in feb["series"]] == [0.0, 50.0]
    assert series(revenue(env, "customers", "2024-02-01", "2024-03-31")) == [0, 1]


def test_past_due_counts_until_churned_or_until_the_grace_period_ends(env: Env) -> None:
    import_rows(
        env, "subscriptions", [sub("pd", "c1", "2024-01-01", status="past_due", past_due_since="2024-03-05")]
    )
    assert series(revenue(env, "mrr", *MARCH)) == [100.0]
    # 10 days of grace: stops counting on Mar 15 -> churn in March
    r = revenue(env, "movements", *MARCH, settings={"past_due_grace_days": 10})
    assert r["series"][0]["churn"] == 100.0 and r["series"][0]["mrr_end"] == 0.0


def test_churn_at_period_end_by_default_or_at_cancellation(env: Env) -> None:
    import_rows(env, "subscriptions", [sub("s", "c1", "2024-01-01", "2024-04-01", canceled_at="2024-03-10")])
    default = revenue(env, "churned_mrr", "2024-03-01", "2024-04-30")
    assert series(default) == [0.0, 100.0]
    at_cancel = revenue(
        env, "churned_mrr", "2024-03-01", "2024-04-30", settings={"churn_recognition": "cancellation"}
    )
    assert series(at_cancel) == [100.0, 0.0]


def test_currency_converts_at_the_rate_of_the_state_start_and_fx_moves_are_not_movements(env: Env) -> None:
    import_rows(env, "fx-rates", [
        {"date": "2024-01-01", "currency": "EUR", "quote": "USD", "rate": 1.1},
        {"date": "2024-02-15", "currency": "EUR", "quote": "USD", "rate": 1.2},
        {"date": "2024-01-01", "currency": "USD", "quote": "GBP", "rate": 0.8},  # only the inverse exists
    ])  # fmt: skip
    import_rows(env, "subscriptions", [
        sub("eur", "c1", "2024-02-01", amount=100, currency="EUR"),  # 100 x 1.1 = 110 (rate on Feb 1)
        sub("eur2", "c2", "2024-03-01", amount=100, currency="EUR"),  # 100 x 1.2 = 120 (rate on Mar 1)
        sub("gbp", "c3", "2024-03-01", amount=80, currency="GBP"),  # 80 / 0.8 = 100
    ])  # fmt: skip
    r = revenue(env, "movements", "2024-02-01", "2024-03-31")
    assert [p["mrr_end"] for p in r["series"]] == [110.0, 330.0]
    assert [p["new"] for p in r["series"]] == [110.0, 220.0]
    assert r["series"][1]["expansion"] == 0.0
    # a currency without any rate is an error that names it
    import_rows(env, "subscriptions", [sub("jpy", "c4", "2024-03-01", amount=1000, currency="JPY")])
    with pytest.raises(KpilotError, match="JPY to USD"):
        revenue(env, "mrr", *MARCH)


def test_chartmogul_movement_rules(env: Env) -> None:
    import_rows(
        env,
        "subscriptions",
        [
            # a: two subscriptions from January; cancelling one in February is contraction, not churn
            sub("a1", "a", "2024-01-01", amount=100),
            sub("a2", "a", "2024-01-01", "2024-02-10", amount=50),
            # b: new in January, churns Feb 20, comes back Mar 5 = reactivation
            sub("b1", "b", "2024-01-15", "2024-02-20", amount=30),
            sub("b2", "b", "2024-03-05", amount=40),
            # c: seat upgrade Mar 10 = expansion (new state of the same subscription)
            sub("c1", "c", "2024-01-01", "2024-03-10", amount=10, quantity=2),
            sub("c1", "c", "2024-03-10", amount=10, quantity=5),
        ],
    )
    r = revenue(env, "movements", "2024-01-01", "2024-03-31")
    jan, feb, mar = r["series"]
    # Jan: a 150 + b 30 + c 20 all new = 200
    assert (jan["new"], jan["mrr_end"]) == (200.0, 200.0)
    # Feb: a -50 contraction, b -30 churn -> 120
    assert (feb["contraction"], feb["churn"], feb["mrr_end"]) == (50.0, 30.0, 120.0)
    # Mar: b reactivates with 40, c +30 expansion -> 190
    assert (mar["reactivation"], mar["expansion"], mar["new"], mar["mrr_end"]) == (40.0, 30.0, 0.0, 190.0)
    for p in (jan, feb, mar):
        assert (
            p["mrr_start"] + p["new"] + p["expansion"] + p["reactivation"] - p["contraction"] - p["churn"]
            == p["mrr_end"]
        )
    assert series(revenue(env, "new_customers", "2024-01-01", "2024-03-31")) == [3, 0, 0]
    assert series(revenue(env, "churned_customers", "2024-01-01", "2024-03-31")) == [0, 1, 0]
    assert series(revenue(env, "reactivated_customers", "2024-01-01", "2024-03-31")) == [0, 0, 1]


def test_churn_and_return_within_one_period_is_not_customer_churn(env: Env) -> None:
    # ChartMogul's customer churn: paying at start and not at end. b leaves Mar 10 and returns Mar 20.
    import_rows(env, "subscriptions", [
        sub("a", "a", "2024-01-01", "2024-03-05"),
        sub("b1", "b", "2024-01-01", "2024-03-10"),
        sub("b2", "b", "2024-03-20"),
        sub("c", "c", "2024-01-01"),
        sub("d", "d", "2024-01-01"),
    ])  # fmt: skip
    r = revenue(env, "customer_churn_rate", *MARCH)
    assert series(r) == [0.25]  # only a: 1 of 4 customers at the start
    mv = revenue(env, "movements", *MARCH)["series"][0]
    assert (mv["churn"], mv["reactivation"]) == (200.0, 100.0)


def test_week_and_day_intervals_and_clipped_periods(env: Env) -> None:
    import_rows(env, "subscriptions", [sub("a", "a", "2024-03-06", "2024-03-13")])
    # weeks (Monday start) Mar 4, Mar 11; date_from Mar 5 clips the first period
    r = revenue(env, "movements", "2024-03-05", "2024-03-17", interval="week")
    assert [p["date"] for p in r["series"]] == ["2024-03-04", "2024-03-11"]
    assert [(p["new"], p["churn"]) for p in r["series"]] == [(100.0, 0.0), (0.0, 100.0)]
    days = revenue(env, "mrr", "2024-03-05", "2024-03-07", interval="day")
    assert series(days) == [0.0, 100.0, 100.0]
