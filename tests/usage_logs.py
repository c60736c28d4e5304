"""Random bursty event logs and a throwaway workspace, for the sessions/adoption/time-to-value property tests.

Events come in bursts of up to 2 hours after a few anchor times, on a 5-minute grid plus a few seconds
(so gaps of exactly 30 minutes, runs longer than an hour and durations of exactly 10 s occur), on days
around the New York daylight saving change of 2024-03-10, with a ``plan`` property (sometimes missing) to
filter and break down on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from kpilot.workspace import Workspace
from tests.conftest import Env
from tests.event_logs import as_rows
from tests.reference.events import Log

BASE = datetime(2024, 3, 8)
IDS = ["anon1", "anon2", "u1", "u2"]
NAMES = ["$pageview", "$screen", "click", "buy", "signup", "value"]
PLANS = [None, "free", "pro", "team"]
TIMEZONES = st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"])


@st.composite
def usage_cases(draw: st.DrawFn, max_events: int = 50) -> tuple[Log, tuple[date, date]]:
    """A log and a query range ``(first, last)``; bursts start from 2 hours before the range to a day after."""
    first = BASE.date() + timedelta(days=draw(st.integers(0, 3)))
    last = first + timedelta(days=draw(st.integers(0, 3)))
    lo = (first - BASE.date()).days * 24 * 60 - 120
    hi = ((last - BASE.date()).days + 1) * 24 * 60
    anchors = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=3))
    log = Log()
    for _ in range(draw(st.integers(0, max_events) | st.integers(max_events // 2, max_events))):
        who = draw(st.sampled_from(IDS))
        name = draw(st.sampled_from(NAMES))
        minute = draw(st.sampled_from(anchors)) + 5 * draw(st.integers(0, 24))
        offset = draw(st.sampled_from([0, 0, 0, 5, 10, 11, 59]))
        plan = draw(st.sampled_from(PLANS))
        props: dict[str, Any] = {} if plan is None else {"plan": plan}
        log.events.append((who, name, BASE + timedelta(minutes=minute, seconds=offset), props))
    for _ in range(draw(st.integers(0, 3))):
        a, b = draw(st.sampled_from(IDS)), draw(st.sampled_from(IDS))
        if a != b:
            log.merges.append((a, b))
    return log, (first, last)


@contextmanager
def fresh_env(log: Log, tz: str, week_start: str = "monday") -> Iterator[Env]:
    """A new workspace holding ``log`` (loaded in two batches, so merges also re-point stored persons)."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        try:
            env = Env(ws, ws.create_project("p", tz, week_start))
            rows = as_rows(log)
            half = len(rows) // 2
            for batch in (rows[:half], rows[half:]):
                if batch:
                    env.load(batch)
            yield env
        finally:
            ws.close()


def approx_equal(got: Any, expected: Any) -> bool:
    """Structural equality with floats compared to 1e-6."""
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(approx_equal(got[k], expected[k]) for k in got)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(
            approx_equal(g, e) for g, e in zip(got, expected, strict=True)
        )
    if isinstance(got, float) and isinstance(expected, int | float) and not isinstance(expected, bool):
        return abs(got - expected) <= 1e-6 * max(1.0, abs(expected))
    return type(got) is type(expected) and bool(got == expected)
