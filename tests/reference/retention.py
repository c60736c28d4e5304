"""Naive retention reference: plain Python over the very rows that were loaded, no SQL, no kpilot code.

Rows are PostHog-shaped dicts (``event``, ``distinct_id``, ISO ``timestamp`` ending in Z, ``properties``).
Identity merges come from ``$identify`` (``$anon_distinct_id``) and ``$create_alias`` (``alias``) rows; every
row, those included, is an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

Row = dict[str, Any]


@dataclass(frozen=True)
class LocalEvent:
    person: str
    event: str
    ts: datetime  # local wall clock, naive
    props: dict[str, Any]


def persons(rows: list[Row]) -> dict[str, str]:
    """distinct_id -> a representative of its merged person (union-find over every merge)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for r in rows:
        find(r["distinct_id"])
        props = r.get("properties", {})
        other = None
        if r["event"] == "$identify":
            other = props.get("$anon_distinct_id")
        elif r["event"] == "$create_alias":
            other = props.get("alias")
        if other and other != r["distinct_id"]:
            a, b = find(other), find(r["distinct_id"])
            if a != b:
                parent[a] = b
    return {d: find(d) for d in list(parent)}


def local_events(rows: list[Row], tz: str) -> list[LocalEvent]:
    person = persons(rows)
    zone = ZoneInfo(tz)
    out = []
    for r in rows:
        utc = datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).astimezone(UTC)
        local = utc.astimezone(zone).replace(tzinfo=None)
        out.append(LocalEvent(person[r["distinct_id"]], r["event"], local, r.get("properties", {})))
    return out


def period_start(ts: datetime, period: str, week_start: str) -> datetime:
    if period == "hour":
        return datetime(ts.year, ts.month, ts.day, ts.hour)
    day = datetime(ts.year, ts.month, ts.day)
    if period == "day":
        return day
    if period == "week":
        first = 0 if week_start == "monday" else 6  # Python weekday(): Monday 0 .. Sunday 6
        while day.weekday() != first:
            day -= timedelta(days=1)
        return day
    assert period == "month"
    return datetime(ts.year, ts.month, 1)


def add_periods(start: datetime, period: str, n: int) -> datetime:
    if period == "month":
        y, m = start.year, start.month
        for _ in range(abs(n)):
            if n > 0:
                y, m = (y + 1, 1) if m == 12 else (y, m + 1)
            else:
                y, m = (y - 1, 12) if m == 1 else (y, m - 1)
        return datetime(y, m, 1)
    hours = {"hour": 1, "day": 24, "week": 24 * 7}[period]
    return start + timedelta(hours=hours * n)


def range_end(date_to: date | datetime) -> datetime:
    """Exclusive local end: the day after a date, or the datetime itself."""
    if isinstance(date_to, datetime):
        return date_to
    return datetime(date_to.year, date_to.month, date_to.day) + timedelta(days=1)


def matches(e: LocalEvent, name: str | None, plan: str | None) -> bool:
    return (name is None or e.event == name) and (plan is None or e.props.get("plan") == plan)


def retention(
    rows: list[Row],
    tz: str,
    week_start: str,
    *,
    date_to: date | datetime,
    period: str,
    intervals: int,
    start_event: str | None,
    return_event: str | None,
    retention_type: str,
    cumulative: bool,
    plan: str | None = None,
    breakdown_key: str | None = None,
) -> dict[str, list[list[int]]]:
    """Breakdown value ('' without a breakdown) -> table; only values with some cohort member appear.

    ``plan`` is an optional filter "event property plan equals this", applied to start and return events.
    """
    events = local_events(rows, tz)
    last = period_start(range_end(date_to) - timedelta(microseconds=1), period, week_start)
    bounds = [add_periods(last, period, i - intervals + 1) for i in range(intervals + 1)]

    def index(ts: datetime) -> int | None:
        for i in range(intervals):
            if bounds[i] <= ts < bounds[i + 1]:
                return i
        return None

    def bd(e: LocalEvent) -> str:
        if breakdown_key is None:
            return ""
        v = e.props.get(breakdown_key)
        return "$none" if v is None else str(v)

    members: dict[tuple[str, int], set[str]] = {}
    starts = [e for e in events if matches(e, start_event, plan)]
    if retention_type == "recurring":
        for e in starts:
            i = index(e.ts)
            if i is not None:
                members.setdefault((bd(e), i), set()).add(e.person)
    else:
        first: dict[str, tuple[datetime, str]] = {}
        for e in starts:
            key = (e.ts, bd(e))
            if e.person not in first or key < first[e.person]:
                first[e.person] = key
        for person, (ts, value) in first.items():
            i = index(ts)
            if i is not None:
                members.setdefault((value, i), set()).add(person)

    returned: dict[str, set[int]] = {}
    for e in events:
        i = index(e.ts)
        if i is not None and matches(e, return_event, plan):
            returned.setdefault(e.person, set()).add(i)

    tables: dict[str, list[list[int]]] = {}
    for (value, i), people in members.items():
        table = tables.setdefault(value, [[0] * intervals for _ in range(intervals)])
        table[i][0] = len(people)
        for k in range(1, intervals - i):
            if cumulative:
                table[i][k] = sum(1 for p in people if max(returned.get(p, {-1}), default=-1) >= i + k)
            else:
                table[i][k] = sum(1 for p in people if i + k in returned.get(p, set()))
    return tables


def cohort_labels(date_to: date | datetime, period: str, intervals: int, week_start: str) -> list[str]:
    last = period_start(range_end(date_to) - timedelta(microseconds=1), period, week_start)
    starts = [add_periods(last, period, i - intervals + 1) for i in range(intervals)]
    if period == "hour":
        return [s.isoformat(timespec="seconds") for s in starts]
    return [s.date().isoformat() for s in starts]
