"""Funnels: hand-worked scenarios for every order mode, windows, exclusions and breakdowns, plus a property
test against the naive reference in tests/reference/funnel.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.compute.spec import FunnelSpec, parse_spec
from kpilot.errors import SpecError
from kpilot.workspace import Workspace
from tests.conftest import Env, ev
from tests.reference.funnel import StepStats, reference_funnel

DAY = {"date_from": "2024-03-01", "date_to": "2024-03-31"}


def funnel(steps: list[Any], **extra: Any) -> dict[str, Any]:
    return {"kind": "funnel", **DAY, "steps": steps, **extra}


def counts(result: dict[str, Any]) -> list[int]:
    return [s["count"] for s in result["steps"]]


def identify(user: str, anon: str, ts: str) -> dict[str, Any]:
    return {
        "event": "$identify",
        "distinct_id": user,
        "timestamp": ts,
        "properties": {"$anon_distinct_id": anon},
    }


# ---- ordered -----------------------------------------------------------------------------------------


def test_ordered_counts_conversions_drop_off_and_times(env: Env) -> None:
    env.load(
        [
            # a: signup 10:00, view 10:10 (+600 s), buy 11:10 (+3600 s) -> all three steps
            ev("signup", "a", "2024-03-01T10:00:00Z"),
            ev("other", "a", "2024-03-01T10:05:00Z"),  # other events in between are fine
            ev("view", "a", "2024-03-01T10:10:00Z"),
            ev("buy", "a", "2024-03-01T11:10:00Z"),
            # b: signup, view after 1800 s, no buy
            ev("signup", "b", "2024-03-02T10:00:00Z"),
            ev("view", "b", "2024-03-02T10:30:00Z"),
            # c: signup only; d: view and buy without signup -> not in the funnel
            ev("signup", "c", "2024-03-03T10:00:00Z"),
            ev("view", "d", "2024-03-03T10:00:00Z"),
            ev("buy", "d", "2024-03-03T11:00:00Z"),
        ]
    )
    r = env.query(funnel(["signup", "view", "buy"]))
    assert r["steps"] == [
        {"step": 0, "event": "signup", "count": 3, "conversion_from_previous": 1.0, "conversion_from_first": 1.0,
         "drop_off": 0, "avg_seconds_from_previous": None, "median_seconds_from_previous": None},
        # view: a (600 s) and b (1800 s): avg 1200, median 1200; 2/3 converted, 1 dropped
        {"step": 1, "event": "view", "count": 2, "conversion_from_previous": 2 / 3, "conversion_from_first": 2 / 3,
         "drop_off": 1, "avg_seconds_from_previous": 1200.0, "median_seconds_from_previous": 1200.0},
        # buy: only a, 3600 s after the view; 1/2 from previous, 1/3 from first
        {"step": 2, "event": "buy", "count": 1, "conversion_from_previous": 0.5, "conversion_from_first": 1 / 3,
         "drop_off": 1, "avg_seconds_from_previous": 3600.0, "median_seconds_from_previous": 3600.0},
    ]  # fmt: skip


def test_median_and_average_differ(env: Env) -> None:
    # view delays: 60, 120, 600 s -> avg 260, median 120
    rows = []
    for who, delay in (("a", 60), ("b", 120), ("c", 600)):
        t0 = datetime(2024, 3, 5, 9)
        rows.append(ev("signup", who, t0.isoformat() + "Z"))
        rows.append(ev("view", who, (t0 + timedelta(seconds=delay)).isoformat() + "Z"))
    env.load(rows)
    step = env.query(funnel(["signup", "view"]))["steps"][1]
    assert (step["avg_seconds_from_previous"], step["median_seconds_from_previous"]) == (260.0, 120.0)


def test_step_at_same_timestamp_does_not_convert(env: Env) -> None:
    # buy shares signup's timestamp: not strictly after -> no conversion in every order mode that orders
    env.load([ev("signup", "a", "2024-03-01T10:00:00Z"), ev("buy", "a", "2024-03-01T10:00:00Z")])
    for order in ("ordered", "strict"):
        assert counts(env.query(funnel(["signup", "buy"], order=order))) == [1, 0]


def test_window_end_is_inside_and_one_second_later_is_outside(env: Env) -> None:
    # window 1 hour: a buys exactly 3600 s after signup (inside), b 3601 s after (outside)
    env.load(
        [
            ev("signup", "a", "2024-03-01T10:00:00Z"),
            ev("buy", "a", "2024-03-01T11:00:00Z"),
            ev("signup", "b", "2024-03-01T10:00:00Z"),
            ev("buy", "b", "2024-03-01T11:00:01Z"),
        ]
    )
    hour = {"value": 1, "unit": "hour"}
    for order in ("ordered", "strict", "unordered"):
        assert counts(env.query(funnel(["signup", "buy"], order=order, window=hour))) == [2, 1]
    assert counts(env.query(funnel(["signup", "buy"], window={"value": 3601, "unit": "second"}))) == [2, 2]


def test_window_is_measured_from_the_first_step_and_a_month_is_30_days(env: Env) -> None:
    # signup Mar 1 00:00, view Mar 20, buy Mar 31 00:00 = exactly 30 days after signup
    env.load(
        [
            ev("signup", "a", "2024-03-01T00:00:00Z"),
            ev("view", "a", "2024-03-20T00:00:00Z"),
            ev("buy", "a", "2024-03-31T00:00:00Z"),
        ]
    )
    steps = ["signup", "view", "buy"]
    # default 14 days: view (19 days later) is already outside
    assert counts(env.query(funnel(steps))) == [1, 0, 0]
    # 20 days: view inside, buy (30 days from signup, 11 from view) outside: the window starts at step 0
    assert counts(env.query(funnel(steps, window={"value": 20, "unit": "day"}))) == [1, 1, 0]
    assert counts(env.query(funnel(steps, window={"value": 1, "unit": "month"}))) == [1, 1, 1]


def test_repeated_step_needs_a_later_event(env: Env) -> None:
    # a views once, b views twice (second 60 s later), c views twice at the same instant
    env.load(
        [
            ev("view", "a", "2024-03-01T10:00:00Z"),
            ev("view", "b", "2024-03-01T10:00:00Z"),
            ev("view", "b", "2024-03-01T10:01:00Z"),
            ev("view", "c", "2024-03-01T10:00:00Z"),
            ev("view", "c", "2024-03-01T10:00:00Z"),
        ]
    )
    for order in ("ordered", "strict", "unordered"):
        r = env.query(funnel(["view", "view"], order=order))
        assert counts(r) == [3, 1], order
        assert r["steps"][1]["avg_seconds_from_previous"] == 60.0


def test_best_attempt_wins_and_ties_go_to_the_earliest_start(env: Env) -> None:
    env.load(
        [
            # a: attempt 1 (Mar 1) reaches view only; attempt 2 (Mar 10) reaches buy -> times from attempt 2
            ev("signup", "a", "2024-03-01T10:00:00Z"),
            ev("view", "a", "2024-03-01T10:01:40Z"),  # +100 s
            ev("signup", "a", "2024-03-10T10:00:00Z"),
            ev("view", "a", "2024-03-10T10:05:00Z"),  # +300 s
            ev("buy", "a", "2024-03-10T10:06:00Z"),  # +60 s
            # b: two attempts both reaching view only: the earliest (Mar 2, +40 s) counts, not Mar 3 (+20 s)
            ev("signup", "b", "2024-03-02T10:00:00Z"),
            ev("view", "b", "2024-03-02T10:00:40Z"),
            ev("signup", "b", "2024-03-03T10:00:00Z"),
            ev("view", "b", "2024-03-03T10:00:20Z"),
        ]
    )
    r = env.query(funnel(["signup", "view", "buy"], window={"value": 1, "unit": "day"}))
    assert counts(r) == [2, 2, 1]  # a person counts once per step
    # view times: a 300 s, b 40 s -> avg 170; buy: a 60 s
    assert r["steps"][1]["avg_seconds_from_previous"] == 170.0
    assert r["steps"][2]["avg_seconds_from_previous"] == 60.0


def test_greedy_earliest_keeps_the_most_steps(env: Env) -> None:
    # view at 10:01 and 10:03, buy at 10:02: taking the earliest view (10:01) lets buy (10:02) follow
    env.load(
        [
            ev("signup", "a", "2024-03-01T10:00:00Z"),
            ev("view", "a", "2024-03-01T10:01:00Z"),
            ev("buy", "a", "2024-03-01T10:02:00Z"),
            ev("view", "a", "2024-03-01T10:03:00Z"),
        ]
    )
    assert counts(env.query(funnel(["signup", "view", "buy"]))) == [1, 1, 1]


def test_any_event_step_and_step_filters(env: Env) -> None:
    env.load(
        [
            ev("signup", "a", "2024-03-01T10:00:00Z", plan="pro"),
            ev("click", "a", "2024-03-01T10:00:30Z"),
            ev("signup", "b", "2024-03-01T10:00:00Z", plan="free"),
            ev("click", "b", "2024-03-01T10:00:10Z"),
            ev("signup", "c", "2024-03-01T10:00:00Z", plan="pro"),  # nothing after
        ]
    )
    # step 1 = any event: a and b did something after signing up (click after 30 and 10 s)
    r = env.query(funnel(["signup", None]))
    assert counts(r) == [3, 2]
    assert r["steps"][1]["event"] is None
    assert r["steps"][1]["avg_seconds_from_previous"] == 20.0
    # a step filter only narrows that step: pro signups are a and c, a converted
    pro = [{"event": "signup", "filters": [{"key": "plan", "value": "pro"}]}, None]
    assert counts(env.query(funnel(pro))) == [2, 1]
    # a spec-level filter applies to every event: the clicks have no plan, so nobody converts
    assert counts(env.query(funnel(["signup", None], filters=[{"key": "plan", "operator": "is_set"}]))) == [
        3,
        0,
    ]


def test_unknown_event_gives_zeros(env: Env) -> None:
    env.load([ev("signup", "a", "2024-03-01T10:00:00Z")])
    r = env.query(funnel(["never", "signup"]))
    assert counts(r) == [0, 0]
    assert r["steps"][0]["conversion_from_previous"] == 0.0
    assert r["steps"][1]["conversion_from_first"] == 0.0
    assert r["steps"][1]["avg_seconds_from_previous"] is None
    assert counts(env.query(funnel(["signup", "never"]))) == [1, 0]


# ---- strict and unordered ----------------------------------------------------------------------------


def test_strict_needs_the_very_next_event(env: Env) -> None:
    env.load(
        [
            # a: signup, view, buy back to back -> 3 steps
            ev("signup", "a", "2024-03-01T10:00:00Z"),
            ev("view", "a", "2024-03-01T10:01:00Z"),
            ev("buy", "a", "2024-03-01T10:02:00Z"),
            # b: an unrelated event between signup and view breaks it -> 1 step (ordered: 3)
            ev("signup", "b", "2024-03-01T10:00:00Z"),
            ev("other", "b", "2024-03-01T10:00:30Z"),
            ev("view", "b", "2024-03-01T10:01:00Z"),
            ev("buy", "b", "2024-03-01T10:02:00Z"),
            # c: first attempt broken, second attempt (signup again) goes through to view -> 2 steps
            ev("signup", "c", "2024-03-02T10:00:00Z"),
            ev("other", "c", "2024-03-02T10:00:10Z"),
            ev("signup", "c", "2024-03-02T10:00:20Z"),
            ev("view", "c", "2024-03-02T10:00:30Z"),
            ev("other", "c", "2024-03-02T10:00:40Z"),
            ev("buy", "c", "2024-03-02T10:00:50Z"),
        ]
    )
    steps = ["signup", "view", "buy"]
    assert counts(env.query(funnel(steps, order="strict"))) == [3, 2, 1]
    assert counts(env.query(funnel(steps))) == [3, 3, 3]


def test_strict_treats_events_at_one_timestamp_as_simultaneous(env: Env) -> None:
    env.load(
        [
            # a: "other" at the signup's instant is not after it, so it does not interrupt
            ev("signup", "a", "2024-03-01T10:00:00Z"),
            ev("other", "a", "2024-03-01T10:00:00Z"),
            ev("view", "a", "2024-03-01T10:01:00Z"),
            # b: view and other share the next timestamp: view is one of the next events -> converts
            ev("signup", "b", "2024-03-01T10:00:00Z"),
            ev("other", "b", "2024-03-01T10:01:00Z"),
            ev("view", "b", "2024-03-01T10:01:00Z"),
        ]
    )
    assert counts(env.query(funnel(["signup", "view"], order="strict"))) == [2, 2]


def test_unordered_counts_completed_steps(env: Env) -> None:
    env.load(
        [
            # a: buy, then signup 100 s later, then view 200 s after that: 3 steps in any order
            ev("buy", "a", "2024-03-01T10:00:00Z"),
            ev("signup", "a", "2024-03-01T10:01:40Z"),
            ev("view", "a", "2024-03-01T10:05:00Z"),
            # b: view only -> completed 1 step
            ev("view", "b", "2024-03-01T10:00:00Z"),
            # c: signup and buy at the same instant -> 2 steps, 0 s apart (steps need no order here)
            ev("signup", "c", "2024-03-01T10:00:00Z"),
            ev("buy", "c", "2024-03-01T10:00:00Z"),
            # d: signup, then view 2 days later: outside a 1-day window from the earliest -> 1 step
            ev("signup", "d", "2024-03-01T10:00:00Z"),
            ev("view", "d", "2024-03-03T10:00:00Z"),
        ]
    )
    r = env.query(funnel(["signup", "view", "buy"], order="unordered", window={"value": 1, "unit": "day"}))
    assert counts(r) == [4, 2, 1]
    # completed 2 steps: a 100 s, c 0 s -> avg 50; completed 3: a 200 s
    assert [s["avg_seconds_from_previous"] for s in r["steps"]] == [None, 50.0, 200.0]
    # ordered, for contrast: a's buy came first -> a reaches view only; c's buy is not after the signup and c
    # never views; d's view is outside the window -> [a, c, d], [a], []
    assert counts(env.query(funnel(["signup", "view", "buy"], window={"value": 1, "unit": "day"}))) == [
        3,
        1,
        0,
    ]


# ---- exclusions ----------------------------------------------------------------------------------------


def test_exclusions_remove_the_person_from_every_step(env: Env) -> None:
    env.load(
        [
            # a: cancel between signup and view -> excluded entirely
            ev("signup", "a", "2024-03-01T10:00:00Z"),
            ev("cancel", "a", "2024-03-01T10:01:00Z"),
            ev("view", "a", "2024-03-01T10:02:00Z"),
            # b: cancel after view (outside steps 0..1) -> kept
            ev("signup", "b", "2024-03-01T10:00:00Z"),
            ev("view", "b", "2024-03-01T10:02:00Z"),
            ev("cancel", "b", "2024-03-01T10:03:00Z"),
            # c: never views; cancels inside the window -> excluded
            ev("signup", "c", "2024-03-01T10:00:00Z"),
            ev("cancel", "c", "2024-03-01T10:30:00Z"),
            # d: never views; cancels after the 1-hour window -> kept
            ev("signup", "d", "2024-03-01T10:00:00Z"),
            ev("cancel", "d", "2024-03-01T12:00:00Z"),
            # e: cancel at the signup's own instant is not after it -> kept
            ev("signup", "e", "2024-03-01T10:00:00Z"),
            ev("cancel", "e", "2024-03-01T10:00:00Z"),
            ev("view", "e", "2024-03-01T10:02:00Z"),
        ]
    )
    spec = funnel(["signup", "view"], window={"value": 1, "unit": "hour"}, exclusions=[{"event": "cancel"}])
    assert counts(env.query(spec)) == [3, 2]  # b, d, e; b and e view
    # strict: a's and c's cancel is the next event (step 1 missed) inside the window -> still excluded; b's view
    # is next; e's cancel shares the signup instant, so the view is e's next timestamp; d's next is the cancel.
    assert counts(env.query({**spec, "order": "strict"})) == [3, 2]


def test_exclusion_between_later_steps(env: Env) -> None:
    env.load(
        [
            # a: cancel between signup and view, but the exclusion covers steps 1..2 only -> kept
            ev("signup", "a", "2024-03-01T10:00:00Z"),
            ev("cancel", "a", "2024-03-01T10:01:00Z"),
            ev("view", "a", "2024-03-01T10:02:00Z"),
            ev("buy", "a", "2024-03-01T10:03:00Z"),
            # b: cancel between view and buy -> excluded
            ev("signup", "b", "2024-03-01T10:00:00Z"),
            ev("view", "b", "2024-03-01T10:02:00Z"),
            ev("cancel", "b", "2024-03-01T10:02:30Z"),
            ev("buy", "b", "2024-03-01T10:03:00Z"),
        ]
    )
    spec = funnel(["signup", "view", "buy"], exclusions=[{"event": "cancel", "from_step": 1, "to_step": 2}])
    assert counts(env.query(spec)) == [1, 1, 1]


# ---- identity, time zone, date range, breakdown -------------------------------------------------------------


def test_anonymous_events_before_identify_count_for_the_person(env: Env) -> None:
    env.load(
        [
            ev("signup", "anon-1", "2024-03-01T10:00:00Z"),
            identify("user-1", "anon-1", "2024-03-01T10:05:00Z"),
            ev("buy", "user-1", "2024-03-01T10:10:00Z"),
        ]
    )
    r = env.query(funnel(["signup", "buy"]))
    assert counts(r) == [1, 1]
    assert r["steps"][1]["avg_seconds_from_previous"] == 600.0
    # strict: the $identify event sits between signup and buy
    assert counts(env.query(funnel(["signup", "buy"], order="strict"))) == [1, 0]


def test_date_range_is_local_and_every_step_must_be_inside(env_ny: Env) -> None:
    env_ny.load(
        [
            # 03:00 UTC Mar 2 = 22:00 Mar 1 in New York; buy at 06:00 UTC Mar 2 = 01:00 Mar 2 local
            ev("signup", "a", "2024-03-02T03:00:00Z"),
            ev("buy", "a", "2024-03-02T06:00:00Z"),
        ]
    )
    spec = {"kind": "funnel", "date_from": "2024-03-01", "date_to": "2024-03-01", "steps": ["signup", "buy"]}
    # range = Mar 1 local: the signup is in, the buy (Mar 2 local) is past date_to -> does not count
    assert counts(env_ny.query(spec)) == [1, 0]
    assert counts(env_ny.query({**spec, "date_to": "2024-03-02"})) == [1, 1]
    # in UTC the signup is on Mar 2, outside a Mar 1 range
    assert counts(env_ny.query({**spec, "timezone": "UTC"})) == [0, 0]


def test_window_counts_real_seconds_across_a_dst_change(env_ny: Env) -> None:
    # New York skips 02:00 -> 03:00 on 2024-03-10: 01:30 EST (06:30Z) to 03:30 EDT (07:30Z) is one hour
    env_ny.load([ev("signup", "a", "2024-03-10T06:30:00Z"), ev("buy", "a", "2024-03-10T07:30:00Z")])
    r = env_ny.query(funnel(["signup", "buy"], window={"value": 1, "unit": "hour"}))
    assert counts(r) == [1, 1]
    assert r["steps"][1]["avg_seconds_from_previous"] == 3600.0


def test_event_breakdown_takes_the_value_of_the_first_step(env: Env) -> None:
    env.load(
        [
            ev("signup", "a", "2024-03-01T10:00:00Z", browser="chrome"),
            ev("buy", "a", "2024-03-01T10:01:00Z", browser="firefox"),  # the buy's value is ignored
            ev("signup", "b", "2024-03-01T10:00:00Z", browser="chrome"),
            ev("signup", "c", "2024-03-01T10:00:00Z", browser="safari"),
            ev("buy", "c", "2024-03-01T10:01:00Z"),
            ev("signup", "d", "2024-03-01T10:00:00Z"),
        ]
    )
    r = env.query(funnel(["signup", "buy"], breakdown={"key": "browser"}))
    assert r["breakdown"] == {"key": "browser", "type": "event"}
    assert [(x["breakdown_value"], counts(x)) for x in r["results"]] == [
        ("chrome", [2, 1]),
        ("safari", [1, 1]),
        ("$none", [1, 0]),
    ]
    limited = env.query(funnel(["signup", "buy"], breakdown={"key": "browser", "limit": 1}))
    assert [(x["breakdown_value"], counts(x)) for x in limited["results"]] == [
        ("chrome", [2, 1]),
        ("$other", [1, 1]),
        ("$none", [1, 0]),
    ]


def test_breakdown_tie_at_the_start_takes_the_smallest_value(env: Env) -> None:
    # two signups at the same instant with different browsers: one attempt, valued "chrome" (< "firefox")
    env.load(
        [
            ev("signup", "a", "2024-03-01T10:00:00Z", browser="firefox"),
            ev("signup", "a", "2024-03-01T10:00:00Z", browser="chrome"),
            ev("buy", "a", "2024-03-01T10:01:00Z"),
        ]
    )
    for order in ("ordered", "strict", "unordered"):
        r = env.query(funnel(["signup", "buy"], order=order, breakdown={"key": "browser"}))
        assert {x["breakdown_value"]: counts(x) for x in r["results"]} == {
            "chrome": [1, 1],
            "firefox": [0, 0],
        }


def test_person_breakdown(env: Env) -> None:
    env.load(
        [
            {
                "event": "signup",
                "distinct_id": "a",
                "timestamp": "2024-03-01T10:00:00Z",
                "$set": {"plan": "pro"},
            },
            ev("buy", "a", "2024-03-01T10:01:00Z"),
            {
                "event": "signup",
                "distinct_id": "b",
                "timestamp": "2024-03-01T10:00:00Z",
                "$set": {"plan": "free"},
            },
        ]
    )
    r = env.query(funnel(["signup", "buy"], breakdown={"key": "plan", "type": "person"}))
    assert {x["breakdown_value"]: counts(x) for x in r["results"]} == {"pro": [1, 1], "free": [1, 0]}


# ---- malformed specs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"steps": ["a"]}, "steps"),
        ({"steps": ["a"] * 21}, "steps"),
        ({"steps": ["a", ""]}, "steps.1.event"),
        ({"steps": ["a", {"filters": []}]}, "steps.1.event"),
        ({"steps": ["a", "b"], "order": "sideways"}, "order"),
        ({"steps": ["a", "b"], "window": {"value": 0}}, "window.value"),
        ({"steps": ["a", "b"], "window": {"value": 1, "unit": "year"}}, "window.unit"),
        ({"steps": ["a", "b"], "exclusions": [{"event": "x", "from_step": 1, "to_step": 1}]}, "exclusions.0"),
        ({"steps": ["a", "b"], "exclusions": [{"event": "x", "to_step": 2}]}, "exclusions"),
        ({"steps": ["a", "b"], "exclusions": [{"event": "x"}], "order": "unordered"}, "exclusions"),
        ({"steps": ["a", "b"], "exclusions": [{"from_step": 0}]}, "exclusions.0.event"),
    ],
)
def test_malformed_specs_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "funnel", **DAY, **extra})
    assert info.value.field == field


# ---- property test against the naive reference ---------------------------------------------------------------

_IDS = ["u1", "u2", "a1", "a2"]
# 30-minute slots over 12 h from 02:00Z: crosses New York's midnight (05:00Z) and its DST change (07:00Z)
_BASE = datetime(2024, 3, 10, 2)
_SLOTS = 23


@st.composite
def _rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for _ in range(draw(st.integers(0, 20))):
        name = draw(st.sampled_from(["A", "B", "C", "X"]))
        who = draw(st.sampled_from(_IDS))
        ts = _BASE + timedelta(minutes=30 * draw(st.integers(0, _SLOTS)))
        plan = draw(st.sampled_from([None, "p", "q"]))
        rows.append(ev(name, who, ts.isoformat() + "Z", **({"plan": plan} if plan else {})))
    for anon, user in draw(st.lists(st.sampled_from([("a1", "u1"), ("a2", "u2"), ("a2", "u1")]), max_size=2)):
        ts = _BASE + timedelta(minutes=30 * draw(st.integers(0, _SLOTS)))
        rows.append(identify(user, anon, ts.isoformat() + "Z"))
    return rows


@st.composite
def _specs(draw: st.DrawFn, order: str) -> FunnelSpec:
    pro = {"key": "plan", "value": "p"}
    steps = draw(
        st.lists(
            st.sampled_from(
                ["A", "B", "C", None, {"event": "A", "filters": [pro]}, {"event": None, "filters": [pro]}]
            ),
            min_size=2,
            max_size=4,
        )
    )
    days = draw(
        st.sampled_from(
            [("2024-03-09", "2024-03-10"), ("2024-03-10", "2024-03-10"), ("2024-03-09", "2024-03-09")]
        )
    )
    spec: dict[str, Any] = {
        "kind": "funnel",
        "date_from": days[0],
        "date_to": days[1],
        "timezone": draw(st.sampled_from(["UTC", "America/New_York"])),
        "steps": steps,
        "order": order,
        "window": draw(
            st.sampled_from([{"value": 30, "unit": "minute"}, {"value": 1, "unit": "hour"}, {"value": 3, "unit": "hour"},
                             {"value": 1, "unit": "day"}])
        ),
    }  # fmt: skip
    if draw(st.booleans()):
        spec["filters"] = [{"key": "plan", "operator": "is_not", "value": "q"}]
    if draw(st.booleans()):
        spec["breakdown"] = {"key": "plan", "limit": 100}
    if order != "unordered" and draw(st.booleans()):
        f = draw(st.integers(0, len(steps) - 2))
        spec["exclusions"] = [
            {"event": "X", "from_step": f, "to_step": draw(st.integers(f + 1, len(steps) - 1))}
        ]
    parsed = parse_spec(spec)
    assert isinstance(parsed, FunnelSpec)
    return parsed


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = Workspace.init(tmp_path_factory.mktemp("funnel") / "ws")
    yield ws
    ws.close()


_project_numbers = itertools.count()


def _engine_stats(result: dict[str, Any]) -> dict[str, list[StepStats]]:
    per_value = result.get("results", [{"breakdown_value": "", **result}])
    out = {}
    for item in per_value:
        stats = [
            (s["count"], s["avg_seconds_from_previous"], s["median_seconds_from_previous"])
            for s in item["steps"]
        ]
        if stats[0][0]:
            out[item["breakdown_value"]] = stats
    return out


def _check(ws: Workspace, rows: list[dict[str, Any]], spec: FunnelSpec) -> None:
    from kpilot.compute.engine import run_query

    env = Env(ws, ws.create_project(f"p{next(_project_numbers)}", "UTC"))
    env.load(rows)
    got = _engine_stats(run_query(env.engine, env.project, spec))
    want = reference_funnel(rows, spec, spec.timezone or "UTC")
    assert got.keys() == want.keys()
    for bd, stats in want.items():
        assert [c for c, _, _ in got[bd]] == [c for c, _, _ in stats], bd
        for (_, avg, med), (_, ravg, rmed) in zip(got[bd], stats, strict=True):
            assert avg == (None if ravg is None else pytest.approx(ravg))
            assert med == (None if rmed is None else pytest.approx(rmed))


@pytest.mark.parametrize("order", ["ordered", "strict", "unordered"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_matches_reference(shared_ws: Workspace, order: str, data: st.DataObject) -> None:
    _check(shared_ws, data.draw(_rows()), data.draw(_specs(order)))
