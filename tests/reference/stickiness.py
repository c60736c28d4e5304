"""Naive stickiness reference: plain Python over the loaded rows (see tests/reference/retention.py)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from tests.reference.retention import Row, local_events, period_start, range_end


def range_start(date_from: date | datetime) -> datetime:
    if isinstance(date_from, datetime):
        return date_from
    return datetime(date_from.year, date_from.month, date_from.day)


def interval_count(start: datetime, end: datetime, interval: str, week_start: str) -> int:
    """Distinct calendar intervals touched by the days of [start, end), found by walking day by day."""
    seen = set()
    day = datetime(start.year, start.month, start.day)
    while day < end:
        seen.add(period_start(day, interval, week_start))
        day += timedelta(days=1)
    return len(seen)


def stickiness(
    rows: list[Row],
    tz: str,
    week_start: str,
    *,
    date_from: date | datetime,
    date_to: date | datetime,
    interval: str,
    event: str | None,
    min_events: int,
    cumulative: bool,
    breakdown_key: str | None = None,
) -> tuple[int, dict[str, list[int]]]:
    """(number of intervals, breakdown value -> values); only values with some active person appear."""
    start, end = range_start(date_from), range_end(date_to)
    n = interval_count(start, end, interval, week_start)
    counts: dict[tuple[str, str, datetime], int] = {}
    for e in local_events(rows, tz):
        if not (start <= e.ts < end) or (event is not None and e.event != event):
            continue
        value = ""
        if breakdown_key is not None:
            raw = e.props.get(breakdown_key)
            value = "$none" if raw is None else str(raw)
        key = (value, e.person, period_start(e.ts, interval, week_start))
        counts[key] = counts.get(key, 0) + 1
    active: dict[tuple[str, str], int] = {}
    for (value, person, _), c in counts.items():
        if c >= min_events:
            active[(value, person)] = active.get((value, person), 0) + 1
    out: dict[str, list[int]] = {}
    for (value, _), k in active.items():
        row = out.setdefault(value, [0] * n)
        if cumulative:
            for j in range(k):
                row[j] += 1
        else:
            row[k - 1] += 1
    return n, out
