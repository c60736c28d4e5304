"""Normalise one Segment-spec or PostHog-shaped message into a canonical event.

The canonical event is what the store keeps: ``uuid``, ``event``, ``distinct_id``, ``timestamp`` (naive
UTC), ``properties`` (a JSON object), plus the identity side effects the message carries (merges of two
distinct ids, and person properties to set). Segment calls map to PostHog-style event names so that one
vocabulary serves both: page -> ``$pageview``, screen -> ``$screen``, identify -> ``$identify``,
alias -> ``$create_alias``, group -> ``$groupidentify``.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from kpilot.collect.timestamps import parse_timestamp

__all__ = ["Normalized", "RowError", "detect_shape", "normalize"]

SEGMENT_TYPES = {"track", "page", "screen", "identify", "alias", "group"}
SEGMENT_EVENT_NAMES = {
    "page": "$pageview",
    "screen": "$screen",
    "identify": "$identify",
    "alias": "$create_alias",
    "group": "$groupidentify",
}
_CAMPAIGN_KEYS = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}
_MAX_ID = 400


class RowError(ValueError):
    """A message that cannot become an event; the text says why."""


@dataclass(slots=True)
class Normalized:
    uuid: str
    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any]
    merges: list[tuple[str, str]] = field(default_factory=list)
    set_props: dict[str, Any] = field(default_factory=dict)
    set_once_props: dict[str, Any] = field(default_factory=dict)

    def properties_json(self) -> str:
        return orjson.dumps(self.properties, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def detect_shape(row: dict[str, Any]) -> str:
    """``"segment"`` or ``"posthog"``, judged from the keys each spec requires."""
    if "distinct_id" in row or ("uuid" in row and "event" in row and "type" not in row):
        return "posthog"
    if row.get("type") in SEGMENT_TYPES or "userId" in row or "anonymousId" in row or "messageId" in row:
        return "segment"
    if "event" in row:
        return "posthog"
    raise RowError(
        "neither a Segment message (type, userId/anonymousId) nor a PostHog event (event, distinct_id)"
    )


def normalize(row: dict[str, Any], *, received_at: datetime | None = None) -> Normalized:
    """Normalise ``row``; raises :class:`RowError` naming the problem."""
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object, got {type(row).__name__}")
    shape = detect_shape(row)
    return _segment(row, received_at) if shape == "segment" else _posthog(row, received_at)


def _id(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(f"{name} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > _MAX_ID:
        raise RowError(f"{name} is longer than {_MAX_ID} characters")
    return text or None


def _obj(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if value.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise RowError(f"{name} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise RowError(f"{name} must be an object, got {type(value).__name__}")
    return value


def _time(
    row: dict[str, Any], keys: tuple[str, ...], sent_key: str, received_at: datetime | None
) -> datetime:
    for key in keys:
        if row.get(key) not in (None, ""):
            try:
                ts = parse_timestamp(row[key], key)
            except ValueError as exc:
                raise RowError(str(exc)) from exc
            sent = row.get(sent_key)
            if received_at is not None and sent not in (None, ""):
                try:
                    ts = received_at - (parse_timestamp(sent, sent_key) - ts)
                except ValueError as exc:
                    raise RowError(str(exc)) from exc
            return ts
    if received_at is not None:
        return received_at
    raise RowError(f"{keys[0]} is missing")


def _stable_uuid(*parts: object) -> str:
    digest = hashlib.sha1(orjson.dumps(parts, default=str, option=orjson.OPT_SORT_KEYS)).digest()
    return str(uuidlib.UUID(bytes=digest[:16], version=5))


def _segment(row: dict[str, Any], received_at: datetime | None) -> Normalized:
    kind = row.get("type") or ("track" if "event" in row else None)
    if kind not in SEGMENT_TYPES:
        raise RowError(f"type {kind!r} is not one of {', '.join(sorted(SEGMENT_TYPES))}")
    user_id = _id(row.get("userId"), "userId")
    anon_id = _id(row.get("anonymousId"), "anonymousId")
    distinct = user_id or anon_id
    if distinct is None:
        raise RowError("message has neither userId nor anonymousId")
    context = _obj(row.get("context"), "context")
    props = dict(_obj(row.get("properties"), "properties"))
    merges: list[tuple[str, str]] = []
    set_props: dict[str, Any] = {}
    if kind == "track":
        name = row.get("event")
        if not isinstance(name, str) or not name.strip():
            raise RowError("track message has no event name")
        event = name.strip()
    else:
        event = SEGMENT_EVENT_NAMES[kind]
        if kind in ("page", "screen") and row.get("name"):
            props.setdefault("name", row["name"])
    if kind == "identify":
        set_props.update(_obj(context.get("traits"), "context.traits"))
        set_props.update(_obj(row.get("traits"), "traits"))
    if kind == "alias":
        previous = _id(row.get("previousId"), "previousId")
        if previous is None or user_id is None:
            raise RowError("alias message needs both previousId and userId")
        merges.append((previous, user_id))
    if kind == "group" and row.get("groupId") is not None:
        props.setdefault("$group_id", str(row["groupId"]))
        props.setdefault("$group_set", _obj(row.get("traits"), "traits"))
    if user_id and anon_id and user_id != anon_id:
        merges.append((anon_id, user_id))
    _flatten_context(context, props)
    ts = _time(row, ("timestamp", "originalTimestamp"), "sentAt", received_at)
    message_id = _id(row.get("messageId"), "messageId") or _stable_uuid(event, distinct, ts, props)
    return Normalized(message_id, event[:400], distinct, ts, props, merges, set_props)


def _flatten_context(context: dict[str, Any], props: dict[str, Any]) -> None:
    page = context.get("page")
    if isinstance(page, dict):
        if page.get("url"):
            props.setdefault("$current_url", page["url"])
        if page.get("referrer"):
            props.setdefault("$referrer", page["referrer"])
        if page.get("path"):
            props.setdefault("$pathname", page["path"])
    campaign = context.get("campaign")
    if isinstance(campaign, dict):
        for key, target in _CAMPAIGN_KEYS.items():
            if campaign.get(key):
                props.setdefault(target, campaign[key])
    library = context.get("library")
    if isinstance(library, dict) and library.get("name"):
        props.setdefault("$lib", library["name"])
    os_info = context.get("os")
    if isinstance(os_info, dict) and os_info.get("name"):
        props.setdefault("$os", os_info["name"])


def _posthog(row: dict[str, Any], received_at: datetime | None) -> Normalized:
    name = row.get("event")
    if not isinstance(name, str) or not name.strip():
        raise RowError("event name is missing")
    event = name.strip()
    props = dict(_obj(row.get("properties"), "properties"))
    distinct = _id(row.get("distinct_id", props.get("distinct_id")), "distinct_id")
    if distinct is None:
        raise RowError("distinct_id is missing")
    set_props = dict(_obj(props.pop("$set", None), "properties.$set"))
    set_props.update(_obj(row.get("$set"), "$set"))
    set_once = dict(_obj(props.pop("$set_once", None), "properties.$set_once"))
    set_once.update(_obj(row.get("$set_once"), "$set_once"))
    merges: list[tuple[str, str]] = []
    if event == "$identify":
        anon = _id(props.get("$anon_distinct_id"), "properties.$anon_distinct_id")
        if anon and anon != distinct:
            merges.append((anon, distinct))
    elif event in ("$create_alias", "$merge_dangerously"):
        alias = _id(props.get("alias"), "properties.alias")
        if alias is None:
            raise RowError(f"{event} needs properties.alias")
        if alias != distinct:
            merges.append((alias, distinct))
    sent_key = "sent_at" if not props.get("$ignore_sent_at") else "\x00none"
    ts = _time(row, ("timestamp",), sent_key, received_at)
    uid = _id(row.get("uuid"), "uuid") or _stable_uuid(event, distinct, ts, props)
    return Normalized(uid, event[:400], distinct, ts, props, merges, set_props, set_once)
