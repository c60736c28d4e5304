"""Retention: hand-worked scenarios per semantic, and a property test against the naive reference."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.compute.dialect import DIALECTS
from kpilot.errors import SpecError
from kpilot.workspace import Workspace
from tests.conftest import Env, ev
from tests.reference.retention import cohort_labels, retention


def table(result: dict[str, Any]) -> list[list[int]]:
    return [r["values"] for r in result["rows"]]


def dates(result: dict[str, Any]) -> list[str]:
    return [r["date"] for r in result["rows"]]


def by_value(result: dict[str, Any]) -> dict[str, list[list[int]]]:
    return {r["breakdown_value"]: table(r) for r in result["results"]}


def spec(**kw: Any) -> dict[str, Any]:
    return {"kind": "retention", "date_from": "2024-01-01", **kw}


# ---- day periods, recurring, padding, same-period returns ------------------------------------------------


@pytest.fixture
def day_log(env: Env) -> Env:
    env.load(
        [
            ev("$pageview", "a", "2024-03-03T10:00:00Z"),
            ev("$pageview", "a", "2024-03-03T15:00:00Z"),  # same day: not a return
            ev("$pageview", "a", "2024-03-05T08:00:00Z"),
            ev("$pageview", "a", "2024-03-06T08:00:00Z"),  # after the last cohort's day: ignored
            ev("$pageview", "b", "2024-03-03T10:00:00Z"),
            ev("$pageview", "b", "2024-03-04T10:00:00Z"),
            ev("$pageview", "c", "2024-03-04T10:00:00Z"),
            ev("$pageview", "c", "2024-03-05T10:00:00Z"),
            ev("$pageview", "d", "2024-03-02T10:00:00Z"),  # before the first cohort
            ev("$pageview", "d", "2024-03-04T23:59:59Z"),
            ev("$pageview", "e", "2024-03-06T00:00:00Z"),
        ]
    )
    return env


def test_day_recurring_cohorts_returns_and_padding(day_log: Env) -> None:
    # date_to Mar 5, 3 intervals -> cohorts Mar 3, 4, 5 (date_from Jan 1 plays no part).
    # Mar 3: {a, b}; day+1 (Mar 4): b; day+2 (Mar 5): a        -> [2, 1, 1]
    # Mar 4: {b, c, d}; day+1 (Mar 5): c; day+2 not yet        -> [3, 1, 0]
    # Mar 5: {a, c}                                             -> [2, 0, 0]
    r = day_log.query(spec(date_to="2024-03-05", intervals=3))
    assert dates(r) == ["2024-03-03", "2024-03-04", "2024-03-05"]
    assert table(r) == [[2, 1, 1], [3, 1, 0], [2, 0, 0]]


def test_day_cumulative_counts_on_or_after(day_log: Env) -> None:
    # Mar 3: a's latest return is day+2, b's is day+1 -> day+1: {a, b} = 2, day+2: {a} = 1.
    r = day_log.query(spec(date_to="2024-03-05", intervals=3, cumulative=True))
    assert table(r) == [[2, 2, 1], [3, 1, 0], [2, 0, 0]]


def test_cumulative_fills_gaps_up_to_the_latest_return(env: Env) -> None:
    # a: Mar 1, 2, 4 -> returns at +1 and +3; b: Mar 1, 3 -> return at +2.
    # exact:      Mar 1 [2, 1 (a), 1 (b), 1 (a)]; Mar 2 {a}: +2 = Mar 4 -> [1, 0, 1, 0]
    # cumulative: Mar 1 +1: a, b; +2: a, b; +3: a -> [2, 2, 2, 1]; Mar 2 -> [1, 1, 1, 0]
    env.load([ev("$pageview", "a", f"2024-03-0{d}T12:00:00Z") for d in (1, 2, 4)])
    env.load([ev("$pageview", "b", f"2024-03-0{d}T12:00:00Z") for d in (1, 3)])
    base = spec(date_to="2024-03-04", intervals=4)
    assert table(env.query(base)) == [[2, 1, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert table(env.query({**base, "cumulative": True})) == [
        [2, 2, 2, 1],
        [1, 1, 1, 0],
        [1, 0, 0, 0],
        [1, 0, 0, 0],
    ]


def test_return_in_the_cohort_period_does_not_count(env: Env) -> None:
    env.load([ev("signup", "a", "2024-03-01T08:00:00Z"), ev("$pageview", "a", "2024-03-01T09:00:00Z")])
    r = env.query(spec(date_to="2024-03-02", intervals=2, start_event="signup"))
    assert table(r) == [[1, 0], [0, 0]]


def test_default_intervals_is_seven_rows_of_seven(env: Env) -> None:
    env.load([ev("$pageview", "a", "2024-03-01T08:00:00Z")])
    r = env.query(spec(date_to="2024-03-07"))
    assert dates(r)[0] == "2024-03-01"
    assert table(r) == [[1, 0, 0, 0, 0, 0, 0]] + [[0] * 7 for _ in range(6)]


# ---- weeks, months, hours ---------------------------------------------------------------------------------


WEEK_ROWS = [
    ev("$pageview", "a", "2024-03-03T12:00:00Z"),  # Sunday
    ev("$pageview", "a", "2024-03-04T12:00:00Z"),  # Monday
    ev("$pageview", "b", "2024-03-04T12:00:00Z"),
    ev("$pageview", "b", "2024-03-10T12:00:00Z"),  # Sunday
    ev("$pageview", "b", "2024-03-16T12:00:00Z"),  # Saturday after date_to, inside the last cohort's week
]


def test_week_period_monday_start(env: Env) -> None:
    # date_to Wed Mar 13 -> cohorts weeks of Mon Feb 26, Mar 4, Mar 11.
    # Feb 26: {a (Sun Mar 3)}; a is back in week Mar 4                   -> [1, 1, 0]
    # Mar 4: {a, b}; b's Sunday Mar 10 is the same week; Sat Mar 16 is +1 -> [2, 1, 0]
    # Mar 11: {b}                                                          -> [1, 0, 0]
    env.load(WEEK_ROWS)
    r = env.query(spec(date_to="2024-03-13", period="week", intervals=3))
    assert dates(r) == ["2024-02-26", "2024-03-04", "2024-03-11"]
    assert table(r) == [[1, 1, 0], [2, 1, 0], [1, 0, 0]]


def test_week_period_sunday_start_from_spec_and_from_project(env: Env) -> None:
    # Weeks from Sunday: cohorts Feb 25, Mar 3, Mar 10. a: Sun Mar 3 and Mon Mar 4 are one week.
    # Feb 25: {} -> [0, 0, 0]; Mar 3: {a, b}, b back Sun Mar 10 -> [2, 1, 0]; Mar 10: {b} -> [1, 0, 0]
    env.load(WEEK_ROWS)
    expected = [[0, 0, 0], [2, 1, 0], [1, 0, 0]]
    r = env.query(spec(date_to="2024-03-13", period="week", intervals=3, week_start="sunday"))
    assert dates(r) == ["2024-02-25", "2024-03-03", "2024-03-10"]
    assert table(r) == expected
    sunday = Env(env.ws, env.ws.create_project("sun", "UTC", "sunday"))
    sunday.load(WEEK_ROWS)
    q = spec(date_to="2024-03-13", period="week", intervals=3)
    assert table(sunday.query(q)) == expected
    # the spec wins over the project setting
    assert dates(sunday.query({**q, "week_start": "monday"})) == ["2024-02-26", "2024-03-04", "2024-03-11"]


def test_month_period_uses_calendar_months(env: Env) -> None:
    # cohorts Jan, Feb, Mar 2024 (date_to Mar 15).
    # Jan: {a (Jan 31 23:00), c}; a back Feb 1 00:30 (+1) and Mar 31 (+2) -> [2, 1, 1]
    # Feb: {a, b (Feb 29)}; Mar: a (Mar 31), b (Mar 1)                   -> [2, 2, 0]
    # Mar: {a, b}                                                         -> [2, 0, 0]
    env.load(
        [
            ev("$pageview", "a", "2024-01-31T23:00:00Z"),
            ev("$pageview", "a", "2024-02-01T00:30:00Z"),
            ev("$pageview", "a", "2024-03-31T23:59:00Z"),
            ev("$pageview", "b", "2024-02-29T12:00:00Z"),
            ev("$pageview", "b", "2024-03-01T12:00:00Z"),
            ev("$pageview", "c", "2024-01-15T12:00:00Z"),
        ]
    )
    r = env.query(spec(date_to="2024-03-15", period="month", intervals=3))
    assert dates(r) == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert table(r) == [[2, 1, 1], [2, 2, 0], [2, 0, 0]]


def test_month_period_across_a_year_end(env: Env) -> None:
    env.load([ev("$pageview", "x", "2023-12-01T00:00:00Z"), ev("$pageview", "x", "2024-01-31T00:00:00Z")])
    r = env.query(spec(date_from="2023-12-01", date_to="2024-01-10", period="month", intervals=2))
    assert dates(r) == ["2023-12-01", "2024-01-01"]
    assert table(r) == [[1, 1], [1, 0]]


def test_hour_period(env: Env) -> None:
    # date_to Mar 1 (a date) -> its last hour 23:00 is the last cohort: 21:00, 22:00, 23:00.
    # 21h: {a}; a at 22:00 (+1) and 23:10 (+2)     -> [1, 1, 1]
    # 22h: {a, b}; both at 23h                     -> [2, 2, 0]
    # 23h: {a, b}                                  -> [2, 0, 0]
    env.load(
        [
            ev("$pageview", "a", "2024-03-01T21:59:00Z"),
            ev("$pageview", "a", "2024-03-01T22:00:00Z"),
            ev("$pageview", "a", "2024-03-01T23:10:00Z"),
            ev("$pageview", "b", "2024-03-01T22:30:00Z"),
            ev("$pageview", "b", "2024-03-01T23:59:59Z"),
        ]
    )
    r = env.query(spec(date_from="2024-03-01", date_to="2024-03-01", period="hour", intervals=3))
    assert dates(r) == ["2024-03-01T21:00:00", "2024-03-01T22:00:00", "2024-03-01T23:00:00"]
    assert table(r) == [[1, 1, 1], [2, 2, 0], [2, 0, 0]]
    # A datetime date_to is an exclusive end: 23:00 means the last hour is 22:00.
    r2 = env.query(spec(date_from="2024-03-01", date_to="2024-03-01T23:00:00", period="hour", intervals=2))
    assert dates(r2) == ["2024-03-01T21:00:00", "2024-03-01T22:00:00"]
    assert table(r2) == [[1, 1], [2, 0]]


# ---- first-time, events, identity, timezone ---------------------------------------------------------------


def test_first_time_uses_first_ever_start_event(env: Env) -> None:
    env.load(
        [
            ev("$pageview", "a", "2024-02-20T12:00:00Z"),  # a's first ever: before the first cohort
            ev("$pageview", "a", "2024-03-03T12:00:00Z"),
            ev("$pageview", "a", "2024-03-04T12:00:00Z"),
            ev("$pageview", "b", "2024-03-03T12:00:00Z"),
            ev("$pageview", "b", "2024-03-05T12:00:00Z"),
            ev("$pageview", "c", "2024-03-04T08:00:00Z"),
            ev("$pageview", "c", "2024-03-04T09:00:00Z"),
            ev("$pageview", "c", "2024-03-05T09:00:00Z"),
        ]
    )
    base = spec(date_to="2024-03-05", intervals=3)
    # first_time: a is in no cohort; Mar 3 {b}, back +2 -> [1, 0, 1]; Mar 4 {c}, back +1 -> [1, 1, 0]; Mar 5 {}
    assert table(env.query({**base, "retention_type": "first_time"})) == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    # recurring: Mar 3 {a, b}: +1 a, +2 b; Mar 4 {a, c}: +1 c; Mar 5 {b, c}
    assert table(env.query(base)) == [[2, 1, 1], [2, 1, 0], [2, 0, 0]]


def test_first_time_with_distinct_start_and_return_events(env: Env) -> None:
    # b's pageview before signing up is not a return; a second signup does not make a second cohort.
    env.load(
        [
            ev("signup", "a", "2024-03-01T12:00:00Z"),
            ev("signup", "a", "2024-03-02T12:00:00Z"),
            ev("$pageview", "a", "2024-03-03T12:00:00Z"),
            ev("$pageview", "b", "2024-03-01T12:00:00Z"),
            ev("signup", "b", "2024-03-02T12:00:00Z"),
        ]
    )
    r = env.query(spec(date_to="2024-03-03", intervals=3, start_event="signup", retention_type="first_time"))
    assert table(r) == [[1, 0, 1], [1, 0, 0], [0, 0, 0]]


def test_any_event_as_start_or_return(env: Env) -> None:
    env.load([ev("signup", "a", "2024-03-01T12:00:00Z"), ev("anything", "a", "2024-03-02T12:00:00Z")])
    base = spec(date_to="2024-03-02", intervals=2)
    assert table(env.query({**base, "start_event": "signup", "return_event": None})) == [[1, 1], [0, 0]]
    assert table(env.query({**base, "start_event": None, "return_event": None})) == [[1, 1], [1, 0]]
    # the default events are $pageview: nothing here
    assert table(env.query(base)) == [[0, 0], [0, 0]]


def test_unknown_events_give_zero_rows_of_the_right_shape(env: Env) -> None:
    env.load([ev("$pageview", "a", "2024-03-01T12:00:00Z")])
    r = env.query(spec(date_to="2024-03-04", period="week", intervals=4, start_event="never"))
    assert dates(r) == ["2024-02-12", "2024-02-19", "2024-02-26", "2024-03-04"]
    assert table(r) == [[0] * 4 for _ in range(4)]


def test_identity_merge_joins_the_anonymous_past(env: Env) -> None:
    env.load(
        [ev("$pageview", "anon-1", "2024-03-01T12:00:00Z"), ev("$pageview", "user-1", "2024-03-02T12:00:00Z")]
    )
    base = spec(date_to="2024-03-03", intervals=3)
    assert table(env.query(base)) == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    env.load([ev("$identify", "user-1", "2024-03-20T00:00:00Z", **{"$anon_distinct_id": "anon-1"})])
    assert table(env.query(base)) == [[1, 1, 0], [1, 0, 0], [0, 0, 0]]


def test_timezone_moves_events_across_midnight(env_ny: Env) -> None:
    # 03:00 UTC Mar 2 is 22:00 Mar 1 in New York; 15:00 UTC Mar 2 is 10:00 Mar 2.
    env_ny.load([ev("$pageview", "a", "2024-03-02T03:00:00Z"), ev("$pageview", "a", "2024-03-02T15:00:00Z")])
    base = spec(date_to="2024-03-02", intervals=2)
    assert table(env_ny.query(base)) == [[1, 1], [1, 0]]
    assert table(env_ny.query({**base, "timezone": "UTC"})) == [[0, 0], [1, 0]]


# ---- filters and breakdowns --------------------------------------------------------------------------------


def test_filters_apply_to_start_and_return_events(env: Env) -> None:
    env.load(
        [
            ev("signup", "a", "2024-03-01T12:00:00Z", plan="pro"),
            ev("login", "a", "2024-03-02T12:00:00Z", plan="free"),
            ev("signup", "b", "2024-03-01T12:00:00Z", plan="pro"),
            ev("login", "b", "2024-03-02T12:00:00Z", plan="pro"),
        ]
    )
    r = env.query(
        spec(
            date_to="2024-03-02",
            intervals=2,
            start_event="signup",
            return_event="login",
            filters=[{"key": "plan", "value": "pro"}],
        )
    )
    assert table(r) == [[2, 1], [0, 0]]


def test_event_breakdown_uses_the_start_events_property(env: Env) -> None:
    env.load(
        [
            ev("signup", "a", "2024-03-01T12:00:00Z", plan="pro"),
            ev("login", "a", "2024-03-02T12:00:00Z", plan="free"),  # the return's own value does not matter
            ev("signup", "b", "2024-03-01T12:00:00Z", plan="free"),
            ev("signup", "c", "2024-03-01T12:00:00Z"),
            ev("login", "c", "2024-03-02T12:00:00Z"),
            ev("signup", "d", "2024-03-02T12:00:00Z", plan="pro"),
        ]
    )
    r = env.query(
        spec(
            date_to="2024-03-02",
            intervals=2,
            start_event="signup",
            return_event="login",
            breakdown={"key": "plan"},
        )
    )
    assert [x["breakdown_value"] for x in r["results"]] == ["pro", "free", "$none"]  # pro has 2 persons
    assert by_value(r) == {"pro": [[1, 1], [1, 0]], "free": [[1, 0], [0, 0]], "$none": [[1, 1], [0, 0]]}
    assert all(dates(x) == ["2024-03-01", "2024-03-02"] for x in r["results"])


def test_person_breakdown(env: Env) -> None:
    env.load(
        [
            {
                "event": "$pageview",
                "distinct_id": "a",
                "timestamp": "2024-03-01T12:00:00Z",
                "$set": {"plan": "pro"},
            },
            ev("$pageview", "a", "2024-03-02T12:00:00Z"),
            {
                "event": "$pageview",
                "distinct_id": "b",
                "timestamp": "2024-03-02T12:00:00Z",
                "$set": {"plan": "free"},
            },
        ]
    )
    r = env.query(spec(date_to="2024-03-02", intervals=2, breakdown={"key": "plan", "type": "person"}))
    assert by_value(r) == {"free": [[0, 0], [1, 0]], "pro": [[1, 1], [1, 0]]}


# ---- spec errors and SQL portability -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"intervals": 0}, "intervals"),
        ({"period": "year"}, "period"),
        ({"retention_type": "x"}, "retention_type"),
    ],
)
def test_spec_errors_name_the_field(env: Env, bad: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        env.query(spec(date_to="2024-03-02", **bad))
    assert field in str(err.value)


@pytest.mark.parametrize("unit", ["hour", "day", "week", "month"])
def test_periods_between_is_defined_for_both_dialects(unit: str) -> None:
    for dialect in DIALECTS.values():
        assert "a" in dialect.periods_between(unit, "a", "b")


# ---- property test against the naive reference ----------------------------------------------------------------

# per period: how far back events are spread, and candidate end dates of the range
SPREAD = {
    "hour": timedelta(hours=40),
    "day": timedelta(days=12),
    "week": timedelta(days=60),
    "month": timedelta(days=200),
}
# 2024-03-10 and 2024-11-03 are DST changes in New York
ENDS = [datetime(2024, 3, 10, 12), datetime(2024, 11, 3, 4), datetime(2024, 12, 31, 23)]
TZS = ["UTC", "America/New_York", "Asia/Kolkata"]


@st.composite
def logs(draw: st.DrawFn, end: datetime, spread: timedelta) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seconds = int(spread.total_seconds())
    ids = [f"u{i}" for i in range(5)]
    for i in range(draw(st.integers(0, 40))):
        # counted back from just after the end: small draws (hypothesis favours them) land in the cohorts
        ts = end + timedelta(hours=30) - timedelta(minutes=draw(st.integers(0, seconds // 60)))
        props: dict[str, Any] = {}
        plan = draw(st.sampled_from([None, "a", "b"]))
        if plan is not None:
            props["plan"] = plan
        name = draw(st.sampled_from(["x", "x", "y", "$identify"]))
        if name == "$identify":
            props["$anon_distinct_id"] = draw(st.sampled_from(ids))
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


_counter = itertools.count()


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = Workspace.init(tmp_path_factory.mktemp("retention") / "ws")
    yield ws
    ws.close()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_retention_matches_reference(shared_ws: Workspace, data: st.DataObject) -> None:
    period = data.draw(st.sampled_from(["hour", "day", "week", "month"]))
    end = data.draw(st.sampled_from(ENDS))
    rows = data.draw(logs(end, SPREAD[period]))
    tz = data.draw(st.sampled_from(TZS))
    week_start = data.draw(st.sampled_from(["monday", "sunday"]))
    date_to: date | datetime = data.draw(st.sampled_from([end.date(), end]))
    opts: dict[str, Any] = {
        "period": period,
        "intervals": data.draw(st.integers(1, 5)),
        "start_event": data.draw(st.sampled_from([None, "x"])),
        "return_event": data.draw(st.sampled_from([None, "x", "y"])),
        "retention_type": data.draw(st.sampled_from(["recurring", "first_time"])),
        "cumulative": data.draw(st.booleans()),
    }
    plan = data.draw(st.sampled_from([None, None, "a"]))
    breakdown = data.draw(st.sampled_from([None, "plan"]))

    env = Env(shared_ws, shared_ws.create_project(f"p{next(_counter)}", tz, week_start))
    if rows:
        env.load(rows)
    q: dict[str, Any] = {**spec(date_from="2020-01-01", date_to=date_to.isoformat()), **opts}
    if plan is not None:
        q["filters"] = [{"key": "plan", "value": plan}]
    if breakdown is not None:
        q["breakdown"] = {"key": breakdown}
    got = env.query(q)
    expected = retention(rows, tz, week_start, date_to=date_to, plan=plan, breakdown_key=breakdown, **opts)
    labels = cohort_labels(date_to, period, opts["intervals"], week_start)
    zero = [[0] * opts["intervals"] for _ in range(opts["intervals"])]
    results = got["results"] if breakdown else [{"breakdown_value": "", **got}]
    for r in results:
        assert dates(r) == labels
        assert table(r) == expected.get(r["breakdown_value"], zero), r["breakdown_value"]
    assert {k for k, t in expected.items() if t != zero} <= {r["breakdown_value"] for r in results}
