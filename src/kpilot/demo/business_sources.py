"""Demo data of the business sources: billing (customers, subscriptions, invoices, fx rates), spend, surveys,
support tickets and feedback, consistent with the demo's persons.

* Customers are the persons who signed up on a paid plan (``pro``: 29 a month or 290 a year; ``team``: 15 a
  seat a month, 3-12 seats); ``customer_id`` = ``cus_<n>``, linked to the person by their user id. A fifth
  pay in EUR (monthly EUR->USD rates are generated), half start with a 14-day trial, some get a 20%
  discount for three months, some pro customers upgrade to team. A subscription ends when the person churns
  inside the window. Invoices are issued per paid month (or year), plus one-time onboarding fees.
* Spend: every paid channel every day (marketing), plus a weekly sales cost.
* Surveys: NPS two weeks after signup (persons who reached value score higher), CES after activation,
  CSAT after a resolved ticket. Tickets: a share of signups open one or two; responses and resolutions
  take hours. Feedback: short texts (praise, complaints, questions) and feature requests with votes, two of
  them duplicates merged into their original.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from kpilot.demo.persons import DAY, DemoPersons
from kpilot.demo.registry import register, report_progress
from kpilot.revenue.importing import write_rows
from kpilot.voice.sentiment import score
from kpilot.workspace import ProjectInfo, Workspace

__all__ = ["business_data"]

PAID_CHANNELS = {
    "google": 420.0,
    "twitter": 90.0,
    "linkedin": 140.0,
    "newsletter": 60.0,
    "partner": 80.0,
    "producthunt": 30.0,
}
_PRAISE = (
    "Love how fast the dashboards load, great work",
    "The new reports are excellent and save me hours every week",
    "Really happy with the product, support was very helpful",
    "Onboarding was smooth and easy",
)
_COMPLAINTS = (
    "The app is slow and the export keeps failing, very frustrating",
    "Billing page is confusing and I was charged twice",
    "Terrible experience with the mobile app, it crashes constantly",
)
_NEUTRAL = (
    "How do I change the owner of a workspace?",
    "Is there an API endpoint for projects?",
    "Where is the invoice archive?",
)
_REQUESTS = (
    ("Dark mode", "Please add a dark mode for the dashboard"),
    ("Slack alerts", "Send alerts to a Slack channel when a KPI drops"),
    ("CSV export", "Export any chart to CSV"),
    ("SSO login", "Single sign-on with Okta or Google Workspace"),
    ("Custom domains", "Serve shared reports from our own domain"),
    ("Mobile app", "A native mobile app to check KPIs"),
)
_REQUEST_STATUS = ("in_progress", "planned", "new", "shipped", "new", "declined")


def _day(persons: DemoPersons, seconds: float) -> date:
    return (persons.start + timedelta(seconds=float(seconds))).date()


def _ts(persons: DemoPersons, seconds: float) -> datetime:
    return persons.start + timedelta(seconds=float(seconds))


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, min(d.day, 28))


@register(
    "business",
    order=50,
    description="billing, spend, surveys, support tickets and feedback for the demo's customers",
    metrics=(
        "mrr",
        "customer_churn_rate",
        "cac",
        "nps",
        "csat",
        "escalation_rate",
        "customer_sentiment_score",
    ),
)
def business_data(
    ws: Workspace, project: ProjectInfo, rng: np.random.Generator, persons: DemoPersons, days: list[date]
) -> None:
    end_day = days[-1] + timedelta(days=1)
    tables: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "customers", "subscriptions", "invoices", "fx_rates", "spend", "survey_responses", "tickets",
        "feedback_items", "feedback_voters", "feedback_merges",
    )}  # fmt: skip
    # monthly EUR -> USD rates
    month = days[0].replace(day=1)
    rate = 1.08
    while month < end_day:
        tables["fx_rates"].append(
            {"day": month, "currency": "EUR", "quote": "USD", "rate": Decimal(f"{rate:.4f}")}
        )
        rate = float(np.clip(rate + rng.normal(0, 0.01), 1.0, 1.2))
        month = _add_months(month, 1)
    customers = _billing(tables, rng, persons, end_day)
    report_progress(0.4)
    _spend(tables, rng, days)
    _voice(tables, rng, persons, end_day, customers)
    report_progress(0.7)
    write_rows(ws, project.id, tables)
    report_progress(1.0)


def _billing(
    tables: dict[str, list[dict[str, Any]]], rng: np.random.Generator, persons: DemoPersons, end_day: date
) -> dict[int, str]:
    customers: dict[int, str] = {}
    paid = np.flatnonzero(np.isin(persons.plan, ("pro", "team")) & persons.signed_up)
    for n, i in enumerate(paid.tolist()):
        cid = f"cus_{n + 1:05d}"
        customers[i] = cid
        start = _day(persons, persons.signup_s[i])
        churn = persons.churn_s[i]
        end = _day(persons, churn) if not np.isnan(churn) and _day(persons, churn) < end_day else None
        if end is not None and end <= start:
            end = start + timedelta(days=1)
        tables["customers"].append({
            "customer_id": cid, "distinct_id": str(persons.user_id[i]), "email": f"{persons.user_id[i]}@example.com",
            "name": None, "channel": None, "country": str(persons.country[i]), "created_at": _ts(persons, persons.signup_s[i]),
        })  # fmt: skip
        currency = "EUR" if rng.random() < 0.2 else "USD"
        trial_end = start + timedelta(days=14) if rng.random() < 0.5 else None
        discount = rng.random() < 0.15
        base: dict[str, Any] = {
            "subscription_id": f"sub_{n + 1:05d}", "customer_id": cid, "currency": currency, "interval_count": 1,
            "discount_percent": Decimal(20) if discount else None, "discount_amount": None,
            "discount_end": _add_months(start, 3) if discount else None,
            "discount_duration": "repeating" if discount else "forever", "trial_end": trial_end, "status": "active",
            "canceled_at": None, "past_due_since": None, "tax_percent": None, "tax_inclusive": False, "source": "kpilot",
        }  # fmt: skip
        if persons.plan[i] == "pro":
            annual = rng.random() < 0.25
            state = {
                **base,
                "plan": "pro",
                "amount": Decimal(290 if annual else 29),
                "billing_interval": "year" if annual else "month",
                "quantity": Decimal(1),
            }
        else:
            seats = int(rng.integers(3, 13))
            state = {
                **base,
                "plan": "team",
                "amount": Decimal(15),
                "billing_interval": "month",
                "quantity": Decimal(seats),
            }
        states = [(start, end, state)]
        upgrade = start + timedelta(days=int(rng.integers(20, 60)))
        if (
            persons.plan[i] == "pro"
            and rng.random() < 0.15
            and (end is None or upgrade < end)
            and upgrade < end_day
        ):
            states = [
                (start, upgrade, state),
                (
                    upgrade,
                    end,
                    {
                        **state,
                        "plan": "team",
                        "amount": Decimal(15),
                        "billing_interval": "month",
                        "quantity": Decimal(3),
                    },
                ),
            ]
        for a, b, s in states:
            tables["subscriptions"].append(
                {
                    **s,
                    "start_date": a,
                    "end_date": b,
                    "canceled_at": b if b is not None and b == end else None,
                }
            )
            _invoices(tables, cid, s, a, b, end_day, trial_end)
        if persons.plan[i] == "team" and rng.random() < 0.1:
            tables["invoices"].append({
                "invoice_id": f"in_{cid}_onb", "customer_id": cid, "subscription_id": None,
                "issued_at": datetime.combine(start, datetime.min.time()) + timedelta(hours=10), "paid_at": None,
                "amount": Decimal(199), "tax": Decimal(0), "discount": Decimal(0), "currency": currency, "status": "paid", "kind": "one_time",
            })  # fmt: skip
    return customers


def _invoices(
    tables: dict[str, list[dict[str, Any]]],
    cid: str,
    s: dict[str, Any],
    a: date,
    b: date | None,
    end_day: date,
    trial_end: date | None,
) -> None:
    step = 12 if s["billing_interval"] == "year" else 1
    day = max(a, trial_end) if trial_end else a
    k = 0
    while day < end_day and (b is None or day < b):
        amount = s["amount"] * s["quantity"]
        if s["discount_end"] is not None and day < s["discount_end"]:
            amount = amount * Decimal("0.8")
        tables["invoices"].append({
            "invoice_id": f"in_{s['subscription_id']}_{a.isoformat()}_{k}", "customer_id": cid, "subscription_id": s["subscription_id"],
            "issued_at": datetime.combine(day, datetime.min.time()) + timedelta(hours=6), "paid_at": None,
            "amount": amount, "tax": Decimal(0), "discount": Decimal(0), "currency": s["currency"], "status": "paid", "kind": "subscription",
        })  # fmt: skip
        k += 1
        day = _add_months(day, step)


def _spend(tables: dict[str, list[dict[str, Any]]], rng: np.random.Generator, days: list[date]) -> None:
    for i, d in enumerate(days):
        trend = 1.0 + 0.6 * i / max(len(days) - 1, 1)
        for channel, base in PAID_CHANNELS.items():
            amount = base * trend * float(rng.uniform(0.7, 1.3))
            tables["spend"].append(
                {
                    "day": d,
                    "channel": channel,
                    "campaign": f"{channel}-always-on",
                    "category": "marketing",
                    "amount": Decimal(f"{amount:.2f}"),
                    "currency": "USD",
                }
            )
        if d.weekday() == 0:
            tables["spend"].append(
                {
                    "day": d,
                    "channel": "sales-team",
                    "campaign": "",
                    "category": "sales",
                    "amount": Decimal(2500),
                    "currency": "USD",
                }
            )


def _voice(
    tables: dict[str, list[dict[str, Any]]],
    rng: np.random.Generator,
    persons: DemoPersons,
    end_day: date,
    customers: dict[int, str],
) -> None:
    end_s = (end_day - persons.start.date()).days * DAY
    signed = np.flatnonzero(persons.signed_up).tolist()
    for i in signed:
        uid = str(persons.user_id[i])
        cid = customers.get(i)
        at = persons.signup_s[i] + 14 * DAY
        if rng.random() < 0.3 and at < end_s:
            good = not np.isnan(persons.value_s[i])
            score_ = int(np.clip(rng.normal(9.0 if good else 7.2, 1.5), 0, 10).round())
            tables["survey_responses"].append(
                {
                    "response_id": f"nps_{uid}",
                    "survey": "nps-day-14",
                    "metric": "nps",
                    "score": score_,
                    "customer_id": cid,
                    "distinct_id": uid,
                    "responded_at": _ts(persons, at),
                    "comment": None,
                }
            )
        if not np.isnan(persons.activated_s[i]) and rng.random() < 0.2:
            at = persons.activated_s[i] + 600
            if at < end_s:
                ces = int(np.clip(rng.normal(5.4, 1.2), 1, 7).round())
                tables["survey_responses"].append(
                    {
                        "response_id": f"ces_{uid}",
                        "survey": "ces-activation",
                        "metric": "ces",
                        "score": ces,
                        "customer_id": cid,
                        "distinct_id": uid,
                        "responded_at": _ts(persons, at),
                        "comment": None,
                    }
                )
        if rng.random() < 0.15:
            for k in range(int(rng.integers(1, 3))):
                created = persons.signup_s[i] + float(rng.exponential(10 * DAY))
                if created >= end_s:
                    break
                first = created + float(rng.exponential(3 * 3600))
                resolved = first + float(rng.exponential(20 * 3600)) if rng.random() < 0.9 else None
                tid = f"t_{uid}_{k}"
                tables["tickets"].append({
                    "ticket_id": tid, "customer_id": cid, "distinct_id": uid, "created_at": _ts(persons, created),
                    "first_response_at": _ts(persons, first) if first < end_s else None,
                    "resolved_at": _ts(persons, resolved) if resolved is not None and resolved < end_s else None,
                    "escalation_level": int(rng.random() < 0.08), "channel": str(rng.choice(["email", "chat", "phone"])),
                    "priority": str(rng.choice(["low", "normal", "high"], p=[0.3, 0.55, 0.15])), "status": None,
                })  # fmt: skip
                if resolved is not None and resolved + 3600 < end_s and rng.random() < 0.5:
                    csat = int(np.clip(rng.normal(4.1, 0.9), 1, 5).round())
                    tables["survey_responses"].append(
                        {
                            "response_id": f"csat_{tid}",
                            "survey": "csat-support",
                            "metric": "csat",
                            "score": csat,
                            "customer_id": cid,
                            "distinct_id": uid,
                            "responded_at": _ts(persons, resolved + 3600),
                            "comment": None,
                        }
                    )
        if rng.random() < 0.1:
            created = persons.signup_s[i] + float(rng.exponential(7 * DAY))
            if created < end_s:
                text = str(rng.choice(_PRAISE + _COMPLAINTS + _NEUTRAL))
                _feedback(
                    tables, f"fb_{uid}", "feedback", None, text, cid, uid, _ts(persons, created), 0, "new"
                )
    # feature requests: voters drawn from the signed-up persons
    pool = [str(persons.user_id[i]) for i in signed]
    for k, (title, text) in enumerate(_REQUESTS):
        if not pool:
            break
        voters = sorted(
            set(rng.choice(pool, size=min(len(pool), int(rng.integers(3, 40))), replace=False).tolist())
        )
        created = persons.start + timedelta(
            days=int(rng.integers(0, max((end_day - persons.start.date()).days // 2, 1)))
        )
        _feedback(
            tables,
            f"fr_{k + 1}",
            "feature_request",
            title,
            text,
            None,
            voters[0],
            created,
            len(voters),
            _REQUEST_STATUS[k],
            voters,
        )
    for k, (orig, title, text) in enumerate(
        (
            (1, "Night theme", "A darker theme would help at night"),
            (3, "Export data", "Download chart data as a spreadsheet"),
        )
    ):
        if len(pool) < 2 or not any(r["item_id"] == f"fr_{orig}" for r in tables["feedback_items"]):
            continue
        dup = f"fr_dup_{k + 1}"
        voters = sorted(set(rng.choice(pool, size=min(len(pool), 5), replace=False).tolist()))
        _feedback(
            tables,
            dup,
            "feature_request",
            title,
            text,
            None,
            voters[0],
            persons.start + timedelta(days=k + 1),
            len(voters),
            "new",
            voters,
        )
        tables["feedback_merges"].append(
            {"item_id": dup, "into_item_id": f"fr_{orig}", "merged_at": persons.start + timedelta(days=k + 2)}
        )


def _feedback(
    tables: dict[str, list[dict[str, Any]]], item_id: str, kind: str, title: str | None, text: str, cid: str | None,
    uid: str, created: datetime, votes: int, status: str, voters: list[str] | None = None,
) -> None:  # fmt: skip
    compound, label = score(" ".join(p for p in (title, text) if p))
    tables["feedback_items"].append({
        "item_id": item_id, "kind": kind, "title": title, "text": text, "customer_id": cid, "distinct_id": uid,
        "source": "in-app", "created_at": created, "votes": votes, "status": status, "tags": None,
        "sentiment": compound, "sentiment_label": label,
    })  # fmt: skip
    for v in sorted(set(voters or [uid])):
        tables["feedback_voters"].append({"item_id": item_id, "voter": v})
