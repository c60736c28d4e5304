"""Feature adoption: hand-worked scenarios and a property test against the naive reference."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.compute.spec import FeatureAdoptionSpec, parse_spec
from kpilot.errors import SpecError
from tests.conftest import Env, ev
from tests.reference.adoption import reference_adoption
from tests.reference.events import Log
from tests.usage_logs import TIMEZONES, approx_equal, fresh_env, usage_cases

# 2024-03-04 is a Monday.
WEEKS = {"kind": "feature_adoption", "event": "f", "date_from": "2024-03-04", "date_to": "2024-03-17"}


def rows(result: dict[str, Any]) -> list[tuple[str, int, int, float]]:
    return [(p["date"], p["adopters"], p["active"], p["value"]) for p in result["series"]]


def test_share_of_active_persons_who_used_the_feature_per_week(env: Env) -> None:
    # week of Mar 4: a, b, c active; a and b used f -> 2/3. Week of Mar 11: nobody -> 0 / 0 -> 0.0.
    env.load(
        [
            ev("f", "a", "2024-03-04T10:00:00Z"),
            ev("x", "b", "2024-03-05T10:00:00Z"),
            ev("f", "b", "2024-03-10T23:00:00Z"),
            ev("x", "c", "2024-03-06T10:00:00Z"),
        ]
    )
    assert rows(env.query(WEEKS)) == [("2024-03-04", 2, 3, 2 / 3), ("2024-03-11", 0, 0, 0.0)]


def test_with_an_active_event_adopters_are_counted_among_active_persons_only(env: Env) -> None:
    # a logs in and uses f (adopter); b uses f without logging in (not active, so not counted);
    # c only logs in. Active = {a, c}, adopters = {a} -> 1/2.
    env.load(
        [
            ev("login", "a", "2024-03-04T10:00:00Z"),
            ev("f", "a", "2024-03-04T10:05:00Z"),
            ev("f", "b", "2024-03-04T10:00:00Z"),
            ev("login", "c", "2024-03-05T10:00:00Z"),
        ]
    )
    r = env.query({**WEEKS, "date_to": "2024-03-10", "active_event": "login"})
    assert rows(r) == [("2024-03-04", 1, 2, 0.5)]
    # with any event as activity b counts as active and as adopter: 2 adopters among 3 active
    assert rows(env.query({**WEEKS, "date_to": "2024-03-10"})) == [("2024-03-04", 2, 3, 2 / 3)]


def test_adoption_is_per_interval(env: Env) -> None:
    # a uses f on Mar 4 and is only active (x) on Mar 5: day 1 = 1/1, day 2 = 0/1, day 3 = 0/0.
    env.load([ev("f", "a", "2024-03-04T10:00:00Z"), ev("x", "a", "2024-03-05T10:00:00Z")])
    r = env.query({**WEEKS, "date_to": "2024-03-06", "interval": "day"})
    assert rows(r) == [("2024-03-04", 1, 1, 1.0), ("2024-03-05", 0, 1, 0.0), ("2024-03-06", 0, 0, 0.0)]


def test_month_interval_covers_partial_months(env: Env) -> None:
    env.load([ev("f", "a", "2024-02-29T10:00:00Z"), ev("x", "b", "2024-03-01T10:00:00Z")])
    r = env.query({**WEEKS, "date_from": "2024-02-15", "date_to": "2024-03-05", "interval": "month"})
    assert rows(r) == [("2024-02-01", 1, 1, 1.0), ("2024-03-01", 0, 1, 0.0)]


def test_local_time_decides_the_interval(env_ny: Env) -> None:
    # 03:00Z on Mar 4 is 22:00 on Sunday Mar 3 in New York: the week starting Feb 26.
    env_ny.load([ev("f", "a", "2024-03-04T03:00:00Z")])
    r = env_ny.query({**WEEKS, "date_from": "2024-03-01"})
    assert rows(r) == [("2024-02-26", 1, 1, 1.0), ("2024-03-04", 0, 0, 0.0), ("2024-03-11", 0, 0, 0.0)]


def test_week_start_sunday(workspace: Any) -> None:
    env = Env(workspace, workspace.create_project("sun", "UTC", "sunday"))
    # Sunday Mar 10 opens a new week when weeks start on Sunday.
    env.load([ev("f", "a", "2024-03-09T10:00:00Z"), ev("x", "a", "2024-03-10T10:00:00Z")])
    r = env.query({**WEEKS, "date_from": "2024-03-03", "date_to": "2024-03-16"})
    assert rows(r) == [("2024-03-03", 1, 1, 1.0), ("2024-03-10", 0, 1, 0.0)]


def test_identity_merge_makes_the_anonymous_usage_count_for_the_user(env: Env) -> None:
    env.load([ev("f", "anon", "2024-03-04T10:00:00Z"), ev("login", "user", "2024-03-04T11:00:00Z")])
    spec = {**WEEKS, "date_to": "2024-03-10", "active_event": "login"}
    assert rows(env.query(spec)) == [("2024-03-04", 0, 1, 0.0)]
    env.load([ev("$identify", "user", "2024-04-01T00:00:00Z", **{"$anon_distinct_id": "anon"})])
    assert rows(env.query(spec)) == [("2024-03-04", 1, 1, 1.0)]


def test_unknown_feature_event_gives_zero_adoption(env: Env) -> None:
    env.load([ev("x", "a", "2024-03-04T10:00:00Z")])
    r = env.query({**WEEKS, "event": "never", "date_to": "2024-03-10"})
    assert rows(r) == [("2024-03-04", 0, 1, 0.0)]
    r = env.query({**WEEKS, "date_to": "2024-03-10", "active_event": "never"})
    assert rows(r) == [("2024-03-04", 0, 0, 0.0)]


def test_filters_apply_to_feature_and_active_events(env: Env) -> None:
    # only plan=pro events count: a (f, pro) adopts; b's f is free so b is not active at all; c is active.
    env.load(
        [
            ev("f", "a", "2024-03-04T10:00:00Z", plan="pro"),
            ev("f", "b", "2024-03-04T10:00:00Z", plan="free"),
            ev("x", "c", "2024-03-04T10:00:00Z", plan="pro"),
        ]
    )
    r = env.query({**WEEKS, "date_to": "2024-03-10", "filters": [{"key": "plan", "value": "pro"}]})
    assert rows(r) == [("2024-03-04", 1, 2, 0.5)]


def test_breakdown_counts_within_each_value(env: Env) -> None:
    # pro: a used f and was active (f itself); free: a was active (x) and b used f -> active {a, b}, adopters {b}.
    env.load(
        [
            ev("f", "a", "2024-03-04T10:00:00Z", plan="pro"),
            ev("x", "a", "2024-03-04T11:00:00Z", plan="free"),
            ev("f", "b", "2024-03-04T10:00:00Z", plan="free"),
            ev("x", "c", "2024-03-04T10:00:00Z"),
        ]
    )
    r = env.query({**WEEKS, "date_to": "2024-03-10", "breakdown": {"key": "plan"}})
    got = {x["breakdown_value"]: rows(x) for x in r["results"]}
    assert got == {
        "free": [("2024-03-04", 1, 2, 0.5)],
        "pro": [("2024-03-04", 1, 1, 1.0)],
        "$none": [("2024-03-04", 0, 1, 0.0)],
    }
    assert [x["breakdown_value"] for x in r["results"]] == ["free", "pro", "$none"]


def test_spec_validation() -> None:
    with pytest.raises(SpecError, match="event"):
        parse_spec({**WEEKS, "event": ""})
    with pytest.raises(SpecError, match="interval"):
        parse_spec({**WEEKS, "interval": "hour"})


@settings(max_examples=40, deadline=None)
@given(
    case=usage_cases(),
    tz=TIMEZONES,
    event=st.sampled_from(["click", "buy", "zzz"]),
    active_event=st.sampled_from([None, "$pageview", "click"]),
    interval=st.sampled_from(["day", "week", "month"]),
    breakdown=st.sampled_from([None, {"key": "plan"}, {"key": "plan", "limit": 1}]),
    filters=st.sampled_from([[], [{"key": "plan", "operator": "is_set"}]]),
    week_start=st.sampled_from(["monday", "sunday"]),
)
def test_adoption_matches_reference(
    case: tuple[Log, tuple[date, date]],
    tz: str,
    event: str,
    active_event: str | None,
    interval: str,
    breakdown: dict[str, Any] | None,
    filters: list[dict[str, Any]],
    week_start: str,
) -> None:
    log, (first, last) = case
    raw = {
        "kind": "feature_adoption",
        "event": event,
        "active_event": active_event,
        "date_from": first.isoformat(),
        "date_to": last.isoformat(),
        "interval": interval,
        "breakdown": breakdown,
        "filters": filters,
    }
    spec = parse_spec(raw)
    assert isinstance(spec, FeatureAdoptionSpec)
    with fresh_env(log, tz, week_start) as env:
        got = env.query(raw)
    expected = reference_adoption(log, tz, spec, week_start)
    assert approx_equal(got, expected), (got, expected)
