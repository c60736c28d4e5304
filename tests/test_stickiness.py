"""Stickiness: hand-worked scenarios per semantic, and a property test against the naive reference."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.workspace import Workspace
from tests.conftest import Env, ev
from tests.reference.stickiness import stickiness


def spec(**kw: Any) -> dict[str, Any]:
    return {"kind": "stickiness", **kw}


@pytest.fixture
def day_log(env: Env) -> Env:
    env.load(
        [
            ev("x", "a", "2024-03-01T08:00:00Z"),
            ev("x", "a", "2024-03-01T09:00:00Z"),
            ev("x", "a", "2024-03-02T09:00:00Z"),
            ev("x", "a", "2024-03-04T09:00:00Z"),
            ev("x", "b", "2024-03-02T09:00:00Z"),
            *[ev("x", "c", f"2024-03-0{d}T09:00:00Z") for d in (1, 2, 3, 4)],
            ev("x", "d", "2024-02-29T09:00:00Z"),  # outside the range
            ev("x", "d", "2024-03-03T09:00:00Z"),
            ev("x", "d", "2024-03-05T00:00:00Z"),  # outside the range
            ev("y", "e", "2024-03-01T09:00:00Z"),  # another event
        ]
    )
    return env


def test_exactly_k_days(day_log: Env) -> None:
    # Mar 1..4 = 4 days. a: Mar 1, 2, 4 -> 3; b: 1; c: 4; d: only Mar 3 is in range -> 1.
    r = day_log.query(spec(date_from="2024-03-01", date_to="2024-03-04", event="x"))
    assert r == {"values": [2, 0, 1, 1], "intervals": 4}


def test_cumulative_is_k_or_more(day_log: Env) -> None:
    # exact [2, 0, 1, 1] -> >=1: 4, >=2: 2, >=3: 2, >=4: 1
    r = day_log.query(spec(date_from="2024-03-01", date_to="2024-03-04", event="x", cumulative=True))
    assert r == {"values": [4, 2, 2, 1], "intervals": 4}


def test_min_events_per_interval(day_log: Env) -> None:
    # only a's Mar 1 has 2 events -> a is active on 1 day, nobody else on any.
    r = day_log.query(spec(date_from="2024-03-01", date_to="2024-03-04", event="x", min_events=2))
    assert r == {"values": [1, 0, 0, 0], "intervals": 4}


def test_any_event_and_unknown_event(day_log: Env) -> None:
    # with any event, e (event y on Mar 1) joins the 1-day persons
    assert day_log.query(spec(date_from="2024-03-01", date_to="2024-03-04"))["values"] == [3, 0, 1, 1]
    r = day_log.query(spec(date_from="2024-03-01", date_to="2024-03-04", event="never"))
    assert r == {"values": [0, 0, 0, 0], "intervals": 4}


WEEK_ROWS = [
    ev("x", "a", "2024-03-05T12:00:00Z"),  # Tue, before the range
    ev("x", "a", "2024-03-06T12:00:00Z"),  # Wed
    ev("x", "a", "2024-03-12T12:00:00Z"),  # Tue
    ev("x", "b", "2024-03-10T12:00:00Z"),  # Sun
    ev("x", "b", "2024-03-11T12:00:00Z"),  # Mon
    ev("x", "b", "2024-03-19T12:00:00Z"),  # Tue
    ev("x", "c", "2024-03-20T12:00:00Z"),  # Wed, after the range
    ev("x", "d", "2024-03-13T12:00:00Z"),
    ev("x", "d", "2024-03-14T12:00:00Z"),
]


def test_week_intervals_count_partial_weeks(env: Env) -> None:
    # Wed Mar 6 .. Tue Mar 19 touches the Monday weeks of Mar 4 (partial), Mar 11 and Mar 18 (partial): 3.
    # a: weeks 4, 11 -> 2; b: Sun 10 is week 4, Mon 11 week 11, Tue 19 week 18 -> 3; d: week 11 -> 1.
    env.load(WEEK_ROWS)
    r = env.query(spec(date_from="2024-03-06", date_to="2024-03-19", interval="week"))
    assert r == {"values": [1, 1, 1], "intervals": 3}


def test_week_intervals_with_sunday_weeks(env: Env) -> None:
    # Sunday weeks Mar 3 (6..9), Mar 10 (10..16), Mar 17 (17..19): 3.
    # a: weeks 3, 10 -> 2; b: Sun 10 and Mon 11 are both week 10, Tue 19 week 17 -> 2; d -> 1.
    sunday = Env(env.ws, env.ws.create_project("sun", "UTC", "sunday"))
    sunday.load(WEEK_ROWS)
    r = sunday.query(spec(date_from="2024-03-06", date_to="2024-03-19", interval="week"))
    assert r == {"values": [1, 2, 0], "intervals": 3}


def test_month_intervals(env: Env) -> None:
    # Jan 15 .. Mar 10 touches Jan, Feb, Mar. a: Jan 31 and Feb 1 -> 2; b: Jan 10 (outside) and Mar 10 -> 1.
    env.load(
        [
            ev("x", "a", "2024-01-31T23:00:00Z"),
            ev("x", "a", "2024-02-01T01:00:00Z"),
            ev("x", "b", "2024-01-10T12:00:00Z"),
            ev("x", "b", "2024-03-10T12:00:00Z"),
        ]
    )
    r = env.query(spec(date_from="2024-01-15", date_to="2024-03-10", interval="month"))
    assert r == {"values": [1, 1, 0], "intervals": 3}


def test_identity_merge(env: Env) -> None:
    env.load([ev("x", "anon-1", "2024-03-01T12:00:00Z"), ev("x", "user-1", "2024-03-02T12:00:00Z")])
    q = spec(date_from="2024-03-01", date_to="2024-03-02", event="x")
    assert env.query(q)["values"] == [2, 0]
    env.load([ev("$identify", "user-1", "2024-03-20T00:00:00Z", **{"$anon_distinct_id": "anon-1"})])
    assert env.query(q)["values"] == [0, 1]


def test_timezone_moves_events_across_midnight(env_ny: Env) -> None:
    # 03:00 UTC Mar 2 is 22:00 Mar 1 in New York; 15:00 UTC Mar 2 is Mar 2 in both.
    env_ny.load([ev("x", "a", "2024-03-02T03:00:00Z"), ev("x", "a", "2024-03-02T15:00:00Z")])
    q = spec(date_from="2024-03-01", date_to="2024-03-02")
    assert env_ny.query(q)["values"] == [0, 1]
    assert env_ny.query({**q, "timezone": "UTC"})["values"] == [1, 0]


def test_filters_and_event_breakdown(env: Env) -> None:
    # a: pro on Mar 1 and 2, free on Mar 2; b: pro on Mar 2; c: no plan on Mar 1.
    env.load(
        [
            ev("x", "a", "2024-03-01T12:00:00Z", plan="pro"),
            ev("x", "a", "2024-03-02T12:00:00Z", plan="pro"),
            ev("x", "a", "2024-03-02T13:00:00Z", plan="free"),
            ev("x", "b", "2024-03-02T12:00:00Z", plan="pro"),
            ev("x", "c", "2024-03-01T12:00:00Z"),
        ]
    )
    q = spec(date_from="2024-03-01", date_to="2024-03-02")
    assert env.query({**q, "filters": [{"key": "plan", "value": "pro"}]})["values"] == [1, 1]
    r = env.query({**q, "breakdown": {"key": "plan"}})
    got = {x["breakdown_value"]: (x["values"], x["intervals"]) for x in r["results"]}
    assert got == {"pro": ([1, 1], 2), "free": ([1, 0], 2), "$none": ([1, 0], 2)}


def test_person_breakdown(env: Env) -> None:
    env.load(
        [
            {"event": "x", "distinct_id": "a", "timestamp": "2024-03-01T12:00:00Z", "$set": {"plan": "pro"}},
            ev("x", "a", "2024-03-02T12:00:00Z"),
            ev("x", "b", "2024-03-02T12:00:00Z"),
        ]
    )
    r = env.query(
        spec(date_from="2024-03-01", date_to="2024-03-02", breakdown={"key": "plan", "type": "person"})
    )
    assert {x["breakdown_value"]: x["values"] for x in r["results"]} == {"pro": [0, 1], "$none": [1, 0]}


def test_hour_interval_is_rejected(env: Env) -> None:
    from kpilot.errors import SpecError

    with pytest.raises(SpecError, match="interval"):
        env.query(spec(date_from="2024-03-01", date_to="2024-03-02", interval="hour"))


# ---- property test against the naive reference ----------------------------------------------------------------

BASE = datetime(2024, 3, 1)  # New York changes to summer time on 2024-03-10
TZS = ["UTC", "America/New_York", "Asia/Kolkata"]
_counter = itertools.count()


@st.composite
def logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    ids = [f"u{i}" for i in range(5)]
    rows: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 40))):
        props: dict[str, Any] = {}
        plan = draw(st.sampled_from([None, "a", "b"]))
        if plan is not None:
            props["plan"] = plan
        name = draw(st.sampled_from(["x", "x", "y", "$identify"]))
        if name == "$identify":
            props["$anon_distinct_id"] = draw(st.sampled_from(ids))
        ts = BASE + timedelta(minutes=draw(st.integers(0, 70 * 24 * 60)))
        rows.append(
            {
                "event": name,
                "distinct_id": draw(st.sampled_from(ids)),
                "uuid": f"ev-{i}",
                "timestamp": ts.isoformat() + "Z",
                "properties": props,
            }
        )
    return rows


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = Workspace.init(tmp_path_factory.mktemp("stickiness") / "ws")
    yield ws
    ws.close()


@settings(max_examples=60, deadline=None)
@given(
    rows=logs(),
    tz=st.sampled_from(TZS),
    week_start=st.sampled_from(["monday", "sunday"]),
    interval=st.sampled_from(["day", "week", "month"]),
    first=st.integers(0, 40),
    length=st.integers(0, 30),
    start_hour=st.sampled_from([None, 7]),
    event=st.sampled_from([None, "x"]),
    min_events=st.integers(1, 3),
    cumulative=st.booleans(),
    breakdown=st.sampled_from([None, "plan"]),
)
def test_stickiness_matches_reference(
    shared_ws: Workspace,
    rows: list[dict[str, Any]],
    tz: str,
    week_start: str,
    interval: str,
    first: int,
    length: int,
    start_hour: int | None,
    event: str | None,
    min_events: int,
    cumulative: bool,
    breakdown: str | None,
) -> None:
    day = BASE.date() + timedelta(days=first)
    # a datetime range starts and ends mid-day: [day 07:00, last day 07:00)
    date_from: date | datetime = (
        day if start_hour is None else datetime.combine(day, datetime.min.time()).replace(hour=start_hour)
    )
    date_to: date | datetime = date_from + timedelta(days=length)
    env = Env(shared_ws, shared_ws.create_project(f"p{next(_counter)}", tz, week_start))
    if rows:
        env.load(rows)
    q: dict[str, Any] = spec(
        date_from=date_from.isoformat(),
        date_to=date_to.isoformat(),
        interval=interval,
        event=event,
        min_events=min_events,
        cumulative=cumulative,
    )
    if breakdown:
        q["breakdown"] = {"key": breakdown}
    got = env.query(q)
    n, expected = stickiness(
        rows,
        tz,
        week_start,
        date_from=date_from,
        date_to=date_to,
        interval=interval,
        event=event,
        min_events=min_events,
        cumulative=cumulative,
        breakdown_key=breakdown,
    )
    results = got["results"] if breakdown else [{"breakdown_value": "", **got}]
    for r in results:
        assert r["intervals"] == n
        assert r["values"] == expected.get(r["breakdown_value"], [0] * n), r["breakdown_value"]
    assert set(expected) <= {r["breakdown_value"] for r in results}
