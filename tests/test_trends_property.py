"""Property test: trends equal the naive reference on random logs with merges and timezones."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.workspace import Workspace
from tests.conftest import Env, values
from tests.event_logs import TIMEZONES, as_rows, event_logs
from tests.reference.events import Log
from tests.reference.trends import daily


@settings(max_examples=50, deadline=None)
@given(
    log=event_logs(),
    tz=TIMEZONES,
    math=st.sampled_from(["total", "dau", "wau", "mau", "dau_mau_ratio"]),
    event=st.sampled_from([None, "a", "zzz"]),
    start=st.integers(0, 30),
    length=st.integers(0, 12),
)
def test_trends_match_reference(
    log: Log, tz: str, math: str, event: str | None, start: int, length: int
) -> None:
    first = date(2024, 3, 1 + start)
    last = date.fromordinal(first.toordinal() + length)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        try:
            env = Env(ws, ws.create_project("p", tz))
            if log.events or log.merges:
                env.load(as_rows(log))
            spec = {
                "kind": "trends",
                "date_from": first.isoformat(),
                "date_to": last.isoformat(),
                "math": math,
                "event": event,
            }
            got = values(env.query(spec))
        finally:
            ws.close()
    expected = daily(log, tz, first, last, math, event)
    assert got == expected
