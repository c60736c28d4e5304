"""Row parsers of the customer-voice sources: survey responses, support tickets, feedback items.

The person behind a row is named by ``customer_id`` (a billing customer, linked to a person through the
customers table) and/or ``distinct_id`` (the id the product tracks them under). Columns are documented in
docs/data-sources.md.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kpilot.revenue.fields import FieldError, opt_bool, opt_int, opt_str, opt_ts, req_str, req_ts, str_list
from kpilot.revenue.importing import Source, TableRows, register_source
from kpilot.voice.sentiment import score

__all__ = ["FEEDBACK_KINDS", "REQUEST_STATUSES", "SCALES", "parse_feedback", "parse_survey", "parse_ticket"]

SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
"""Allowed score range per survey metric."""

REQUEST_STATUSES = ("new", "planned", "in_progress", "shipped", "declined")
FEEDBACK_KINDS = ("feedback", "feature_request")
_STATUS_ALIASES = {
    "in progress": "in_progress",
    "in-progress": "in_progress",
    "open": "new",
    "done": "shipped",
    "complete": "shipped",
    "completed": "shipped",
    "closed": "declined",
    "rejected": "declined",
    "under review": "new",
    "under_review": "new",
}


def _person(row: dict[str, Any]) -> tuple[str | None, str | None]:
    customer = opt_str(row, "customer_id", "customer")
    distinct = opt_str(row, "distinct_id", "respondent", "user_id", "author", "requester")
    return customer, distinct


def parse_survey(row: dict[str, Any]) -> TableRows:
    survey = req_str(row, "survey", "survey_name")
    metric = (opt_str(row, "metric", "type", "question_type") or "").lower()
    if not metric:
        lowered = survey.lower()
        metric = next((m for m in SCALES if m in lowered), "")
    if metric not in SCALES:
        raise FieldError(f"metric {metric or None!r} is not one of nps, csat, ces (column 'metric')")
    score_value = opt_int(row, "score", "rating", "value")
    if score_value is None:
        raise FieldError("column 'score' is missing or empty")
    lo, hi = SCALES[metric]
    if not lo <= score_value <= hi:
        raise FieldError(f"{metric} score {score_value} is outside {lo}-{hi}")
    customer, distinct = _person(row)
    at = req_ts(row, "responded_at", "timestamp", "created_at", "date")
    response_id = opt_str(row, "response_id", "id")
    if response_id is None:
        # no id: the same person answering the same survey at the same instant is the same response
        basis = f"{survey}|{customer}|{distinct}|{at.isoformat()}"
        response_id = "h:" + hashlib.sha1(basis.encode()).hexdigest()[:20]
    return {
        "survey_responses": [
            {
                "response_id": response_id,
                "survey": survey,
                "metric": metric,
                "score": score_value,
                "customer_id": customer,
                "distinct_id": distinct,
                "responded_at": at,
                "comment": opt_str(row, "comment", "feedback", "text"),
            }
        ]
    }


def parse_ticket(row: dict[str, Any]) -> TableRows:
    created = req_ts(row, "created_at", "created", "opened_at")
    first = opt_ts(row, "first_response_at", "first_reply_at")
    resolved = opt_ts(row, "resolved_at", "solved_at", "closed_at")
    if first is not None and first < created:
        raise FieldError(f"first_response_at {first} is before created_at {created}")
    if resolved is not None and resolved < created:
        raise FieldError(f"resolved_at {resolved} is before created_at {created}")
    level = opt_int(row, "escalation_level", "tier")
    flag = opt_bool(row, "escalated")
    if level is None:
        level = 1 if flag else 0
    if level < 0:
        raise FieldError(f"escalation_level {level} is negative")
    customer, distinct = _person(row)
    return {
        "tickets": [
            {
                "ticket_id": req_str(row, "ticket_id", "id"),
                "customer_id": customer,
                "distinct_id": distinct,
                "created_at": created,
                "first_response_at": first,
                "resolved_at": resolved,
                "escalation_level": level,
                "channel": opt_str(row, "channel", "via"),
                "priority": opt_str(row, "priority"),
                "status": opt_str(row, "status"),
            }
        ]
    }


def request_status(value: str | None) -> str:
    text = (value or "new").strip().lower()
    text = _STATUS_ALIASES.get(text, text)
    if text not in REQUEST_STATUSES:
        raise FieldError(f"status {value!r} is not one of {', '.join(REQUEST_STATUSES)}")
    return text


def parse_feedback(row: dict[str, Any]) -> TableRows:
    item_id = req_str(row, "item_id", "id")
    title = opt_str(row, "title")
    text = opt_str(row, "text", "body", "details", "description") or title
    if text is None:
        raise FieldError("column 'text' (or 'title') is missing or empty")
    kind = (opt_str(row, "kind", "type") or "feedback").lower().replace(" ", "_").replace("-", "_")
    if kind not in FEEDBACK_KINDS:
        raise FieldError(f"kind {kind!r} is not one of {', '.join(FEEDBACK_KINDS)}")
    votes = opt_int(row, "votes", "vote_count", "upvotes")
    if votes is not None and votes < 0:
        raise FieldError(f"votes {votes} is negative")
    voters = str_list(row, "voters")
    customer, distinct = _person(row)
    requester = customer or distinct
    compound, label = score(" ".join(p for p in (title, text if text != title else None) if p))
    item = {
        "item_id": item_id,
        "kind": kind,
        "title": title,
        "text": text,
        "customer_id": customer,
        "distinct_id": distinct,
        "source": opt_str(row, "source", "channel"),
        "created_at": req_ts(row, "created_at", "timestamp", "date"),
        "votes": votes if votes is not None else len(set(voters) | ({requester} if requester else set())),
        "status": request_status(opt_str(row, "status")),
        "tags": ";".join(str_list(row, "tags")) or None,
        "sentiment": compound,
        "sentiment_label": label,
    }
    requesters = sorted(set(voters) | ({requester} if requester else set()))
    return {
        "feedback_items": [item],
        "feedback_voters": [{"item_id": item_id, "voter": v} for v in requesters],
    }


register_source(Source("surveys", "survey_responses", parse_survey, "NPS, CSAT and CES survey responses"))
register_source(Source("tickets", "tickets", parse_ticket, "support tickets"))
register_source(Source("feedback", "feedback_items", parse_feedback, "feedback items and feature requests"))
