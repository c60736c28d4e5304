"""Naive funnel reference: plain Python loops over every person's events, written from docs/queries/funnel.md.

It reads the same PostHog-shaped rows the tests load (``$identify`` with ``$anon_distinct_id`` merges
persons) and supports event-property filters with the operators ``exact``, ``is_not``, ``is_set`` and
``is_not_set`` on string values, and an event-property breakdown without a top-N limit.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kpilot.compute.spec import FunnelSpec, FunnelStep, PropertyFilter

__all__ = ["StepStats", "reference_funnel"]

StepStats = tuple[int, float | None, float | None]
"""(persons, average seconds from previous, median seconds from previous) for one result row."""

_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class _Event:
    person: str
    name: str
    t: int  # microseconds since the epoch, UTC
    props: dict[str, Any]


def _persons(rows: list[dict[str, Any]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for row in rows:
        find(row["distinct_id"])
        anon = row.get("properties", {}).get("$anon_distinct_id")
        if row["event"] == "$identify" and anon and anon != row["distinct_id"]:
            parent[find(anon)] = find(row["distinct_id"])
    return {d: find(d) for d in list(parent)}


def _utc_micros(text: str) -> int:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _local_to_micros(local: datetime, tz: str) -> int:
    utc = local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC).replace(tzinfo=None)
    return (utc - _EPOCH) // timedelta(microseconds=1)


def _passes(f: PropertyFilter, props: dict[str, Any]) -> bool:
    value = props.get(f.key)
    wanted = f.value if isinstance(f.value, list) else [f.value]
    if f.operator == "exact":
        return value is not None and value in wanted
    if f.operator == "is_not":
        return value is None or value not in wanted
    if f.operator == "is_set":
        return value is not None
    if f.operator == "is_not_set":
        return value is None
    raise NotImplementedError(f.operator)


def _matches(step: FunnelStep, e: _Event) -> bool:
    return (step.event is None or step.event == e.name) and all(_passes(f, e.props) for f in step.filters)


def _same_definition(a: FunnelStep, b: FunnelStep) -> bool:
    return a.event == b.event and sorted(f.model_dump_json() for f in a.filters) == sorted(
        f.model_dump_json() for f in b.filters
    )


def reference_funnel(
    rows: list[dict[str, Any]], spec: FunnelSpec, timezone: str
) -> dict[str, list[StepStats]]:
    """Breakdown value ('' without a breakdown) -> one StepStats per step, only for values with persons."""
    person_of = _persons(rows)
    start, end = spec.local_bounds()
    lo, hi = _local_to_micros(start, timezone), _local_to_micros(end, timezone)
    by_person: dict[str, list[_Event]] = {}
    for row in rows:
        e = _Event(
            person_of[row["distinct_id"]], row["event"], _utc_micros(row["timestamp"]), row["properties"]
        )
        if lo <= e.t < hi and all(_passes(f, e.props) for f in spec.filters):
            by_person.setdefault(e.person, []).append(e)
    window = spec.window.seconds * 1_000_000
    chosen: dict[str, tuple[str, list[int]]] = {}
    for person, events in by_person.items():
        attempts = _attempts(spec, events, window)
        if any(_excluded(spec, events, s, times, window) for s, _, times in attempts):
            continue
        if attempts:
            _, bd, times = min(attempts, key=lambda a: (-len(a[2]), a[0]))
            chosen[person] = (bd, times)
    out: dict[str, list[StepStats]] = {}
    for bd in sorted({bd for bd, _ in chosen.values()}):
        persons = [sorted(times) for b, times in chosen.values() if b == bd]
        stats: list[StepStats] = []
        for k in range(len(spec.steps)):
            reached = [times for times in persons if len(times) > k]
            gaps = [(times[k] - times[k - 1]) / 1_000_000 for times in reached] if k else []
            stats.append(
                (
                    len(reached),
                    statistics.fmean(gaps) if gaps else None,
                    statistics.median(gaps) if gaps else None,
                )
            )
        out[bd] = stats
    return out


def _bd(spec: FunnelSpec, e: _Event) -> str:
    if spec.breakdown is None:
        return ""
    value = e.props.get(spec.breakdown.key)
    return "$none" if value is None else str(value)


def _attempts(spec: FunnelSpec, events: list[_Event], window: int) -> list[tuple[int, str, list[int]]]:
    """Every attempt of one person as (start, breakdown value, reached step times)."""
    steps = spec.steps
    if spec.order == "unordered":
        starts = {e.t for e in events if any(_matches(s, e) for s in steps)}
    else:
        starts = {e.t for e in events if _matches(steps[0], e)}
    out = []
    for s in sorted(starts):
        if spec.order == "unordered":
            bd = min(_bd(spec, e) for e in events if e.t == s and any(_matches(st, e) for st in steps))
        else:
            bd = min(_bd(spec, e) for e in events if e.t == s and _matches(steps[0], e))
        out.append((s, bd, _walk(spec, events, s, window)))
    return out


def _walk(spec: FunnelSpec, events: list[_Event], s: int, window: int) -> list[int]:
    steps = spec.steps
    times = [s]
    if spec.order == "ordered":
        for step in steps[1:]:
            later = [e.t for e in events if _matches(step, e) and times[-1] < e.t <= s + window]
            if not later:
                break
            times.append(min(later))
    elif spec.order == "strict":
        timeline = sorted({e.t for e in events})
        at = timeline.index(s)
        for k, step in enumerate(steps[1:], start=1):
            if at + k >= len(timeline) or timeline[at + k] > s + window:
                break
            t = timeline[at + k]
            if not any(_matches(step, e) for e in events if e.t == t):
                break
            times.append(t)
    else:
        times = []
        for k, step in enumerate(steps):
            rank = sum(1 for other in steps[:k] if _same_definition(other, step))
            hits = sorted({e.t for e in events if _matches(step, e) and s <= e.t <= s + window})
            if len(hits) > rank:
                times.append(hits[rank])
    return times


def _excluded(spec: FunnelSpec, events: list[_Event], s: int, times: list[int], window: int) -> bool:
    for x in spec.exclusions:
        if len(times) <= x.from_step:
            continue
        after = times[x.from_step]
        for e in events:
            if e.name != x.event or e.t <= after:
                continue
            if (len(times) > x.to_step and e.t < times[x.to_step]) or (
                len(times) <= x.to_step and e.t <= s + window
            ):
                return True
    return False
