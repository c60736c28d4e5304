"""Property test: the audit's per-day counts and schema drift equal a naive reference on random logs.

Logs mix identify merges, properties of every JSON type (and null), timestamps exactly on the future/past
thresholds and around "now", days without an event between days with it, and random UTC day ranges.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpilot.collect.normalize import normalize
from kpilot.quality import AuditOptions, run_audit
from kpilot.workspace import Workspace
from tests.reference.audit import AuditEvent, audit

BASE = datetime(2024, 3, 1)
NOW = datetime(2024, 3, 6, 12)
IDS = ["a1", "a2", "u1", "u2", "u3"]
KEYS = ["k", "n", "with space", "$x"]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 2.25]),
    st.sampled_from(["s", "1"]),
    st.just([1]),
    st.just({"o": 1}),
)
# offsets of the timestamp from received_at: on and around both thresholds (1 h ahead, 365 days back)
OFFSETS = [
    timedelta(0),
    timedelta(hours=1),
    timedelta(hours=1, seconds=1),
    timedelta(days=-365),
    timedelta(days=-365, seconds=-1),
    timedelta(minutes=-5),
]


@st.composite
def logs(draw: st.DrawFn) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for i in range(draw(st.integers(0, 30))):
        ts = BASE + timedelta(hours=draw(st.integers(0, 9 * 24 - 1)), seconds=i)
        kind = draw(st.sampled_from(["x", "x", "y", "$identify"]))
        who = draw(st.sampled_from(IDS))
        props: dict[str, Any] = {}
        merge = None
        if kind == "$identify":
            merge = draw(st.sampled_from(IDS))
            props["$anon_distinct_id"] = merge
        else:
            for key in draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)):
                props[key] = draw(VALUES)
        received = ts - draw(st.sampled_from(OFFSETS))
        out.append(AuditEvent(kind, who, ts, props, received, merge))
    return out


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One workspace for all examples; each example gets a fresh project (projects are isolated)."""
    ws = Workspace.init(tmp_path_factory.mktemp("audit") / "ws")
    yield ws
    ws.close()


_EXAMPLE = itertools.count()


def _store(ws: Workspace, project_id: int, events: list[AuditEvent]) -> None:
    """One batch with a received_at per row (write_batch has one for the whole batch)."""
    rows = [
        normalize(
            {
                "event": e.event,
                "distinct_id": e.distinct_id,
                "timestamp": e.timestamp.isoformat() + "Z",
                "uuid": f"00000000-0000-4000-8000-{i:012d}",
                "properties": e.properties,
            }
        )
        for i, e in enumerate(events)
    ]
    table = pa.table(
        {
            "uuid": [r.uuid for r in rows],
            "event": [r.event for r in rows],
            "distinct_id": [r.distinct_id for r in rows],
            "timestamp": pa.array([r.timestamp for r in rows], pa.timestamp("us")),
            "properties": [r.properties_json() for r in rows],
            "received_at": pa.array([e.received_at for e in events], pa.timestamp("us")),
        }
    )
    ws.store.write_arrow(project_id, table, [m for r in rows for m in r.merges], [])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=logs(),
    first=st.one_of(st.none(), st.integers(0, 8)),
    length=st.one_of(st.none(), st.integers(0, 5)),
)
def test_audit_matches_reference(
    shared_ws: Workspace, events: list[AuditEvent], first: int | None, length: int | None
) -> None:
    date_from = BASE.date() + timedelta(days=first) if first is not None else None
    date_to = (date_from or BASE.date()) + timedelta(days=length) if length is not None else None
    project = shared_ws.create_project(f"p{next(_EXAMPLE)}")
    if events:
        _store(shared_ws, project.id, events)
    report = run_audit(shared_ws, project, AuditOptions(date_from, date_to, now=NOW))
    expected = audit(events, NOW, timedelta(hours=1), timedelta(days=365), date_from, date_to)
    got_counts = {
        (r.day, r.event): (r.volume, r.anonymous, r.future, r.past) for r in report.rows if r.volume
    }
    assert got_counts == expected.counts
    got_drift = {
        (d.day, d.event, d.key, d.change, tuple(d.types_before), tuple(d.types_after)) for d in report.drift
    }
    assert got_drift == expected.drift
