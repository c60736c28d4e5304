"""Naive time-to-value reference: per-person loops, written from docs/queries/time_to_value.md."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kpilot.compute.spec import TimeToValueSpec
from tests.reference.events import Log
from tests.reference.sessions import (
    Ev,
    bd_value,
    bucket_labels,
    bucket_of,
    events_of,
    label,
    result_values,
    top_values,
    utc_bounds,
)

__all__ = ["quantile", "reference_time_to_value"]


def quantile(xs: list[float], q: float) -> float | None:
    """Continuous quantile: linear interpolation between the two order statistics around q * (n - 1)."""
    if not xs:
        return None
    s = sorted(xs)
    pos = q * (len(s) - 1)
    i = int(pos)
    if i + 1 >= len(s):
        return s[-1]
    return s[i] + (s[i + 1] - s[i]) * (pos - i)


def _summary(rows: list[tuple[str, float | None]], window: int) -> dict[str, Any]:
    reached = [secs for _, secs in rows if secs is not None]
    within = sum(1 for x in reached if x <= window)
    return {
        "persons": len(rows),
        "reached": len(reached),
        "reached_within_window": within,
        "share_within_window": within / len(rows) if rows else None,
        "median_seconds": quantile(reached, 0.5),
        "p75_seconds": quantile(reached, 0.75),
    }


def reference_time_to_value(
    log: Log, tz: str, spec: TimeToValueSpec, week_start: str = "monday"
) -> dict[str, Any]:
    start, end = spec.local_bounds()
    lo, hi = utc_bounds(start, end, tz)
    events = events_of(log, tz, spec.filters)
    signups_in_range = [e for e in events if e.name == spec.signup_event and lo <= e.utc < hi]
    top = top_values(signups_in_range, spec.breakdown) if spec.breakdown else []
    first: dict[str, Ev] = {}
    for e in events:
        if e.name != spec.signup_event:
            continue
        cur = first.get(e.person)
        key = (e.utc, bd_value(e, spec.breakdown, top))
        if cur is None or key < (cur.utc, bd_value(cur, spec.breakdown, top)):
            first[e.person] = e
    # person -> (breakdown value, cohort bucket, seconds to value or None)
    rows: list[tuple[str, datetime, float | None]] = []
    for person, su in first.items():
        if not lo <= su.utc < hi:
            continue
        reach = [
            e.utc for e in events if e.person == person and e.name == spec.value_event and e.utc >= su.utc
        ]
        secs = (min(reach) - su.utc).total_seconds() if reach else None
        rows.append(
            (bd_value(su, spec.breakdown, top), bucket_of(su.local, spec.cohort_interval, week_start), secs)
        )
    labels = bucket_labels(start, end, spec.cohort_interval, week_start)
    window = spec.window.seconds

    def build(bd: str) -> dict[str, Any]:
        mine = [(b, secs) for v, b, secs in rows if v == bd]
        return {
            "cohorts": [
                {"date": label(c), **_summary([(str(b), s) for b, s in mine if b == c], window)}
                for c in labels
            ],
            "totals": _summary([(str(b), s) for b, s in mine], window),
        }

    if spec.breakdown is None:
        return build("")
    return {
        "breakdown": {"key": spec.breakdown.key, "type": spec.breakdown.type},
        "results": [{"breakdown_value": v, **build(v)} for v in result_values(top, {r[0] for r in rows})],
    }
