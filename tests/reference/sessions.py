"""Naive sessions reference: one sequential loop per person, written from docs/queries/sessions.md.

Also holds the small helpers the adoption and time-to-value references share: UTC/local conversion,
calendar buckets, the event-property breakdown with its top-N, and property filters (``exact``,
``is_set``, ``is_not_set`` on string values).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kpilot.compute.spec import Breakdown, PropertyFilter, SessionsSpec
from tests.reference.events import Log

__all__ = [
    "Ev",
    "bucket_labels",
    "bucket_of",
    "events_of",
    "label",
    "reference_sessions",
    "top_values",
    "utc_bounds",
]


@dataclass(frozen=True)
class Ev:
    person: str
    name: str
    utc: datetime
    local: datetime
    props: dict[str, Any]


def to_utc(local: datetime, tz: str) -> datetime:
    return local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC).replace(tzinfo=None)


def utc_bounds(start: datetime, end: datetime, tz: str) -> tuple[datetime, datetime]:
    return to_utc(start, tz), to_utc(end, tz)


def _passes(f: PropertyFilter, props: dict[str, Any]) -> bool:
    value = props.get(f.key)
    if f.operator == "exact":
        return value is not None and value in (f.value if isinstance(f.value, list) else [f.value])
    if f.operator == "is_set":
        return value is not None
    if f.operator == "is_not_set":
        return value is None
    raise NotImplementedError(f.operator)


def events_of(log: Log, tz: str, filters: list[PropertyFilter]) -> list[Ev]:
    """Every event of the log with its person and local time, filtered (no time bounds)."""
    person = log.person_of()
    zone = ZoneInfo(tz)
    out = []
    for d, name, ts, props in log.events:
        if all(_passes(f, props) for f in filters):
            local = ts.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
            out.append(Ev(person[d], name, ts, local, props))
    return out


def bucket_of(local: datetime, interval: str, week_start: str = "monday") -> datetime:
    day = datetime(local.year, local.month, local.day)
    if interval == "day":
        return day
    if interval == "week":
        back = day.weekday() if week_start == "monday" else (day.weekday() + 1) % 7
        return day - timedelta(days=back)
    if interval == "month":
        return day.replace(day=1)
    raise ValueError(interval)


def bucket_labels(
    start: datetime, end: datetime, interval: str, week_start: str = "monday"
) -> list[datetime]:
    """Every bucket overlapping [start, end), walking day by day (slow and obviously right)."""
    out: list[datetime] = []
    day = datetime(start.year, start.month, start.day)
    while day < end:
        b = bucket_of(day, interval, week_start)
        if b not in out:
            out.append(b)
        day += timedelta(days=1)
    return out


def label(b: datetime) -> str:
    return b.date().isoformat()


def top_values(events: list[Ev], bd: Breakdown) -> list[str]:
    """Values held by the most persons, then by value; at most ``bd.limit``."""
    persons: dict[str, set[str]] = {}
    for e in events:
        v = e.props.get(bd.key)
        if v is not None:
            persons.setdefault(str(v), set()).add(e.person)
    ranked = sorted(persons, key=lambda v: (-len(persons[v]), v))
    return ranked[: bd.limit]


def bd_value(e: Ev, bd: Breakdown | None, top: list[str]) -> str:
    if bd is None:
        return ""
    v = e.props.get(bd.key)
    if v is None:
        return "$none"
    return str(v) if str(v) in top else "$other"


def result_values(top: list[str], present: set[str]) -> list[str]:
    return top + [v for v in ("$other", "$none") if v in present]


# ---- sessions ---------------------------------------------------------------------------------------


@dataclass
class _Session:
    person: str
    events: list[Ev]
    bd: str


def _summary(sessions: list[_Session], spec: SessionsSpec) -> dict[str, Any]:
    n = len(sessions)
    durations = [(s.events[-1].utc - s.events[0].utc).total_seconds() for s in sessions]
    engaged = 0
    for s, dur in zip(sessions, durations, strict=True):
        pageviews = sum(1 for e in s.events if e.name in spec.pageview_events)
        has_key = any(e.name in spec.key_events for e in s.events)
        if dur > spec.engaged_seconds or has_key or pageviews >= 2:
            engaged += 1
    persons = len({s.person for s in sessions})
    return {
        "sessions": n,
        "persons": persons,
        "avg_duration_seconds": sum(durations) / n if n else None,
        "median_duration_seconds": statistics.median(durations) if n else None,
        "sessions_per_person": n / persons if persons else None,
        "engaged_sessions": engaged,
        "engagement_rate": engaged / n if n else None,
        "bounce_rate": 1 - engaged / n if n else None,
    }


def reference_sessions(log: Log, tz: str, spec: SessionsSpec, week_start: str = "monday") -> dict[str, Any]:
    """The engine's result shape (with ``results`` per value when there is a breakdown)."""
    start, end = spec.local_bounds()
    lo, hi = utc_bounds(start, end, tz)
    events = [e for e in events_of(log, tz, spec.filters) if lo <= e.utc < hi]
    top = top_values(events, spec.breakdown) if spec.breakdown else []
    gap = timedelta(minutes=spec.inactivity_minutes)
    cap = timedelta(hours=spec.max_hours)
    sessions: list[_Session] = []
    for person in sorted({e.person for e in events}):
        current: list[Ev] = []
        for e in sorted((e for e in events if e.person == person), key=lambda e: e.utc):
            if current and (e.utc - current[-1].utc > gap or e.utc - current[0].utc > cap):
                sessions.append(_close(person, current, spec, top))
                current = []
            current.append(e)
        if current:
            sessions.append(_close(person, current, spec, top))
    labels = bucket_labels(start, end, spec.interval, week_start)

    def build(bd: str) -> dict[str, Any]:
        mine = [s for s in sessions if s.bd == bd]
        series = []
        for b in labels:
            inside = [s for s in mine if bucket_of(s.events[0].local, spec.interval, week_start) == b]
            series.append({"date": label(b), **_summary(inside, spec)})
        return {"totals": _summary(mine, spec), "series": series}

    if spec.breakdown is None:
        return build("")
    values = result_values(top, {s.bd for s in sessions})
    return {
        "breakdown": {"key": spec.breakdown.key, "type": spec.breakdown.type},
        "results": [{"breakdown_value": v, **build(v)} for v in values],
    }


def _close(person: str, events: list[Ev], spec: SessionsSpec, top: list[str]) -> _Session:
    first = [e for e in events if e.utc == events[0].utc]
    return _Session(person, events, min(bd_value(e, spec.breakdown, top) for e in first))
