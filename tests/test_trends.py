"""Trends: hand-worked scenarios for every math, interval, timezone, breakdown and compare."""

from __future__ import annotations

import pytest

from tests.conftest import Env, ev, values


def test_dau_counts_persons_per_day_including_events_before_merge(env: Env) -> None:
    env.load(
        [
            ev("$pageview", "anon-1", "2024-03-01T09:00:00Z"),
            ev("$pageview", "user-1", "2024-03-01T10:00:00Z"),
            ev("$pageview", "user-2", "2024-03-02T10:00:00Z"),
            ev("$pageview", "user-2", "2024-03-02T11:00:00Z"),
        ]
    )
    spec = {"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-03", "math": "dau"}
    assert values(env.query(spec)) == [2, 1, 0]
    # anon-1 turns out to be user-1: day 1 now has one person.
    env.load(
        [
            {
                "event": "$identify",
                "distinct_id": "user-1",
                "timestamp": "2024-03-05T00:00:00Z",
                "properties": {"$anon_distinct_id": "anon-1"},
            }
        ]
    )
    assert values(env.query(spec)) == [1, 1, 0]
    total = env.query({**spec, "math": "total"})
    assert values(total) == [2, 2, 0]


def test_rolling_wau_and_mau_windows_are_inclusive(env: Env) -> None:
    # a: active on Mar 1; b: Mar 7; c: Mar 8. WAU on Mar 7 = [Mar 1..Mar 7] = a, b -> 2; Mar 8 = [2..8] = b, c.
    env.load(
        [
            ev("x", "a", "2024-03-01T12:00:00Z"),
            ev("x", "b", "2024-03-07T12:00:00Z"),
            ev("x", "c", "2024-03-08T12:00:00Z"),
        ]
    )
    spec = {"kind": "trends", "date_from": "2024-03-06", "date_to": "2024-03-08", "math": "wau"}
    assert values(env.query(spec)) == [1, 2, 2]
    mau = env.query({**spec, "math": "mau", "date_from": "2024-03-30", "date_to": "2024-03-31"})
    # Mar 30 window = [Mar 1, Mar 30] -> a, b, c; Mar 31 window = [Mar 2, Mar 31] -> b, c.
    assert values(mau) == [3, 2]


def test_wau_on_week_interval_is_unique_per_calendar_week(env: Env) -> None:
    # 2024-03-04 is a Monday.
    env.load(
        [
            ev("x", "a", "2024-03-04T12:00:00Z"),
            ev("x", "b", "2024-03-10T12:00:00Z"),
            ev("x", "a", "2024-03-11T12:00:00Z"),
        ]
    )
    r = env.query(
        {
            "kind": "trends",
            "date_from": "2024-03-04",
            "date_to": "2024-03-17",
            "math": "wau",
            "interval": "week",
        }
    )
    assert r["series"] == [{"date": "2024-03-04", "value": 2}, {"date": "2024-03-11", "value": 1}]


def test_dau_mau_ratio(env: Env) -> None:
    env.load([ev("x", "a", "2024-03-01T12:00:00Z"), ev("x", "b", "2024-03-02T12:00:00Z")])
    r = env.query(
        {"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-03", "math": "dau_mau_ratio"}
    )
    assert values(r) == [1.0, 0.5, 0.0]


def test_project_timezone_moves_events_across_days(env_ny: Env) -> None:
    # 03:00 UTC on Mar 2 is 22:00 on Mar 1 in New York (EST, UTC-5).
    env_ny.load([ev("x", "a", "2024-03-02T03:00:00Z")])
    spec = {"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-02", "math": "total"}
    assert values(env_ny.query(spec)) == [1, 0]
    assert values(env_ny.query({**spec, "timezone": "UTC"})) == [0, 1]


def test_hour_and_month_intervals(env: Env) -> None:
    env.load(
        [
            ev("x", "a", "2024-01-31T10:15:00Z"),
            ev("x", "a", "2024-01-31T10:45:00Z"),
            ev("x", "b", "2024-02-01T00:00:00Z"),
        ]
    )
    month = env.query(
        {"kind": "trends", "date_from": "2024-01-15", "date_to": "2024-02-10", "interval": "month"}
    )
    assert month["series"] == [{"date": "2024-01-01", "value": 2}, {"date": "2024-02-01", "value": 1}]
    hour = env.query(
        {
            "kind": "trends",
            "date_from": "2024-01-31",
            "date_to": "2024-01-31",
            "interval": "hour",
            "math": "unique",
        }
    )
    assert len(hour["series"]) == 24
    assert hour["series"][10] == {"date": "2024-01-31T10:00:00", "value": 1}


def test_unknown_event_gives_zeros(env: Env) -> None:
    env.load([ev("x", "a", "2024-03-01T12:00:00Z")])
    r = env.query({"kind": "trends", "event": "never", "date_from": "2024-03-01", "date_to": "2024-03-02"})
    assert values(r) == [0, 0]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"key": "plan", "value": "pro"}, 1),
        ({"key": "plan", "operator": "is_not", "value": "pro"}, 2),
        ({"key": "plan", "operator": "icontains", "value": "PR"}, 1),
        ({"key": "n", "operator": "gt", "value": 5}, 1),
        ({"key": "n", "operator": "lt", "value": 5}, 1),
        ({"key": "plan", "operator": "is_set"}, 2),
        ({"key": "plan", "operator": "is_not_set"}, 1),
        ({"key": "plan", "value": ["pro", "free"]}, 2),
    ],
)
def test_event_property_filters(env: Env, flt: dict[str, object], expected: int) -> None:
    env.load(
        [
            ev("x", "a", "2024-03-01T12:00:00Z", plan="pro", n=10),
            ev("x", "b", "2024-03-01T12:00:00Z", plan="free", n=1),
            ev("x", "c", "2024-03-01T12:00:00Z"),
        ]
    )
    r = env.query({"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-01", "filters": [flt]})
    assert values(r) == [expected]


def test_person_property_filter_and_breakdown_use_latest_set(env: Env) -> None:
    env.load(
        [
            {
                "event": "$identify",
                "distinct_id": "a",
                "timestamp": "2024-03-01T00:00:00Z",
                "$set": {"plan": "free"},
            },
            {"event": "x", "distinct_id": "a", "timestamp": "2024-03-02T00:00:00Z", "$set": {"plan": "pro"}},
            {
                "event": "x",
                "distinct_id": "b",
                "timestamp": "2024-03-01T00:00:00Z",
                "$set_once": {"plan": "free"},
            },
            {
                "event": "x",
                "distinct_id": "b",
                "timestamp": "2024-03-02T00:00:00Z",
                "$set_once": {"plan": "pro"},
            },
        ]
    )
    spec = {"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-02", "math": "dau"}
    pro = env.query({**spec, "filters": [{"key": "plan", "type": "person", "value": "pro"}]})
    assert values(pro) == [1, 1]
    by_plan = env.query({**spec, "breakdown": {"key": "plan", "type": "person"}})
    assert {r["breakdown_value"]: values(r) for r in by_plan["results"]} == {"pro": [1, 1], "free": [1, 1]}


def test_breakdown_top_n_and_other(env: Env) -> None:
    rows = [ev("x", f"u{i}", "2024-03-01T12:00:00Z", browser=b) for i, b in enumerate("aaabbc")]
    rows.append(ev("x", "u9", "2024-03-01T12:00:00Z"))
    env.load(rows)
    r = env.query(
        {
            "kind": "trends",
            "date_from": "2024-03-01",
            "date_to": "2024-03-01",
            "math": "dau",
            "breakdown": {"key": "browser", "limit": 2},
        }
    )
    assert [(x["breakdown_value"], values(x)) for x in r["results"]] == [
        ("a", [3]),
        ("b", [2]),
        ("$other", [1]),
        ("$none", [1]),
    ]


def test_compare_returns_previous_period(env: Env) -> None:
    env.load(
        [
            ev("x", "a", "2024-02-28T12:00:00Z"),
            ev("x", "a", "2024-03-01T12:00:00Z"),
            ev("x", "b", "2024-03-01T13:00:00Z"),
        ]
    )
    r = env.query({"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-02", "compare": True})
    assert r["series"] == [{"date": "2024-03-01", "value": 2}, {"date": "2024-03-02", "value": 0}]
    assert r["previous"] == [{"date": "2024-02-28", "value": 1}, {"date": "2024-02-29", "value": 0}]


def test_projects_are_isolated(env: Env) -> None:
    other = env.other_project()
    other.load([ev("x", "a", "2024-03-01T12:00:00Z")])
    spec = {"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-01"}
    assert values(env.query(spec)) == [0]
    assert values(other.query(spec)) == [1]
