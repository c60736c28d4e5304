"""Sessions: hand-worked scenarios for every rule, and a property test against the naive reference."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import DIALECTS
from kpilot.compute.queries.sessions import sessions_sql
from kpilot.compute.spec import SessionsSpec, parse_spec
from kpilot.errors import SpecError
from tests.conftest import Env, ev
from tests.reference.events import Log
from tests.reference.sessions import reference_sessions
from tests.usage_logs import TIMEZONES, approx_equal, fresh_env, usage_cases

DAY = {"kind": "sessions", "date_from": "2024-03-01", "date_to": "2024-03-01"}


def every(minutes: int, start: str, count: int, who: str = "a", event: str = "x") -> list[dict[str, Any]]:
    t0 = datetime.fromisoformat(start)
    return [ev(event, who, (t0 + timedelta(minutes=minutes * i)).isoformat() + "Z") for i in range(count)]


def totals(env: Env, **spec: Any) -> dict[str, Any]:
    out: dict[str, Any] = env.query({**DAY, **spec})["totals"]
    return out


# ---- splitting ------------------------------------------------------------------------------------------


def test_gap_of_exactly_the_inactivity_timeout_keeps_the_session(env: Env) -> None:
    # a: 10:00, 10:30 (gap 30:00, same session), 11:00:01 (gap 30:01, new session)
    # -> sessions [10:00..10:30] = 1800 s and [11:00:01] = 0 s.
    env.load(
        [
            ev("x", "a", "2024-03-01T10:00:00Z"),
            ev("x", "a", "2024-03-01T10:30:00Z"),
            ev("x", "a", "2024-03-01T11:00:01Z"),
        ]
    )
    t = totals(env)
    assert (t["sessions"], t["persons"], t["avg_duration_seconds"], t["median_duration_seconds"]) == (
        2,
        1,
        900.0,
        900.0,
    )
    assert t["sessions_per_person"] == 2.0
    # with a 29-minute timeout every gap splits: three 0 s sessions
    assert totals(env, inactivity_minutes=29)["sessions"] == 3
    # with 31 minutes all three events are one session of 3601 s
    assert totals(env, inactivity_minutes=31)["avg_duration_seconds"] == 3601.0


def test_24h_cap_cuts_a_session_after_24_hours(env: Env) -> None:
    # an event every 20 minutes from Mar 1 00:00 to Mar 2 02:00 (79 events, never 30 min idle).
    # Session 1: 00:00 .. Mar 2 00:00 (exactly 24 h after its start: still inside) = 86400 s.
    # Session 2 starts at Mar 2 00:20 (more than 24 h after 00:00) and lasts to 02:00 = 6000 s.
    env.load(every(20, "2024-03-01T00:00:00", 79))
    r = env.query({**DAY, "date_to": "2024-03-02"})
    assert [(p["date"], p["sessions"], p["avg_duration_seconds"]) for p in r["series"]] == [
        ("2024-03-01", 1, 86400.0),
        ("2024-03-02", 1, 6000.0),
    ]
    assert r["totals"]["persons"] == 1
    assert r["totals"]["sessions_per_person"] == 2.0


def test_cap_is_measured_from_each_sessions_own_start(env: Env) -> None:
    # max_hours = 1, events every 25 min: 0:00 0:25 0:50 1:15 1:40 2:05 2:30 2:55 3:20.
    # S1 starts 0:00; 1:15 is past 1:00 -> S2 starts 1:15; 2:30 is past 2:15 -> S3 starts 2:30 (to 3:20).
    # Three sessions of 50 min = 3000 s each (cutting on a fixed hourly grid would give four).
    env.load(every(25, "2024-03-01T00:00:00", 9))
    t = totals(env, max_hours=1)
    assert (t["sessions"], t["avg_duration_seconds"]) == (3, 3000.0)


def test_event_exactly_max_hours_after_the_start_stays_in_the_session(env: Env) -> None:
    # max_hours = 1: 0:00, 0:30, 1:00 (exactly 1 h: same session), 1:30 (new) -> 3600 s and 0 s.
    env.load(every(30, "2024-03-01T00:00:00", 4))
    t = totals(env, max_hours=1)
    assert (t["sessions"], t["avg_duration_seconds"], t["median_duration_seconds"]) == (2, 1800.0, 1800.0)


def test_runs_needing_too_many_cap_passes_are_refused(env: Env) -> None:
    # 210 hours without a 30-minute pause at max_hours = 1 would need 210 passes (limit 200).
    env.load(every(30, "2024-03-01T00:00:00", 421))
    with pytest.raises(SpecError, match="max_hours"):
        env.query({**DAY, "date_to": "2024-03-10", "max_hours": 1})


def test_events_at_the_same_instant_share_a_session(env: Env) -> None:
    env.load(
        [
            ev("x", "a", "2024-03-01T10:00:00Z"),
            ev("y", "a", "2024-03-01T10:00:00Z"),
            ev("x", "a", "2024-03-01T12:00:00Z"),
            ev("y", "a", "2024-03-01T12:00:00Z"),
        ]
    )
    assert totals(env)["sessions"] == 2


# ---- engagement -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "spec", "engaged"),
    [
        # duration rule alone: 11 s is longer than 10 s; 10 s is not
        ([("x", 0), ("x", 11)], {}, 1),
        ([("x", 0), ("x", 10)], {}, 0),
        ([("x", 0), ("x", 10)], {"engaged_seconds": 9}, 1),
        # key event alone: a single 0 s event counts only when it is a key event
        ([("buy", 0)], {"key_events": ["buy"]}, 1),
        ([("buy", 0)], {}, 0),
        # page/screen views alone: two of them (either name) at the same instant
        ([("$pageview", 0), ("$pageview", 0)], {}, 1),
        ([("$pageview", 0), ("$screen", 0)], {}, 1),
        ([("$pageview", 0), ("x", 0)], {}, 0),
        ([("x", 0), ("x", 0)], {"pageview_events": ["x"]}, 1),
        ([("$pageview", 0), ("$pageview", 0)], {"pageview_events": []}, 0),
        # unknown names never match
        ([("x", 0)], {"key_events": ["nope"], "pageview_events": ["nope"]}, 0),
    ],
)
def test_engaged_session_rules(
    env: Env, events: list[tuple[str, int]], spec: dict[str, Any], engaged: int
) -> None:
    t0 = datetime(2024, 3, 1, 10)
    # `n` keeps identical rows apart (the store drops exact duplicates)
    env.load(
        [
            ev(name, "a", (t0 + timedelta(seconds=s)).isoformat() + "Z", n=i)
            for i, (name, s) in enumerate(events)
        ]
    )
    t = totals(env, **spec)
    assert t["sessions"] == 1
    assert (t["engaged_sessions"], t["engagement_rate"], t["bounce_rate"]) == (
        engaged,
        float(engaged),
        1.0 - engaged,
    )


def test_engagement_and_bounce_rates(env: Env) -> None:
    # a: two pageviews (engaged); b: one click (bounce); c: click then click 60 s later (engaged)
    # -> 3 sessions, 2 engaged: engagement 2/3, bounce 1/3.
    env.load(
        [
            ev("$pageview", "a", "2024-03-01T10:00:00Z"),
            ev("$pageview", "a", "2024-03-01T10:00:05Z"),
            ev("click", "b", "2024-03-01T10:00:00Z"),
            ev("click", "c", "2024-03-01T10:00:00Z"),
            ev("click", "c", "2024-03-01T10:01:00Z"),
        ]
    )
    t = totals(env)
    assert (t["sessions"], t["engaged_sessions"]) == (3, 2)
    assert t["engagement_rate"] == pytest.approx(2 / 3)
    assert t["bounce_rate"] == pytest.approx(1 / 3)
    # durations 5, 0, 60: mean 65/3, median 5
    assert t["avg_duration_seconds"] == pytest.approx(65 / 3)
    assert t["median_duration_seconds"] == 5.0


# ---- time ----------------------------------------------------------------------------------------------------


def test_session_belongs_to_the_local_day_of_its_first_event(env_ny: Env) -> None:
    # New York is UTC-5 in early March: 04:50Z Mar 2 = 23:50 Mar 1 local, 05:10Z = 00:10 Mar 2 local.
    env_ny.load([ev("x", "a", "2024-03-02T04:50:00Z"), ev("x", "a", "2024-03-02T05:10:00Z")])
    r = env_ny.query({**DAY, "date_to": "2024-03-02"})
    assert [(p["date"], p["sessions"], p["avg_duration_seconds"]) for p in r["series"]] == [
        ("2024-03-01", 1, 1200.0),
        ("2024-03-02", 0, None),
    ]
    # in UTC both events are on Mar 2
    utc = env_ny.query({**DAY, "date_to": "2024-03-02", "timezone": "UTC"})
    assert [p["sessions"] for p in utc["series"]] == [0, 1]


def test_durations_and_gaps_use_real_time_across_daylight_saving(env_ny: Env) -> None:
    # 2024-03-10: New York clocks jump from 02:00 EST to 03:00 EDT. 06:50Z = 01:50 EST, 07:10Z = 03:10 EDT:
    # 80 minutes apart on the wall clock, 20 minutes in real time -> one session of 1200 s.
    env_ny.load([ev("x", "a", "2024-03-10T06:50:00Z"), ev("x", "a", "2024-03-10T07:10:00Z")])
    t = env_ny.query({**DAY, "date_from": "2024-03-10", "date_to": "2024-03-10"})["totals"]
    assert (t["sessions"], t["avg_duration_seconds"]) == (1, 1200.0)


def test_sessions_are_cut_at_the_range_edges(env: Env) -> None:
    # 23:50 Feb 29 and 00:10 Mar 1 form one 20-minute session, but only 00:10 is inside the range: a 0 s
    # session. Likewise 23:55 Mar 1 + 00:05 Mar 2 leaves a 0 s session at 23:55.
    env.load(
        [
            ev("x", "a", "2024-02-29T23:50:00Z"),
            ev("x", "a", "2024-03-01T00:10:00Z"),
            ev("x", "b", "2024-03-01T23:55:00Z"),
            ev("x", "b", "2024-03-02T00:05:00Z"),
        ]
    )
    t = totals(env)
    assert (t["sessions"], t["avg_duration_seconds"]) == (2, 0.0)


def test_week_and_month_intervals_and_empty_buckets(env: Env) -> None:
    # 2024-03-04 is a Monday. Sessions: Mar 3 (a), Mar 4 (a, b). Weekly buckets: Feb 26 week, Mar 4 week.
    env.load(
        [
            ev("x", "a", "2024-03-03T10:00:00Z"),
            ev("x", "a", "2024-03-04T10:00:00Z"),
            ev("x", "b", "2024-03-04T10:00:00Z"),
        ]
    )
    week = env.query({**DAY, "date_from": "2024-03-01", "date_to": "2024-03-10", "interval": "week"})
    assert [(p["date"], p["sessions"], p["persons"]) for p in week["series"]] == [
        ("2024-02-26", 1, 1),
        ("2024-03-04", 2, 2),
    ]
    assert (week["totals"]["sessions"], week["totals"]["persons"]) == (3, 2)
    assert week["totals"]["sessions_per_person"] == 1.5
    month = env.query({**DAY, "date_from": "2024-02-20", "date_to": "2024-03-12", "interval": "month"})
    assert [(p["date"], p["sessions"]) for p in month["series"]] == [("2024-02-01", 0), ("2024-03-01", 3)]
    assert month["series"][0] == {
        "date": "2024-02-01",
        "sessions": 0,
        "persons": 0,
        "avg_duration_seconds": None,
        "median_duration_seconds": None,
        "sessions_per_person": None,
        "engaged_sessions": 0,
        "engagement_rate": None,
        "bounce_rate": None,
    }


# ---- persons, breakdown, filters ----------------------------------------------------------------------------


def test_identity_merge_joins_an_anonymous_session_with_the_users(env: Env) -> None:
    env.load(
        [ev("$pageview", "anon", "2024-03-01T10:00:00Z"), ev("$pageview", "user", "2024-03-01T10:20:00Z")]
    )
    before = totals(env)
    assert (before["sessions"], before["persons"], before["engaged_sessions"]) == (2, 2, 0)
    # identified later (outside the range): one person, one 20-minute session with two pageviews.
    env.load([ev("$identify", "user", "2024-03-05T00:00:00Z", **{"$anon_distinct_id": "anon"})])
    after = totals(env)
    assert (after["sessions"], after["persons"], after["engaged_sessions"]) == (1, 1, 1)
    assert after["avg_duration_seconds"] == 1200.0


def test_breakdown_takes_the_value_of_the_sessions_first_event(env: Env) -> None:
    env.load(
        [
            ev("x", "a", "2024-03-01T10:00:00Z", plan="free"),
            ev("x", "a", "2024-03-01T10:05:00Z", plan="pro"),
            ev("x", "b", "2024-03-01T10:00:00Z", plan="pro"),
            ev("x", "c", "2024-03-01T10:00:00Z"),
            # a tie at the first instant goes to the smallest value
            ev("x", "d", "2024-03-01T10:00:00Z", plan="pro"),
            ev("y", "d", "2024-03-01T10:00:00Z", plan="free"),
        ]
    )
    r = env.query({**DAY, "breakdown": {"key": "plan"}})
    # top values by persons: pro (a, b, d), free (a, d)
    got = [(x["breakdown_value"], x["totals"]["sessions"], x["series"][0]["persons"]) for x in r["results"]]
    assert got == [("pro", 1, 1), ("free", 2, 2), ("$none", 1, 1)]
    assert r["breakdown"] == {"key": "plan", "type": "event"}


def test_filters_choose_the_events_sessions_are_built_from(env: Env) -> None:
    # without the filter: one session 10:00..10:50 (gaps 25 min). Keeping only plan=pro events leaves
    # 10:00 and 10:50, 50 minutes apart: two sessions.
    env.load(
        [
            ev("x", "a", "2024-03-01T10:00:00Z", plan="pro"),
            ev("x", "a", "2024-03-01T10:25:00Z"),
            ev("x", "a", "2024-03-01T10:50:00Z", plan="pro"),
        ]
    )
    assert totals(env)["sessions"] == 1
    assert totals(env, filters=[{"key": "plan", "value": "pro"}])["sessions"] == 2
    nothing = totals(env, filters=[{"key": "plan", "value": "nope"}])
    assert (nothing["sessions"], nothing["engagement_rate"], nothing["avg_duration_seconds"]) == (
        0,
        None,
        None,
    )


def test_spec_validation() -> None:
    with pytest.raises(SpecError, match="inactivity_minutes"):
        parse_spec({**DAY, "inactivity_minutes": 0})
    with pytest.raises(SpecError, match="key_events"):
        parse_spec({**DAY, "key_events": [""]})


def test_spark_sql_uses_spark_functions() -> None:
    spec = parse_spec({**DAY, "key_events": ["buy"]})
    assert isinstance(spec, SessionsSpec)
    sql = sessions_sql(QueryContext(1, "Europe/Paris", "monday", DIALECTS["spark"]), spec, None, 2)
    assert "percentile(duration, 0.5)" in sql
    assert "from_utc_timestamp" in sql
    assert "long2" in sql


# ---- property test ---------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    case=usage_cases(),
    tz=TIMEZONES,
    interval=st.sampled_from(["day", "week", "month"]),
    inactivity=st.sampled_from([1, 30, 45]),
    max_hours=st.sampled_from([1, 2, 24]),
    engaged_seconds=st.sampled_from([0, 10, 60]),
    key_events=st.sampled_from([[], ["buy"], ["buy", "zzz"]]),
    pageviews=st.sampled_from([None, ["click"], []]),
    breakdown=st.sampled_from([None, {"key": "plan"}, {"key": "plan", "limit": 1}]),
    filters=st.sampled_from([[], [{"key": "plan", "operator": "is_set"}]]),
    week_start=st.sampled_from(["monday", "sunday"]),
)
def test_sessions_match_reference(
    case: tuple[Log, tuple[date, date]],
    tz: str,
    interval: str,
    inactivity: int,
    max_hours: int,
    engaged_seconds: int,
    key_events: list[str],
    pageviews: list[str] | None,
    breakdown: dict[str, Any] | None,
    filters: list[dict[str, Any]],
    week_start: str,
) -> None:
    log, dates = case
    raw: dict[str, Any] = {
        "kind": "sessions",
        "date_from": dates[0].isoformat(),
        "date_to": dates[1].isoformat(),
        "interval": interval,
        "inactivity_minutes": inactivity,
        "max_hours": max_hours,
        "engaged_seconds": engaged_seconds,
        "key_events": key_events,
        "breakdown": breakdown,
        "filters": filters,
    }
    if pageviews is not None:
        raw["pageview_events"] = pageviews
    spec = parse_spec(raw)
    assert isinstance(spec, SessionsSpec)
    with fresh_env(log, tz, week_start) as env:
        got = env.query(raw)
    expected = reference_sessions(log, tz, spec, week_start)
    assert approx_equal(got, expected), (got, expected)
