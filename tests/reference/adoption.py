"""Naive feature-adoption reference: sets of persons per bucket, written from docs/queries/feature_adoption.md."""

from __future__ import annotations

from typing import Any

from kpilot.compute.spec import FeatureAdoptionSpec
from tests.reference.events import Log
from tests.reference.sessions import (
    bd_value,
    bucket_labels,
    bucket_of,
    events_of,
    label,
    result_values,
    top_values,
    utc_bounds,
)

__all__ = ["reference_adoption"]


def reference_adoption(
    log: Log, tz: str, spec: FeatureAdoptionSpec, week_start: str = "monday"
) -> dict[str, Any]:
    start, end = spec.local_bounds()
    lo, hi = utc_bounds(start, end, tz)
    wanted = {spec.event, spec.active_event}
    events = [
        e
        for e in events_of(log, tz, spec.filters)
        if lo <= e.utc < hi and (spec.active_event is None or e.name in wanted)
    ]
    top = top_values(events, spec.breakdown) if spec.breakdown else []
    labels = bucket_labels(start, end, spec.interval, week_start)
    present: set[str] = set()

    def build(bd: str) -> dict[str, Any]:
        series = []
        for b in labels:
            inside = [
                e
                for e in events
                if bucket_of(e.local, spec.interval, week_start) == b
                and bd_value(e, spec.breakdown, top) == bd
            ]
            active = {e.person for e in inside if spec.active_event is None or e.name == spec.active_event}
            used = {e.person for e in inside if e.name == spec.event}
            adopters = used & active
            series.append(
                {
                    "date": label(b),
                    "adopters": len(adopters),
                    "active": len(active),
                    "value": len(adopters) / len(active) if active else 0.0,
                }
            )
        return {"series": series}

    if spec.breakdown is None:
        return build("")
    for e in events:
        if spec.active_event is None or e.name == spec.active_event:
            present.add(bd_value(e, spec.breakdown, top))
    return {
        "breakdown": {"key": spec.breakdown.key, "type": spec.breakdown.type},
        "results": [{"breakdown_value": v, **build(v)} for v in result_values(top, present)],
    }
