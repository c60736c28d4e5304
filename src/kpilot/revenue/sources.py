"""Row parsers of the billing and acquisition sources: customers, subscriptions, invoices, fx rates, spend.

Each accepts kpilot's own columns (docs/data-sources.md) and, for subscriptions and invoices, the columns of
Stripe's dashboard CSV exports (recognised by Stripe's column names, e.g. ``Customer ID`` or ``Customer``).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from kpilot.revenue.fields import (
    FieldError,
    opt_bool,
    opt_date,
    opt_decimal,
    opt_int,
    opt_str,
    opt_ts,
    req_date,
    req_decimal,
    req_str,
    req_ts,
)
from kpilot.revenue.importing import Source, TableRows, register_source

__all__ = [
    "BILLING_INTERVALS",
    "INVOICE_STATUSES",
    "SUBSCRIPTION_STATUSES",
    "parse_customer",
    "parse_fx_rate",
    "parse_invoice",
    "parse_spend",
    "parse_subscription",
]

BILLING_INTERVALS = ("day", "week", "month", "quarter", "year")
SUBSCRIPTION_STATUSES = ("trialing", "active", "past_due", "unpaid", "canceled", "paused", "incomplete")
INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
_INTERVAL_ALIASES = {
    "daily": "day",
    "weekly": "week",
    "monthly": "month",
    "quarterly": "quarter",
    "annual": "year",
    "annually": "year",
    "yearly": "year",
}
_STATUS_ALIASES = {
    "cancelled": "canceled",
    "trial": "trialing",
    "pastdue": "past_due",
    "past due": "past_due",
}


def _currency(row: dict[str, Any], *names: str) -> str:
    value = opt_str(row, *names) or "USD"
    if not (len(value) == 3 and value.isalpha()):
        raise FieldError(f"currency {value!r} is not a 3-letter ISO 4217 code")
    return value.upper()


def _customer_link(row: dict[str, Any], customer_id: str, stripe: bool) -> list[dict[str, Any]]:
    """A customers row from the customer columns that ride along on a subscription or invoice row."""
    link = {
        "customer_id": customer_id,
        "distinct_id": opt_str(row, "distinct_id", "customer_distinct_id", "kpilot_distinct_id (metadata)"),
        "email": opt_str(row, "Customer Email", "customer_email", "email")
        if stripe
        else opt_str(row, "customer_email", "email"),
        "name": opt_str(row, "Customer Name", "customer_name") if stripe else opt_str(row, "customer_name"),
        "channel": opt_str(row, "channel", "acquisition_channel"),
        "country": opt_str(row, "country", "customer_country"),
        "created_at": None,
    }
    return [link]


# ---- customers ------------------------------------------------------------------------------------------
def parse_customer(row: dict[str, Any]) -> TableRows:
    return {
        "customers": [
            {
                "customer_id": req_str(row, "customer_id", "id", "Customer ID"),
                "distinct_id": opt_str(row, "distinct_id"),
                "email": opt_str(row, "email", "Email"),
                "name": opt_str(row, "name", "Name"),
                "channel": opt_str(row, "channel", "acquisition_channel", "utm_source"),
                "country": opt_str(row, "country"),
                "created_at": opt_ts(row, "created_at", "Created (UTC)"),
            }
        ]
    }


# ---- subscriptions -------------------------------------------------------------------------------------
def _interval(value: str | None) -> str:
    text = (value or "month").strip().lower()
    text = _INTERVAL_ALIASES.get(text, text)
    if text not in BILLING_INTERVALS:
        raise FieldError(f"billing interval {value!r} is not one of {', '.join(BILLING_INTERVALS)}")
    return text


def _status(value: str | None, default: str = "active") -> str:
    text = (value or default).strip().lower()
    text = _STATUS_ALIASES.get(text, text)
    if text in ("incomplete_expired",):
        text = "canceled"
    if text not in SUBSCRIPTION_STATUSES:
        raise FieldError(f"status {value!r} is not one of {', '.join(SUBSCRIPTION_STATUSES)}")
    return text


def _non_negative(name: str, value: Decimal | None) -> None:
    if value is not None and value < 0:
        raise FieldError(f"column {name!r} is negative ({value})")


def parse_subscription(row: dict[str, Any]) -> TableRows:
    stripe = "Customer ID" in row or "Current Period Start (UTC)" in row
    sub = _stripe_subscription(row) if stripe else _kpilot_subscription(row)
    if sub["end_date"] is not None and sub["end_date"] < sub["start_date"]:
        raise FieldError(f"end_date {sub['end_date']} is before start_date {sub['start_date']}")
    for col in ("amount", "quantity", "discount_amount"):
        _non_negative(col, sub[col])
    pct = sub["discount_percent"]
    if pct is not None and not (0 <= pct <= 100):
        raise FieldError(f"discount_percent {pct} is not between 0 and 100")
    if sub["interval_count"] < 1:
        raise FieldError(f"interval_count {sub['interval_count']} must be at least 1")
    return {"subscriptions": [sub], "customers": _customer_link(row, sub["customer_id"], stripe)}


def _kpilot_subscription(row: dict[str, Any]) -> dict[str, Any]:
    monthly = opt_decimal(row, "monthly_amount", "mrr")
    amount = monthly if monthly is not None else req_decimal(row, "amount", "price", "unit_amount")
    interval = "month" if monthly is not None else _interval(opt_str(row, "interval", "billing_interval"))
    discount_end = opt_date(row, "discount_end")
    duration = opt_str(row, "discount_duration") or ("repeating" if discount_end else "forever")
    if duration not in ("forever", "repeating", "once"):
        raise FieldError(f"discount_duration {duration!r} is not one of forever, repeating, once")
    return {
        "subscription_id": req_str(row, "subscription_id", "id"),
        "customer_id": req_str(row, "customer_id", "customer"),
        "start_date": req_date(row, "start_date", "start", "valid_from"),
        "end_date": opt_date(row, "end_date", "ended_at", "valid_to"),
        "plan": opt_str(row, "plan", "plan_name", "product"),
        "amount": amount,
        "currency": _currency(row, "currency"),
        "billing_interval": interval,
        "interval_count": 1 if monthly is not None else (opt_int(row, "interval_count") or 1),
        "quantity": opt_decimal(row, "quantity", "seats") or Decimal(1),
        "discount_percent": opt_decimal(row, "discount_percent", "percent_off"),
        "discount_amount": opt_decimal(row, "discount_amount", "amount_off"),
        "discount_end": discount_end,
        "discount_duration": duration,
        "trial_end": opt_date(row, "trial_end"),
        "status": _status(opt_str(row, "status")),
        "canceled_at": opt_date(row, "canceled_at", "cancelled_at"),
        "past_due_since": opt_date(row, "past_due_since"),
        "tax_percent": opt_decimal(row, "tax_percent"),
        "tax_inclusive": bool(opt_bool(row, "tax_inclusive")),
        "source": "kpilot",
    }


def _stripe_subscription(row: dict[str, Any]) -> dict[str, Any]:
    status = _status(opt_str(row, "Status"))
    start = req_date(row, "Start Date (UTC)", "Start (UTC)", "Created (UTC)")
    end: date | None = opt_date(row, "Ended At (UTC)")
    canceled = opt_date(row, "Canceled At (UTC)")
    if end is None and status == "canceled":
        # a canceled subscription without "Ended At" ended at cancellation (or at its period end).
        end = opt_date(row, "Current Period End (UTC)") if opt_bool(row, "Cancel At Period End") else canceled
    if end is None and opt_bool(row, "Cancel At Period End"):
        end = opt_date(row, "Current Period End (UTC)")
    return {
        "subscription_id": req_str(row, "id", "Subscription ID"),
        "customer_id": req_str(row, "Customer ID"),
        "start_date": start,
        "end_date": end,
        "plan": opt_str(row, "Plan", "Product", "Price ID"),
        "amount": req_decimal(row, "Amount", "Plan Amount"),
        "currency": _currency(row, "Currency"),
        "billing_interval": _interval(opt_str(row, "Interval")),
        "interval_count": opt_int(row, "Interval Count") or 1,
        "quantity": opt_decimal(row, "Quantity") or Decimal(1),
        "discount_percent": opt_decimal(row, "Percent Off", "Coupon Percent Off"),
        "discount_amount": opt_decimal(row, "Amount Off", "Coupon Amount Off"),
        "discount_end": opt_date(row, "Discount End (UTC)"),
        "discount_duration": "repeating" if opt_date(row, "Discount End (UTC)") else "forever",
        "trial_end": opt_date(row, "Trial End (UTC)"),
        "status": status,
        "canceled_at": canceled,
        "past_due_since": opt_date(row, "Current Period Start (UTC)")
        if status in ("past_due", "unpaid")
        else None,
        "tax_percent": opt_decimal(row, "Tax Percent"),
        "tax_inclusive": False,
        "source": "stripe",
    }


# ---- invoices ------------------------------------------------------------------------------------------
def parse_invoice(row: dict[str, Any]) -> TableRows:
    stripe = "Customer" in row or "Amount Paid" in row or "Date (UTC)" in row
    if stripe:
        tax = opt_decimal(row, "Tax") or Decimal(0)
        total = opt_decimal(row, "Total", "Amount Due", "Amount Paid")
        subtotal = opt_decimal(row, "Subtotal")
        discount = opt_decimal(row, "Discount", "Total Discount Amount") or Decimal(0)
        if total is not None:
            amount = total - tax
        elif subtotal is not None:
            amount = subtotal - discount
        else:
            raise FieldError("column 'Total' or 'Subtotal' is missing or empty")
        status = (opt_str(row, "Status") or ("paid" if opt_bool(row, "Paid") else "open")).lower()
        sub_id = opt_str(row, "Subscription")
        inv = {
            "invoice_id": req_str(row, "id", "Number"),
            "customer_id": req_str(row, "Customer", "Customer ID"),
            "subscription_id": sub_id,
            "issued_at": req_ts(row, "Date (UTC)", "Created (UTC)"),
            "paid_at": opt_ts(row, "Paid At (UTC)"),
            "amount": amount,
            "tax": tax,
            "discount": discount,
            "currency": _currency(row, "Currency"),
            "status": status,
            "kind": "subscription" if sub_id else "one_time",
        }
    else:
        tax = opt_decimal(row, "tax") or Decimal(0)
        amount_col = opt_decimal(row, "amount", "subtotal")
        total = opt_decimal(row, "total")
        if amount_col is None and total is None:
            raise FieldError("column 'amount' (or 'total') is missing or empty")
        amount = amount_col if amount_col is not None else total - tax  # type: ignore[operator]
        sub_id = opt_str(row, "subscription_id")
        inv = {
            "invoice_id": req_str(row, "invoice_id", "id"),
            "customer_id": req_str(row, "customer_id", "customer"),
            "subscription_id": sub_id,
            "issued_at": req_ts(row, "issued_at", "date", "created_at", "timestamp"),
            "paid_at": opt_ts(row, "paid_at"),
            "amount": amount,
            "tax": tax,
            "discount": opt_decimal(row, "discount") or Decimal(0),
            "currency": _currency(row, "currency"),
            "status": (opt_str(row, "status") or "paid").lower(),
            "kind": (opt_str(row, "kind", "type") or ("subscription" if sub_id else "one_time")).lower(),
        }
    if inv["status"] not in INVOICE_STATUSES:
        raise FieldError(f"status {inv['status']!r} is not one of {', '.join(INVOICE_STATUSES)}")
    if inv["kind"] not in ("subscription", "one_time"):
        raise FieldError(f"kind {inv['kind']!r} is not one of subscription, one_time")
    return {"invoices": [inv], "customers": _customer_link(row, str(inv["customer_id"]), stripe)}


# ---- fx rates and spend ---------------------------------------------------------------------------------
def parse_fx_rate(row: dict[str, Any]) -> TableRows:
    rate = req_decimal(row, "rate")
    if rate <= 0:
        raise FieldError(f"rate {rate} must be positive")
    return {
        "fx_rates": [
            {
                "day": req_date(row, "date", "day"),
                "currency": _currency(row, "currency", "from"),
                "quote": _currency(row, "quote", "to", "reporting_currency"),
                "rate": rate,
            }
        ]
    }


def parse_spend(row: dict[str, Any]) -> TableRows:
    amount = req_decimal(row, "amount", "spend", "cost")
    _non_negative("amount", amount)
    category = (opt_str(row, "category") or "marketing").lower()
    if category not in ("marketing", "sales"):
        raise FieldError(f"category {category!r} is not one of marketing, sales")
    return {
        "spend": [
            {
                "day": req_date(row, "date", "day"),
                "channel": req_str(row, "channel", "utm_source", "source"),
                "campaign": opt_str(row, "campaign", "utm_campaign") or "",
                "category": category,
                "amount": amount,
                "currency": _currency(row, "currency"),
            }
        ]
    }


register_source(Source("customers", "customers", parse_customer, "customer id <-> person link and channel"))
register_source(Source("subscriptions", "subscriptions", parse_subscription, "subscription states (MRR)"))
register_source(Source("invoices", "invoices", parse_invoice, "invoices and one-time charges"))
register_source(Source("fx-rates", "fx_rates", parse_fx_rate, "currency conversion rates"))
register_source(Source("spend", "spend", parse_spend, "sales and marketing spend per channel and day"))
