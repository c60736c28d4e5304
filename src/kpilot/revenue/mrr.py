"""MRR: each subscription state priced as a monthly amount, and each customer's MRR over time, in SQL.

Semantics (docs/revenue.md has the worked examples):

* A subscriptions row is the subscription's state over ``[start_date, end_date)`` (dates in the project's
  calendar; ``end_date`` empty = still running). It counts on every day of that range.
* Monthly normalisation: ``amount x quantity x factor / interval_count`` with factor year 1/12, quarter 1/3,
  month 1, week 52/12, day 365/12. Tax-inclusive amounts are divided by ``1 + tax_percent / 100`` (taxes are
  never MRR); tax-exclusive amounts are used as they are.
* Discounts: ``discount_percent`` then ``discount_amount`` (an amount off each invoice, normalised like the
  price) are deducted, never below 0. A discount with ``discount_end`` applies before that day only
  (the MRR rises when it expires: expansion). Setting ``discounts``: ``all`` (default), ``forever_only``, ``none``.
  A ``once`` discount touches a single invoice and is never deducted.
* Trials and free plans are 0: before ``trial_end`` (or for the whole state when the status is ``trialing``
  without a trial end), and states whose status is ``incomplete`` or ``paused``.
* Past due: counts until the subscription ends; with ``past_due_grace_days`` = N, a past-due or unpaid state
  stops counting N days after ``past_due_since``.
* Churn timing: at ``end_date`` (default) or, with ``churn_recognition = cancellation``, at ``canceled_at``.
* Currency: converted to the reporting currency at the rate in force on the state's ``start_date`` (the last
  ``fx_rates`` row on or before it; an inverse row is used when only that exists). The rate stays fixed for
  the state, so exchange-rate moves never show up as MRR movements.
* Each priced piece is rounded to 4 decimals (``DECIMAL(18, 4)``); all sums after that are exact, so the
  movements reconcile to the cent and beyond.

A customer's MRR on a day is the sum of their pieces covering it. The timeline has one row per day on which a
customer's MRR changes, with the MRR after the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from kpilot.compute.dialect import lit
from kpilot.errors import KpilotError
from kpilot.revenue.settings import RevenueSettings

__all__ = ["FACTORS", "CustomerScope", "check_rates", "pieces_sql", "timeline_sql"]

FACTORS: dict[str, tuple[int, int]] = {
    "day": (365, 12),
    "week": (52, 12),
    "month": (1, 1),
    "quarter": (1, 3),
    "year": (1, 12),
}
"""Per billing interval, ``(numerator, denominator)`` of the factor to a month."""


@dataclass(frozen=True, slots=True)
class CustomerScope:
    """Which customers count (``where``, over ``c.*`` customer columns and ``p.person_id``) and their
    breakdown value (``bd``). The default is every customer, one group ``''``."""

    where: str = "TRUE"
    bd: str = "''"
    ctes: str = ""
    joins: str = ""


def _factor_sql(col: str) -> str:
    cases = " ".join(f"WHEN {lit(k)} THEN {n}.0 / {d}.0" for k, (n, d) in FACTORS.items())
    return f"(CASE {col} {cases} END)"


def _subs_sql(project_id: int, s: RevenueSettings) -> str:
    """Subscription states with their effective end (churn timing, grace period, cancellation)."""
    ends = ["end_date"]
    if s.churn_recognition == "cancellation":
        ends.append("canceled_at")
    if s.past_due_grace_days is not None:
        ends.append(
            f"CASE WHEN status IN ('past_due', 'unpaid') AND past_due_since IS NOT NULL "
            f"THEN past_due_since + {int(s.past_due_grace_days)} END"
        )
    # a canceled state without an end ended when it was canceled (or never really started)
    ends.append(
        "CASE WHEN status = 'canceled' AND end_date IS NULL THEN coalesce(canceled_at, start_date) END"
    )
    eff_end = "least(" + ", ".join(ends) + ")" if len(ends) > 1 else ends[0]
    return (
        f"SELECT row_number() OVER (ORDER BY subscription_id, start_date) AS rid, *, {eff_end} AS eff_end "
        f"FROM subscriptions WHERE project_id = {project_id}"
    )


def _fx_sql(project_id: int, currency: str) -> str:
    """Rate per state (``rid``, ``fx``): the latest rate on or before its start date; NULL when none."""
    cur = lit(currency)
    rates = (
        f"SELECT day, currency, rate FROM fx_rates WHERE project_id = {project_id} AND quote = {cur} "
        f"UNION ALL SELECT day, quote AS currency, 1.0 / rate FROM fx_rates "
        f"WHERE project_id = {project_id} AND currency = {cur}"
    )
    return (
        f"SELECT rid, CAST(rate AS DOUBLE) AS fx FROM (\n"
        f"  SELECT s.rid, r.rate, row_number() OVER (PARTITION BY s.rid ORDER BY r.day DESC) AS rn\n"
        f"  FROM subs s JOIN ({rates}) r ON r.currency = s.currency AND r.day <= s.start_date\n"
        f"  WHERE s.currency <> {cur}) x WHERE rn = 1"
    )


def pieces_sql(project_id: int, s: RevenueSettings) -> str:
    """CTEs ``subs``, ``fx``, ``cuts``, ``pieces``: ``(rid, customer_id, currency, start_date, piece_start,
    piece_end, mrr DECIMAL(18,4))`` with ``piece_end`` NULL while running. ``fx`` is NULL when a rate is
    missing (see :func:`check_rates`)."""
    inside = "(s.eff_end IS NULL OR {col} < s.eff_end) AND {col} > s.start_date"
    discount_on = {
        "all": "(s.discount_duration <> 'once' AND (s.discount_end IS NULL OR c.piece_start < s.discount_end))",
        "forever_only": "(s.discount_duration = 'forever' AND s.discount_end IS NULL)",
        "none": "FALSE",
    }[s.discounts]
    factor = _factor_sql("s.billing_interval")
    gross = (
        "CAST(s.amount AS DOUBLE) * CAST(s.quantity AS DOUBLE) * "
        f"{factor} / s.interval_count / (CASE WHEN s.tax_inclusive THEN 1 + coalesce(CAST(s.tax_percent AS DOUBLE), 0) / 100 ELSE 1 END)"
    )
    amount_off = f"coalesce(CAST(s.discount_amount AS DOUBLE), 0) * {factor} / s.interval_count"
    net = (
        f"CASE WHEN {discount_on} THEN greatest(({gross}) * (1 - coalesce(CAST(s.discount_percent AS DOUBLE), 0) / 100) "
        f"- {amount_off}, 0) ELSE {gross} END"
    )
    zero = (
        "s.status IN ('incomplete', 'paused') "
        "OR (s.trial_end IS NOT NULL AND c.piece_start < s.trial_end) "
        "OR (s.status = 'trialing' AND s.trial_end IS NULL)"
    )
    fx = "(CASE WHEN s.currency = " + lit(s.currency) + " THEN 1.0 ELSE f.fx END)"
    return (
        f"subs AS ({_subs_sql(project_id, s)}),\n"
        f"fx AS ({_fx_sql(project_id, s.currency)}),\n"
        f"cuts AS (\n"
        f"  SELECT rid, start_date AS d FROM subs WHERE eff_end IS NULL OR eff_end > start_date\n"
        f"  UNION SELECT s.rid, s.trial_end FROM subs s WHERE {inside.format(col='s.trial_end')}\n"
        f"  UNION SELECT s.rid, s.discount_end FROM subs s WHERE {inside.format(col='s.discount_end')}),\n"
        f"cut_pieces AS (\n"
        f"  SELECT c.rid, c.d AS piece_start, coalesce(lead(c.d) OVER (PARTITION BY c.rid ORDER BY c.d), s.eff_end) AS piece_end\n"
        f"  FROM cuts c JOIN subs s ON s.rid = c.rid),\n"
        f"pieces AS (\n"
        f"  SELECT s.rid, s.customer_id, s.currency, s.start_date, c.piece_start, c.piece_end,\n"
        f"         CAST(round(CASE WHEN {zero} THEN 0 ELSE ({net}) * {fx} END, 4) AS DECIMAL(18, 4)) AS mrr\n"
        f"  FROM cut_pieces c JOIN subs s ON s.rid = c.rid LEFT JOIN fx f ON f.rid = s.rid)"
    )


def check_rates(engine: Any, project_id: int, s: RevenueSettings) -> None:
    """Raise when a subscription's currency has no rate to the reporting currency at its start date."""
    sql = (
        f"WITH {pieces_sql(project_id, s)}\n"
        f"SELECT s.currency, min(s.start_date) FROM subs s LEFT JOIN fx f ON f.rid = s.rid "
        f"WHERE s.currency <> {lit(s.currency)} AND f.fx IS NULL GROUP BY 1 ORDER BY 1 LIMIT 1"
    )
    rows = engine.fetchall(sql)
    if rows:
        currency, day = rows[0]
        raise KpilotError(
            f"no exchange rate from {currency} to {s.currency} on or before {day}: "
            f"import one with `kpilot import fx-rates FILE` (columns date, currency, quote, rate)"
        )


def timeline_sql(project_id: int, s: RevenueSettings, scope: CustomerScope) -> str:
    """CTEs up to ``timeline(bd, customer_id, day, mrr_before, mrr_after, next_day, paid_before)``: one row
    per customer and day on which their MRR changes; ``paid_before`` = 1 when they paid at any earlier time."""
    return (
        f"{pieces_sql(project_id, s)},\n"
        f"{scope.ctes}"
        f"cust AS (\n"
        f"  SELECT k.customer_id, {scope.bd} AS bd FROM (SELECT DISTINCT customer_id FROM subs) k\n"
        f"  LEFT JOIN customers c ON c.project_id = {project_id} AND c.customer_id = k.customer_id\n"
        f"  LEFT JOIN person_distinct_ids p ON p.project_id = {project_id} AND p.distinct_id = c.distinct_id\n"
        f"  {scope.joins}\n"
        f"  WHERE {scope.where}),\n"
        f"deltas AS (\n"
        f"  SELECT customer_id, piece_start AS day, mrr AS delta FROM pieces WHERE mrr <> 0\n"
        f"  UNION ALL SELECT customer_id, piece_end, -mrr FROM pieces WHERE mrr <> 0 AND piece_end IS NOT NULL),\n"
        f"changes AS (SELECT customer_id, day, sum(delta) AS delta FROM deltas GROUP BY customer_id, day),\n"
        f"running AS (\n"
        f"  SELECT customer_id, day, sum(delta) OVER (PARTITION BY customer_id ORDER BY day ROWS UNBOUNDED PRECEDING) AS mrr_after\n"
        f"  FROM changes),\n"
        f"steps AS (\n"
        f"  SELECT customer_id, day, mrr_after,\n"
        f"         coalesce(lag(mrr_after) OVER (PARTITION BY customer_id ORDER BY day), 0) AS mrr_before\n"
        f"  FROM running),\n"
        f"timeline AS (\n"
        f"  SELECT k.bd, t.customer_id, t.day, t.mrr_before, t.mrr_after,\n"
        f"         lead(t.day) OVER (PARTITION BY t.customer_id ORDER BY t.day) AS next_day,\n"
        f"         coalesce(max(CASE WHEN t.mrr_before > 0 THEN 1 ELSE 0 END) OVER (PARTITION BY t.customer_id ORDER BY t.day\n"
        f"                  ROWS UNBOUNDED PRECEDING), 0) AS paid_before\n"
        f"  FROM steps t JOIN cust k ON k.customer_id = t.customer_id WHERE t.mrr_after <> t.mrr_before)"
    )


def as_of_sql(marks: list[date]) -> str:
    """A VALUES list ``marks(i, x)`` of the days on which states are taken."""
    return ", ".join(f"({i}, {lit(d)})" for i, d in enumerate(marks))
