"""Time to value: hand-worked scenarios and a property test against the naive reference."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.compute.spec import TimeToValueSpec, parse_spec
from kpilot.errors import SpecError
from tests.conftest import Env, ev
from tests.reference.events import Log
from tests.reference.time_to_value import quantile, reference_time_to_value
from tests.usage_logs import TIMEZONES, approx_equal, fresh_env, usage_cases

# 2024-03-04 is a Monday; the default cohort interval is the week and the default window 7 days.
SPEC = {
    "kind": "time_to_value",
    "signup_event": "signup",
    "value_event": "value",
    "date_from": "2024-03-04",
    "date_to": "2024-03-10",
}
HOUR = 3600
DAY = 24 * HOUR


def test_cohort_counts_censored_persons_and_quantiles(env: Env) -> None:
    # a: signup Mar 4 10:00, value 10:30 -> 1800 s (within 7 days).
    # b: signup Mar 5 00:00, value Mar 15 00:00 (after the range: still reached "by now") -> 10 days, not within.
    # c: signup Mar 6, never reaches value: censored, still one of the cohort's persons.
    env.load(
        [
            ev("signup", "a", "2024-03-04T10:00:00Z"),
            ev("value", "a", "2024-03-04T10:30:00Z"),
            ev("signup", "b", "2024-03-05T00:00:00Z"),
            ev("value", "b", "2024-03-15T00:00:00Z"),
            ev("signup", "c", "2024-03-06T00:00:00Z"),
        ]
    )
    r = env.query(SPEC)
    # median of {1800, 864000} = 432900; p75 = 1800 + 0.75 * (864000 - 1800) = 648450
    expected = {
        "date": "2024-03-04",
        "persons": 3,
        "reached": 2,
        "reached_within_window": 1,
        "share_within_window": 1 / 3,
        "median_seconds": 432900.0,
        "p75_seconds": 648450.0,
    }
    assert r["cohorts"] == [expected]
    assert r["totals"] == {k: v for k, v in expected.items() if k != "date"}


def test_first_ever_signup_defines_the_cohort(env: Env) -> None:
    # d first signed up before the range: not in it, although d signs up again inside it.
    # e signs up twice inside the range: time is measured from the first signup (Mar 4 -> Mar 6 = 2 days).
    env.load(
        [
            ev("signup", "d", "2024-02-20T00:00:00Z"),
            ev("signup", "d", "2024-03-05T00:00:00Z"),
            ev("value", "d", "2024-03-05T01:00:00Z"),
            ev("signup", "e", "2024-03-04T00:00:00Z"),
            ev("signup", "e", "2024-03-06T00:00:00Z"),
            ev("value", "e", "2024-03-06T00:00:00Z"),
        ]
    )
    t = env.query(SPEC)["totals"]
    assert (t["persons"], t["reached"], t["median_seconds"]) == (1, 1, 2.0 * DAY)


def test_value_events_before_the_signup_are_ignored(env: Env) -> None:
    # f did the value event before signing up (ignored) and again an hour after: 3600 s.
    # g's value event is at the very signup instant: 0 s.
    env.load(
        [
            ev("value", "f", "2024-03-03T00:00:00Z"),
            ev("signup", "f", "2024-03-04T10:00:00Z"),
            ev("value", "f", "2024-03-04T11:00:00Z"),
            ev("signup", "g", "2024-03-04T10:00:00Z"),
            ev("value", "g", "2024-03-04T10:00:00Z"),
        ]
    )
    t = env.query(SPEC)["totals"]
    assert (t["reached"], t["median_seconds"], t["p75_seconds"]) == (2, 1800.0, 2700.0)


def test_window_is_inclusive(env: Env) -> None:
    # exactly 7 days counts as within the window; 7 days and 1 second does not.
    env.load(
        [
            ev("signup", "a", "2024-03-04T00:00:00Z"),
            ev("value", "a", "2024-03-11T00:00:00Z"),
            ev("signup", "b", "2024-03-04T00:00:00Z"),
            ev("value", "b", "2024-03-11T00:00:01Z"),
        ]
    )
    t = env.query(SPEC)["totals"]
    assert (t["reached"], t["reached_within_window"], t["share_within_window"]) == (2, 1, 0.5)
    hours = env.query({**SPEC, "window": {"value": 169, "unit": "hour"}})["totals"]
    assert hours["reached_within_window"] == 2


def test_cohorts_by_day_and_empty_cohorts(env: Env) -> None:
    env.load(
        [
            ev("signup", "a", "2024-03-04T10:00:00Z"),
            ev("value", "a", "2024-03-04T10:00:10Z"),
            ev("signup", "b", "2024-03-06T10:00:00Z"),
        ]
    )
    r = env.query({**SPEC, "date_to": "2024-03-06", "cohort_interval": "day"})
    assert [(c["date"], c["persons"], c["reached"], c["median_seconds"]) for c in r["cohorts"]] == [
        ("2024-03-04", 1, 1, 10.0),
        ("2024-03-05", 0, 0, None),
        ("2024-03-06", 1, 0, None),
    ]
    assert r["cohorts"][1]["share_within_window"] is None
    assert r["cohorts"][2]["share_within_window"] == 0.0


def test_local_time_decides_the_cohort_and_real_time_the_duration(env_ny: Env) -> None:
    # 03:00Z Mar 4 is 22:00 Sunday Mar 3 in New York: cohort week Feb 26.
    # Across the DST jump on Mar 10: 06:50Z (01:50 EST) to 07:10Z (03:10 EDT) is 1200 s, not 80 minutes.
    env_ny.load(
        [
            ev("signup", "a", "2024-03-04T03:00:00Z"),
            ev("value", "a", "2024-03-04T04:00:00Z"),
            ev("signup", "b", "2024-03-10T06:50:00Z"),
            ev("value", "b", "2024-03-10T07:10:00Z"),
        ]
    )
    r = env_ny.query({**SPEC, "date_from": "2024-03-01"})
    assert [(c["date"], c["persons"], c["median_seconds"]) for c in r["cohorts"]] == [
        ("2024-02-26", 1, 3600.0),
        ("2024-03-04", 1, 1200.0),
    ]


def test_identity_merge_links_anonymous_signup_to_the_users_value(env: Env) -> None:
    env.load([ev("signup", "anon", "2024-03-04T10:00:00Z"), ev("value", "user", "2024-03-05T10:00:00Z")])
    before = env.query(SPEC)["totals"]
    assert (before["persons"], before["reached"]) == (1, 0)
    env.load([ev("$identify", "user", "2024-03-20T00:00:00Z", **{"$anon_distinct_id": "anon"})])
    after = env.query(SPEC)["totals"]
    assert (after["persons"], after["reached"], after["median_seconds"]) == (1, 1, float(DAY))


def test_breakdown_uses_the_first_signup_event(env: Env) -> None:
    env.load(
        [
            ev("signup", "a", "2024-03-04T10:00:00Z", plan="pro"),
            ev("signup", "a", "2024-03-05T10:00:00Z", plan="free"),
            ev("value", "a", "2024-03-04T11:00:00Z"),
            ev("signup", "b", "2024-03-04T10:00:00Z", plan="free"),
            ev("signup", "c", "2024-03-04T10:00:00Z"),
        ]
    )
    r = env.query({**SPEC, "breakdown": {"key": "plan"}})
    got = {x["breakdown_value"]: (x["totals"]["persons"], x["totals"]["reached"]) for x in r["results"]}
    # top values by persons among signup events: free (a, b), pro (a)
    assert [x["breakdown_value"] for x in r["results"]] == ["free", "pro", "$none"]
    assert got == {"free": (1, 0), "pro": (1, 1), "$none": (1, 0)}


def test_filters_apply_to_signup_and_value_events(env: Env) -> None:
    # with plan=pro only a's pro signup and pro value count: 2 hours instead of 1.
    env.load(
        [
            ev("signup", "a", "2024-03-04T10:00:00Z", plan="pro"),
            ev("value", "a", "2024-03-04T11:00:00Z"),
            ev("value", "a", "2024-03-04T12:00:00Z", plan="pro"),
            ev("signup", "b", "2024-03-04T10:00:00Z"),
        ]
    )
    assert env.query(SPEC)["totals"]["median_seconds"] == 3600.0
    t = env.query({**SPEC, "filters": [{"key": "plan", "value": "pro"}]})["totals"]
    assert (t["persons"], t["median_seconds"]) == (1, 7200.0)


def test_unknown_events(env: Env) -> None:
    env.load([ev("signup", "a", "2024-03-04T10:00:00Z")])
    t = env.query({**SPEC, "value_event": "never"})["totals"]
    assert (t["persons"], t["reached"], t["share_within_window"], t["median_seconds"]) == (1, 0, 0.0, None)
    empty = env.query({**SPEC, "signup_event": "never"})
    assert empty["totals"] == {
        "persons": 0,
        "reached": 0,
        "reached_within_window": 0,
        "share_within_window": None,
        "median_seconds": None,
        "p75_seconds": None,
    }
    assert [c["persons"] for c in empty["cohorts"]] == [0]


def test_spec_validation() -> None:
    with pytest.raises(SpecError, match="value_event must differ"):
        parse_spec({**SPEC, "value_event": "signup"})
    with pytest.raises(SpecError, match="window"):
        parse_spec({**SPEC, "window": {"value": 0}})


def test_reference_quantile_is_linear_interpolation() -> None:
    assert quantile([], 0.5) is None
    assert quantile([5.0], 0.75) == 5.0
    assert quantile([1.0, 2.0, 10.0], 0.75) == 6.0  # position 1.5: halfway from 2 to 10


@settings(max_examples=40, deadline=None)
@given(
    case=usage_cases(),
    tz=TIMEZONES,
    signup=st.sampled_from(["signup", "$pageview"]),
    value=st.sampled_from(["value", "click", "zzz"]),
    cohort_interval=st.sampled_from(["day", "week", "month"]),
    window=st.sampled_from(
        [{"value": 30, "unit": "minute"}, {"value": 1, "unit": "hour"}, {"value": 1, "unit": "day"}]
    ),
    breakdown=st.sampled_from([None, {"key": "plan"}, {"key": "plan", "limit": 1}]),
    filters=st.sampled_from([[], [{"key": "plan", "operator": "is_set"}]]),
    week_start=st.sampled_from(["monday", "sunday"]),
)
def test_time_to_value_matches_reference(
    case: tuple[Log, tuple[date, date]],
    tz: str,
    signup: str,
    value: str,
    cohort_interval: str,
    window: dict[str, Any],
    breakdown: dict[str, Any] | None,
    filters: list[dict[str, Any]],
    week_start: str,
) -> None:
    log, (first, last) = case
    raw = {
        "kind": "time_to_value",
        "signup_event": signup,
        "value_event": value,
        "date_from": first.isoformat(),
        "date_to": last.isoformat(),
        "cohort_interval": cohort_interval,
        "window": window,
        "breakdown": breakdown,
        "filters": filters,
    }
    spec = parse_spec(raw)
    assert isinstance(spec, TimeToValueSpec)
    with fresh_env(log, tz, week_start) as env:
        got = env.query(raw)
    expected = reference_time_to_value(log, tz, spec, week_start)
    assert approx_equal(got, expected), (got, expected)
