"""Importing business data: row errors with file/line/reason, idempotent re-import, Stripe export columns, CLI."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kpilot.cli.main import app
from kpilot.revenue.importing import import_source
from kpilot.workspace import Workspace
from tests.conftest import Env
from tests.revenue_helpers import import_rows, revenue, series, sub


def test_bad_rows_are_rejected_with_line_and_reason_and_the_rest_imported(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "subs.csv"
    path.write_text(
        "subscription_id,customer_id,start_date,end_date,amount,interval\n"
        "s1,c1,2024-01-01,,100,month\n"
        "s2,c2,2024-01-01,,abc,month\n"  # line 3: amount not a number
        "s3,c3,2024-02-01,2024-01-01,10,month\n"  # line 4: ends before it starts
        "s4,c4,2024-01-01,,10,fortnight\n"  # line 5: unknown interval
        ",c5,2024-01-01,,10,month\n"  # line 6: no id
    )
    report = import_source(env.ws, env.project, "subscriptions", [path])
    assert (report.rows_read, report.imported, report.rejected) == (5, 1, 4)
    reasons = {r.line: r.reason for r in report.rejections}
    assert reasons[3] == "column 'amount' value 'abc' is not a number"
    assert "before start_date" in reasons[4]
    assert "'fortnight' is not one of day, week, month, quarter, year" in reasons[5]
    assert "'subscription_id'" in reasons[6]
    assert all(r.file == str(path) for r in report.rejections)


def test_reimport_is_idempotent_and_updates_changed_rows(env: Env) -> None:
    rows = [sub("s1", "c1", "2024-01-01"), sub("s2", "c2", "2024-01-01", amount=50)]
    first = import_rows(env, "subscriptions", rows)
    again = import_rows(env, "subscriptions", rows)
    assert (first.imported, again.imported, again.deduplicated) == (2, 0, 2)
    rows[1]["amount"] = 70
    changed = import_rows(env, "subscriptions", rows)
    assert (changed.imported, changed.deduplicated) == (1, 1)
    assert series(revenue(env, "mrr", "2024-01-01", "2024-01-31")) == [170.0]
    # a key twice in one file: the last row wins
    import_rows(
        env,
        "subscriptions",
        [sub("s3", "c3", "2024-01-01", amount=1), sub("s3", "c3", "2024-01-01", amount=2)],
    )
    assert series(revenue(env, "mrr", "2024-01-01", "2024-01-31")) == [172.0]


def test_customers_merge_fields_across_files(env: Env) -> None:
    import_rows(
        env, "customers", [{"customer_id": "c1", "distinct_id": "u1", "email": "a@x.io", "channel": "google"}]
    )
    import_rows(env, "subscriptions", [sub("s1", "c1", "2024-01-01", customer_email="new@x.io")])
    rows = env.ws.store.fetchall("SELECT customer_id, distinct_id, email, channel FROM customers")
    assert rows == [("c1", "u1", "new@x.io", "google")]


def test_stripe_subscription_export_columns(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "stripe_subs.csv"
    path.write_text(
        "id,Customer ID,Customer Email,Plan,Quantity,Currency,Interval,Amount,Status,Created (UTC),"
        "Start Date (UTC),Current Period Start (UTC),Current Period End (UTC),Trial End (UTC),"
        "Canceled At (UTC),Ended At (UTC),Cancel At Period End\n"
        "sub_1,cus_1,a@x.io,pro,2,usd,year,600.00,active,2024-01-01 09:00,2024-01-01 09:00,2024-01-01 09:00,"
        "2025-01-01 09:00,,,,false\n"
        "sub_2,cus_2,b@x.io,basic,1,usd,month,30.00,canceled,2024-01-05 10:00,2024-01-05 10:00,2024-02-05 10:00,"
        "2024-03-05 10:00,,2024-02-20 08:00,,true\n"
        "sub_3,cus_3,,basic,1,usd,month,30.00,trialing,2024-03-01 10:00,2024-03-01 10:00,2024-03-01 10:00,"
        "2024-03-15 10:00,2024-03-15 10:00,,,false\n"
        "sub_4,cus_4,,basic,1,eur,month,30.00,past_due,2024-01-01 10:00,2024-01-01 10:00,2024-03-01 10:00,"
        "2024-04-01 10:00,,,,false\n"
    )
    report = import_source(env.ws, env.project, "subscriptions", [path])
    assert (report.imported, report.rejected) == (4, 0)
    got = {
        r[0]: r[1:]
        for r in env.ws.store.fetchall(
            "SELECT subscription_id, start_date, end_date, amount, quantity, billing_interval, status, trial_end, "
            "past_due_since, currency, source FROM subscriptions"
        )
    }
    assert got["sub_1"] == (
        date(2024, 1, 1),
        None,
        Decimal("600"),
        Decimal(2),
        "year",
        "active",
        None,
        None,
        "USD",
        "stripe",
    )
    # canceled at period end: ends at the current period end
    assert got["sub_2"][1] == date(2024, 3, 5)
    assert got["sub_3"][6] == date(2024, 3, 15)
    assert got["sub_4"][7] == date(2024, 3, 1) and got["sub_4"][8] == "EUR"
    # 600 x 2 / 12 = 100 in January; + 30 for sub_2; sub_4 (EUR) filtered out
    import_rows(env, "fx-rates", [{"date": "2023-12-01", "currency": "EUR", "quote": "USD", "rate": "1.1"}])
    flt = [{"key": "customer_id", "operator": "is_not", "value": "cus_4"}]
    assert series(revenue(env, "mrr", "2024-01-01", "2024-01-31", filters=flt)) == [130.0]


def test_stripe_invoice_export_columns(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "stripe_invoices.csv"
    path.write_text(
        "id,Customer,Subscription,Date (UTC),Currency,Subtotal,Discount,Tax,Total,Amount Paid,Status\n"
        "in_1,cus_1,sub_1,2024-03-02 10:00,usd,100.00,10.00,18.00,108.00,108.00,paid\n"
        "in_2,cus_2,,2024-03-03 10:00,usd,50.00,,0,50.00,50.00,paid\n"
        "in_3,cus_2,,2024-03-04 10:00,usd,50.00,,0,50.00,0,void\n"
    )
    report = import_source(env.ws, env.project, "invoices", [path])
    assert report.rejected == 0
    rows = env.ws.store.fetchall("SELECT invoice_id, amount, tax, kind, status FROM invoices ORDER BY 1")
    assert rows[0] == ("in_1", Decimal("90"), Decimal("18"), "subscription", "paid")  # 108 total - 18 tax
    assert rows[1][3] == "one_time"
    # revenue: paid invoices excluding tax: 90 + 50 (the void one is not revenue)
    r = revenue(env, "revenue", "2024-03-01", "2024-03-31")
    assert r["series"][0]["value"] == 140.0 and r["series"][0]["purchases"] == 2


def test_survey_ticket_and_feedback_rows_are_validated(env: Env) -> None:
    report = import_rows(env, "surveys", [
        {"survey": "q1 nps", "score": 11, "responded_at": "2024-03-01T00:00:00Z"},  # NPS is 0-10
        {"survey": "q1", "metric": "stars", "score": 3, "responded_at": "2024-03-01T00:00:00Z"},
        {"survey": "q1 nps", "score": 9, "responded_at": "2024-03-01T00:00:00Z", "distinct_id": "u1"},  # metric from name
    ])  # fmt: skip
    assert report.rejected == 2 and report.imported == 1
    assert "nps score 11 is outside 0-10" in report.rejections[0].reason
    again = import_rows(
        env,
        "surveys",
        [{"survey": "q1 nps", "score": 9, "responded_at": "2024-03-01T00:00:00Z", "distinct_id": "u1"}],
    )
    assert again.deduplicated == 1  # no response id: the same person, survey and time is the same response
    t = import_rows(
        env,
        "tickets",
        [
            {
                "ticket_id": "t",
                "created_at": "2024-03-02T00:00:00Z",
                "first_response_at": "2024-03-01T00:00:00Z",
            }
        ],
    )
    assert "before created_at" in t.rejections[0].reason
    f = import_rows(
        env,
        "feedback",
        [{"item_id": "f", "text": "x", "status": "someday", "created_at": "2024-03-01T00:00:00Z"}],
    )
    assert "'someday' is not one of new, planned" in f.rejections[0].reason


def test_cli_import_and_query(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    Workspace.init(home).close()
    runner = CliRunner()
    assert runner.invoke(app, ["--home", str(home), "project", "create", "p"]).exit_code == 0
    spend = tmp_path / "spend.csv"
    spend.write_text("date,channel,amount\n2024-03-01,google,100\n2024-03-02,google,oops\n")
    res = runner.invoke(app, ["--home", str(home), "import", "spend", str(spend)])
    assert res.exit_code == 5
    assert f"{spend}:3: column 'amount' value 'oops' is not a number" in res.output.replace("\n", "")
    res = runner.invoke(app, ["--home", str(home), "import", "spend", str(spend), "--json"])
    assert '"deduplicated": 1' in res.output
    spec = tmp_path / "q.json"
    spec.write_text(
        '{"kind": "revenue", "measure": "spend", "date_from": "2024-03-01", "date_to": "2024-03-31"}'
    )
    res = runner.invoke(app, ["--home", str(home), "query", str(spec)])
    assert res.exit_code == 0 and '"value": 100.0' in res.output


@pytest.mark.parametrize("measure", ["mrr", "nps"])
def test_querying_before_any_import_names_the_problem(env: Env, measure: str) -> None:
    from kpilot.errors import KpilotError

    kind = "revenue" if measure == "mrr" else "voice"
    spec = {"kind": kind, "measure": measure, "date_from": "2024-03-01", "date_to": "2024-03-31"}
    # a fresh store has no business tables until something is imported (read-write stores create them then)
    tables = {r[0] for r in env.ws.store.fetchall("SELECT table_name FROM information_schema.tables")}
    if "subscriptions" in tables:
        pytest.skip("the store already created the tables")
    with pytest.raises(KpilotError, match=r"no .* imported yet"):
        env.query(spec)
