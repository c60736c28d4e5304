"""From a request's messages to canonical events plus ingestion warnings (protocol-independent part).

Rules, in order, for each message of a request:

1. A message larger than the protocol's per-event limit rejects the whole request (400, nothing stored):
   the client must split or shrink it, and silently storing the rest would hide the problem.
2. A timestamp field (``timestamp``, ``originalTimestamp``, ``sentAt``, ``sent_at``) that cannot be parsed is
   dropped: the event is stored at the receive time and an ``invalid_timestamp`` warning is recorded.
3. The message is normalised (:func:`kpilot.collect.normalize.normalize`) with the receive time, which applies
   the clock-skew correction ``timestamp = received_at - (sent_at - timestamp)`` when the client sent a
   ``sentAt``/``sent_at``. A message that cannot become an event (not an object, no user id, a track
   without ``event``...) is dropped with an ``invalid_event`` warning; the request still gets 2xx so that
   clients do not retry it forever.
4. An event more than ``future_tolerance`` ahead of the receive time is clamped to the receive time and a
   ``timestamp_in_future`` warning is recorded (the event is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from kpilot.collect.normalize import Normalized, RowError, normalize
from kpilot.collect.timestamps import parse_timestamp
from kpilot.keys import KeyOwner, WarningRow
from kpilot.server.errors import IngestError

__all__ = ["Prepared", "check_event_sizes", "prepare"]

_TIME_KEYS = ("timestamp", "originalTimestamp", "sentAt", "sent_at")


@dataclass(slots=True)
class Prepared:
    events: list[Normalized] = field(default_factory=list)
    warnings: list[WarningRow] = field(default_factory=list)


def prepare(
    messages: Sequence[Any],
    *,
    source: str,
    owner: KeyOwner,
    received_at: datetime,
    max_event_bytes: int,
    future_tolerance: timedelta,
    defaults: dict[str, Any] | None = None,
    check_sizes: bool = True,
) -> Prepared:
    """Normalise ``messages``; ``defaults`` fill keys a message lacks (batch-level ``sentAt``, ``context``)."""
    if check_sizes:
        check_event_sizes(messages, max_event_bytes)
    out = Prepared()
    latest = received_at + future_tolerance
    checked: dict[str, bool] = {}  # timestamps repeat within a batch (always so for a batch-level sentAt)

    def bad_times(row: dict[str, Any]) -> list[str]:
        bad: list[str] = []
        for key in _TIME_KEYS:
            value = row.get(key)
            if value is None or value == "":
                continue
            if isinstance(value, str):
                ok = checked.get(value)
                if ok is None:
                    ok = checked[value] = _valid_time(value)
            else:
                ok = _valid_time(value)
            if not ok:
                bad.append(key)
        return bad

    def warn(kind: str, reason: str, msg: Any) -> None:
        name = msg.get("event") or msg.get("type") if isinstance(msg, dict) else None
        out.warnings.append(
            WarningRow(
                project_id=owner.project_id,
                key_id=owner.key_id,
                source=source,
                kind=kind,
                reason=reason,
                event=str(name)[:400] if name else None,
                excerpt=_excerpt(msg),
                created_at=received_at,
            )
        )

    for msg in messages:
        if not isinstance(msg, dict):
            warn("invalid_event", f"expected a JSON object, got {_json_type(msg)}", msg)
            continue
        row = msg
        if defaults:
            missing = {k: v for k, v in defaults.items() if k not in row}
            if missing:
                row = {**row, **missing}
        bad = bad_times(row)
        if bad:
            row = {k: v for k, v in row.items() if k not in bad}
            warn("invalid_timestamp", f"unparseable {', '.join(bad)}: stored at the receive time", msg)
        try:
            event = normalize(row, received_at=received_at)
        except (RowError, ValueError, OverflowError, TypeError) as exc:
            warn("invalid_event", f"dropped: {exc}", msg)
            continue
        if event.timestamp > latest:
            warn(
                "timestamp_in_future",
                f"timestamp {event.timestamp.isoformat()} is more than {future_tolerance} after the receive "
                f"time {received_at.isoformat()}: clamped to the receive time",
                msg,
            )
            event.timestamp = received_at
        out.events.append(event)
    return out


def check_event_sizes(messages: Sequence[Any], max_event_bytes: int) -> None:
    """Rule 1: 400 ``event_too_large`` when one message's JSON is larger than ``max_event_bytes``."""
    for i, msg in enumerate(messages):
        size = len(orjson.dumps(msg))
        if size > max_event_bytes:
            raise IngestError(
                400,
                "event_too_large",
                f"message {i} is {size} bytes, more than the limit of {max_event_bytes} bytes",
            )


def _valid_time(value: Any) -> bool:
    if value is None or value == "":
        return True
    try:
        ts = parse_timestamp(value)
    except (ValueError, OverflowError):
        return False
    # Skew correction subtracts two timestamps from the receive time; keep far-off years out of reach of
    # datetime's range (1..9999) so that the arithmetic cannot overflow.
    return 1900 <= ts.year <= 2200


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _excerpt(msg: Any) -> str:
    try:
        text = orjson.dumps(msg, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        text = repr(msg)
    return text if len(text) <= 500 else text[:497] + "..."
