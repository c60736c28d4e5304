"""Hypothesis strategies for random event logs with identity merges (shared by property tests)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tests.reference.events import Log

BASE = datetime(2024, 3, 1)
IDS = [f"d{i}" for i in range(8)]
EVENTS = ["a", "b", "c"]


@st.composite
def event_logs(draw: st.DrawFn, days: int = 40, max_events: int = 60) -> Log:
    n = draw(st.integers(0, max_events))
    log = Log()
    for _ in range(n):
        who = draw(st.sampled_from(IDS))
        name = draw(st.sampled_from(EVENTS))
        # minutes resolution, spread over `days` days, so windows and midnights get hit often
        minute = draw(st.integers(0, days * 24 * 60 - 1))
        log.events.append((who, name, BASE + timedelta(minutes=minute), {}))
    for _ in range(draw(st.integers(0, 4))):
        a, b = draw(st.sampled_from(IDS)), draw(st.sampled_from(IDS))
        if a != b:
            log.merges.append((a, b))
    return log


def as_rows(log: Log) -> list[dict[str, Any]]:
    """PostHog-shaped rows: the events, then one $create_alias per merge (at a time outside the range)."""
    rows: list[dict[str, Any]] = [
        {
            "event": e,
            "distinct_id": d,
            "timestamp": ts.isoformat() + "Z",
            "properties": dict(p),
            "uuid": f"ev-{i}",
        }
        for i, (d, e, ts, p) in enumerate(log.events)
    ]
    for i, (a, b) in enumerate(log.merges):
        rows.append(
            {
                "event": "$create_alias",
                "distinct_id": b,
                "timestamp": (BASE - timedelta(days=400, minutes=i)).isoformat() + "Z",
                "properties": {"alias": a},
            }
        )
    return rows


TIMEZONES = st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Auckland"])
