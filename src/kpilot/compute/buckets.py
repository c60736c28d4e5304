"""Calendar buckets (hour/day/week/month) in local time, and how their labels print."""

from __future__ import annotations

from datetime import date, datetime, timedelta

__all__ = ["bucket_label", "bucket_start", "buckets", "next_bucket"]


def bucket_start(ts: datetime, interval: str, week_start: str = "monday") -> datetime:
    if interval == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    day = datetime(ts.year, ts.month, ts.day)
    if interval == "day":
        return day
    if interval == "week":
        offset = day.weekday() if week_start == "monday" else (day.weekday() + 1) % 7
        return day - timedelta(days=offset)
    if interval == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown interval {interval!r}")


def next_bucket(start: datetime, interval: str) -> datetime:
    if interval == "hour":
        return start + timedelta(hours=1)
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    if interval == "month":
        return (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
    raise ValueError(f"unknown interval {interval!r}")


def buckets(
    local_start: datetime, local_end: datetime, interval: str, week_start: str = "monday"
) -> list[datetime]:
    """Bucket starts covering ``[local_start, local_end)``; the first may begin before ``local_start``."""
    out: list[datetime] = []
    cur = bucket_start(local_start, interval, week_start)
    while cur < local_end:
        out.append(cur)
        cur = next_bucket(cur, interval)
    return out


def bucket_label(value: datetime | date, interval: str) -> str:
    if interval == "hour":
        return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value.isoformat()
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def as_datetime(value: datetime | date) -> datetime:
    return value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
