"""Naive plain-Python reference of ``kpilot audit``'s per-(UTC day, event) counts and schema drift."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

IDENTIFY = {"$identify", "$create_alias", "$merge_dangerously"}


@dataclass
class AuditEvent:
    event: str
    distinct_id: str
    timestamp: datetime
    properties: dict[str, Any]
    received_at: datetime
    merge_with: str | None = None
    """For ``$identify``: the anonymous id it merges into this one."""


@dataclass
class Expected:
    counts: dict[tuple[date, str], tuple[int, int, int, int]] = field(default_factory=dict)
    """(day, event) -> (volume, anonymous, future, past)."""
    drift: set[tuple[date, str, str, str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=set)
    """(day, event, key, change, types before, types after)."""


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def audit(
    events: list[AuditEvent],
    now: datetime,
    future: timedelta,
    past: timedelta,
    first: date | None = None,
    last: date | None = None,
) -> Expected:
    # persons: connected components of distinct ids over the merges
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for e in events:
        find(e.distinct_id)
        if e.merge_with is not None and e.merge_with != e.distinct_id:
            parent[find(e.merge_with)] = find(e.distinct_id)
    members: dict[str, set[str]] = defaultdict(set)
    for d in list(parent):
        members[find(d)].add(d)
    identified = {root for root, ids in members.items() if len(ids) > 1}
    identified |= {find(e.distinct_id) for e in events if e.event in IDENTIFY}

    def in_range(day: date) -> bool:
        return (first is None or day >= first) and (last is None or day <= last)

    out = Expected()
    acc: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for e in events:
        day = e.timestamp.date()
        if not in_range(day):
            continue
        c = acc[(day, e.event)]
        c[0] += 1
        c[1] += find(e.distinct_id) not in identified
        c[2] += e.timestamp > e.received_at + future or e.timestamp > now
        c[3] += e.timestamp < e.received_at - past
    out.counts = {k: (v[0], v[1], v[2], v[3]) for k, v in acc.items()}

    # drift: key -> set of non-null JSON types, per (event, day)
    schema: dict[str, dict[date, dict[str, set[str]]]] = defaultdict(lambda: defaultdict(dict))
    for e in events:
        day_keys = schema[e.event][e.timestamp.date()]
        for key, value in e.properties.items():
            types = day_keys.setdefault(key, set())
            if value is not None:
                types.add(json_type(value))
    for event, by_day in schema.items():
        days = sorted(by_day)
        for prev, day in itertools.pairwise(days):
            if not in_range(day):
                continue
            before, after = by_day[prev], by_day[day]
            for key in after.keys() - before.keys():
                out.drift.add((day, event, key, "appeared", (), tuple(sorted(after[key]))))
            for key in before.keys() - after.keys():
                out.drift.add((day, event, key, "disappeared", tuple(sorted(before[key])), ()))
            for key in before.keys() & after.keys():
                if before[key] and after[key] and before[key] != after[key]:
                    out.drift.add(
                        (
                            day,
                            event,
                            key,
                            "type_changed",
                            tuple(sorted(before[key])),
                            tuple(sorted(after[key])),
                        )
                    )
    return out
