"""Query acceptance specs and the event log they run on, shared by every engine comparison.

``load_fixture(ws)`` builds two projects with a deterministic synthetic product (persons with anonymous and
identified ids merged mid-way, person properties written with ``$set``/``$set_once``, sessions, a signup ->
activate -> purchase path, properties with awkward characters and keys) around both daylight-saving changes
of 2024 (US: Mar 10, EU: Mar 31). ``SPECS`` lists ``(id, project, spec)`` triples covering every query kind
and option; engines must give identical results on all of them.

Every event timestamp in a project is unique: on exact ties some orderings (which ``$set`` wins, which
event is a person's "first") are not defined, and an engine comparison must not depend on them.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from kpilot.collect.normalize import normalize
from kpilot.workspace import Workspace

__all__ = ["PROJECTS", "SPECS", "build_events", "load_fixture"]

PROJECTS = (("acme", "UTC", "monday"), ("nyc", "America/New_York", "sunday"))
FIRST_DAY = datetime(2024, 2, 12)
DAYS = 60  # through 2024-04-11
BROWSERS = ("Chrome", "Firefox", "Safari", "Edge", None)
PLANS = ("free", "pro", "team")
PATHS = ("/home", "/pricing", "/it's-here", "/back\\slash", "/50%_off", "/Ünïcode", "/docs")


class _Clock:
    """Hands out unique timestamps: a taken instant moves forward by one millisecond."""

    def __init__(self) -> None:
        self.used: set[datetime] = set()

    def take(self, ts: datetime) -> datetime:
        while ts in self.used:
            ts += timedelta(milliseconds=1)
        self.used.add(ts)
        return ts


def _iso(ts: datetime) -> str:
    return ts.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_events(seed: int, persons: int = 28) -> list[dict[str, Any]]:
    """A PostHog-shaped event log (rows for ``normalize``) of ``persons`` persons over :data:`DAYS` days."""
    rng = random.Random(seed)
    clock = _Clock()
    rows: list[dict[str, Any]] = []

    def emit(event: str, who: str, ts: datetime, props: dict[str, Any], **extra: Any) -> datetime:
        at = clock.take(ts)
        rows.append({"event": event, "distinct_id": who, "timestamp": _iso(at), "properties": props, **extra})
        return at

    for i in range(persons):
        anon, user = f"anon-{i}", f"user-{i}"
        activity = rng.choice((0.08, 0.2, 0.4, 0.7))  # power-law-ish: few heavy users
        first = rng.randrange(DAYS - 10)
        identify_day = first + rng.choice((0, 1, 3, 8, 100))  # 100: never identifies
        browser = rng.choice(BROWSERS)
        plan = rng.choice(PLANS)
        signup = FIRST_DAY + timedelta(days=first, seconds=rng.randrange(86400))
        emit(
            "signup",
            anon,
            signup,
            _props(rng, browser),
            **{"$set": {"plan": plan, "country": rng.choice(("FR", "US", "IN"))}},
            **{"$set_once": {"first_browser": browser or "none"}},
        )
        if rng.random() < 0.7:
            emit("activate", anon, signup + timedelta(minutes=rng.choice((0, 1, 30, 600, 3000, 20000))), {})
        for day in range(first, DAYS):
            if day != first and rng.random() > activity:
                continue
            who = user if day >= identify_day else anon
            if day == identify_day:
                emit(
                    "$identify",
                    user,
                    FIRST_DAY + timedelta(days=day, seconds=rng.randrange(3600)),
                    {"$anon_distinct_id": anon},
                )
            for _ in range(rng.choice((1, 1, 2, 3))):
                t = FIRST_DAY + timedelta(
                    days=day, seconds=rng.randrange(86400), milliseconds=rng.randrange(1000)
                )
                for _ in range(rng.randrange(1, 6)):
                    event = rng.choices(
                        ("$pageview", "$screen", "feature_x", "purchase", "invite"), (10, 3, 3, 1, 1)
                    )[0]
                    extra: dict[str, Any] = {}
                    if event == "purchase" and rng.random() < 0.5:
                        plan = rng.choice(PLANS)
                        extra["$set"] = {"plan": plan}
                    emit(event, who, t, _props(rng, browser), **extra)
                    t += timedelta(seconds=rng.choice((3, 40, 300, 1700, 1800, 1801, 2500)))
    # a bot-like person: an event every 20 minutes for 30 hours (sessions' max_hours cap needs passes)
    t = datetime(2024, 3, 9, 20, 0)
    for _ in range(90):
        emit("$pageview", "bot-1", t, {"$browser": "Chrome", "path": "/home"})
        t += timedelta(minutes=20)
    # events right at the UTC and New York day edges, both sides of the US change (EST -5, EDT -4)
    for stamp in (
        "2024-03-10T05:00:00",
        "2024-03-10T04:59:59.999",
        "2024-03-11T04:00:00",
        "2024-03-01T00:00:00",
    ):
        emit("$pageview", "edge-1", datetime.fromisoformat(stamp), {"$browser": "Safari", "path": "/home"})
    return rows


def _props(rng: random.Random, browser: str | None) -> dict[str, Any]:
    props: dict[str, Any] = {"path": rng.choice(PATHS), "n": rng.randrange(0, 20)}
    if browser is not None:
        props["$browser"] = browser
    if rng.random() < 0.3:
        props["price"] = rng.choice((9.99, 19.5, 0.1, 100))
    if rng.random() < 0.2:
        props["utm.source"] = rng.choice(("news", "ads"))
    if rng.random() < 0.2:
        props["it's"] = rng.choice(("yes", "no"))
    if rng.random() < 0.1:
        props["flag"] = rng.random() < 0.5
    return props


def load_fixture(ws: Workspace) -> None:
    """Create :data:`PROJECTS` in ``ws`` and load each project's log (seeded by its position)."""
    for seed, (name, tz, week_start) in enumerate(PROJECTS):
        project = ws.create_project(name, tz, week_start)
        rows = build_events(seed)
        ws.store.write_batch(project.id, [normalize(r) for r in rows])


# ---- specs --------------------------------------------------------------------------------------------

MARCH = {"date_from": "2024-03-01", "date_to": "2024-03-31"}
WEEKS = {"date_from": "2024-02-19", "date_to": "2024-04-07"}


def _trends() -> list[tuple[str, str, dict[str, Any]]]:
    out: list[tuple[str, str, dict[str, Any]]] = []
    t = {"kind": "trends", **MARCH}
    for project in ("acme", "nyc"):
        for math in ("total", "dau", "wau", "mau", "unique", "dau_mau_ratio"):
            out.append((f"trends-{math}-day-{project}", project, {**t, "math": math}))
        for interval, math in (("week", "wau"), ("month", "mau"), ("week", "total"), ("month", "unique")):
            out.append(
                (
                    f"trends-{math}-{interval}-{project}",
                    project,
                    {**t, **WEEKS, "math": math, "interval": interval},
                )
            )
        day = "2024-03-10"
        out.append(
            (
                f"trends-hour-dst-{project}",
                project,
                {**t, "date_from": day, "date_to": day, "interval": "hour", "math": "unique"},
            )
        )
    out += [
        ("trends-tz-kolkata", "acme", {**t, "timezone": "Asia/Kolkata", "math": "dau"}),
        (
            "trends-tz-paris-hour",
            "nyc",
            {
                **t,
                "date_from": "2024-03-31",
                "date_to": "2024-03-31",
                "timezone": "Europe/Paris",
                "interval": "hour",
            },
        ),
        ("trends-event", "acme", {**t, "event": "feature_x", "math": "dau"}),
        (
            "trends-datetimes",
            "nyc",
            {**t, "date_from": "2024-03-05T06:30:00", "date_to": "2024-03-09T18:00:00", "interval": "hour"},
        ),
        ("trends-compare-total", "acme", {**t, "compare": True}),
        (
            "trends-compare-wau-breakdown",
            "nyc",
            {**t, "math": "wau", "compare": True, "breakdown": {"key": "$browser", "limit": 2}},
        ),
    ]
    filters: list[tuple[str, dict[str, Any]]] = [
        ("exact", {"key": "$browser", "value": "Chrome"}),
        ("exact-list", {"key": "$browser", "value": ["Chrome", "Safari"]}),
        ("is-not", {"key": "$browser", "operator": "is_not", "value": "Chrome"}),
        ("icontains-quote", {"key": "path", "operator": "icontains", "value": "IT'S"}),
        ("icontains-backslash", {"key": "path", "operator": "icontains", "value": "k\\s"}),
        ("icontains-percent", {"key": "path", "operator": "icontains", "value": "50%_"}),
        ("icontains-unicode", {"key": "path", "operator": "icontains", "value": "ünï"}),
        ("not-icontains", {"key": "path", "operator": "not_icontains", "value": "/d"}),
        ("exact-backslash", {"key": "path", "value": "/back\\slash"}),
        ("gt", {"key": "n", "operator": "gt", "value": 10}),
        ("gte-float", {"key": "price", "operator": "gte", "value": 19.5}),
        ("lt", {"key": "price", "operator": "lt", "value": 1}),
        ("lte", {"key": "n", "operator": "lte", "value": 3}),
        ("is-set", {"key": "price", "operator": "is_set"}),
        ("is-not-set", {"key": "$browser", "operator": "is_not_set"}),
        ("exact-number", {"key": "price", "value": 100}),
        ("exact-float", {"key": "price", "value": 9.99}),
        ("exact-bool", {"key": "flag", "value": True}),
        ("dotted-key", {"key": "utm.source", "value": "news"}),
        ("quoted-key", {"key": "it's", "value": "yes"}),
        ("person-exact", {"key": "plan", "type": "person", "value": "pro"}),
        ("person-is-not", {"key": "plan", "type": "person", "operator": "is_not", "value": "free"}),
        ("person-icontains", {"key": "country", "type": "person", "operator": "icontains", "value": "u"}),
        (
            "person-not-icontains",
            {"key": "plan", "type": "person", "operator": "not_icontains", "value": "EA"},
        ),
        ("person-is-set", {"key": "first_browser", "type": "person", "operator": "is_set"}),
        ("person-is-not-set", {"key": "country", "type": "person", "operator": "is_not_set"}),
    ]
    for name, flt in filters:
        out.append(
            (
                f"trends-filter-{name}",
                "nyc" if "person" in name else "acme",
                {**t, "math": "dau", "filters": [flt]},
            )
        )
    out.append(
        (
            "trends-filters-combined",
            "nyc",
            {
                **t,
                "math": "wau",
                "filters": [filters[0][1], {"key": "plan", "type": "person", "value": "team"}],
            },
        )
    )
    breakdowns: list[tuple[str, dict[str, Any]]] = [
        ("browser", {"key": "$browser"}),
        ("browser-limit1", {"key": "$browser", "limit": 1}),
        ("path", {"key": "path", "limit": 4}),
        ("dotted", {"key": "utm.source"}),
        ("quoted", {"key": "it's"}),
        ("number", {"key": "price"}),
        ("person-plan", {"key": "plan", "type": "person"}),
        ("person-first-browser", {"key": "first_browser", "type": "person", "limit": 2}),
    ]
    for name, bd in breakdowns:
        out.append((f"trends-breakdown-{name}", "acme", {**t, "math": "total", "breakdown": bd}))
    out.append(
        ("trends-breakdown-mau", "nyc", {**t, "math": "mau", "breakdown": {"key": "plan", "type": "person"}})
    )
    out.append(
        ("trends-breakdown-ratio", "acme", {**t, "math": "dau_mau_ratio", "breakdown": {"key": "$browser"}})
    )
    return out


def _other_kinds() -> list[tuple[str, str, dict[str, Any]]]:
    browser = {"key": "$browser", "limit": 3}
    plan = {"key": "plan", "type": "person"}
    pro = [{"key": "plan", "type": "person", "operator": "is_not", "value": "free"}]
    stick = {"kind": "stickiness", **MARCH}
    ret = {"kind": "retention", "date_from": "2024-03-01", "date_to": "2024-04-07"}
    fun = {"kind": "funnel", **MARCH, "steps": ["signup", "$pageview", "purchase"]}
    ses = {"kind": "sessions", **MARCH}
    ado = {"kind": "feature_adoption", **WEEKS, "event": "feature_x"}
    ttv = {"kind": "time_to_value", **WEEKS, "signup_event": "signup", "value_event": "activate"}
    return [
        ("stickiness-day", "acme", stick),
        ("stickiness-week-cumulative", "nyc", {**stick, **WEEKS, "interval": "week", "cumulative": True}),
        ("stickiness-month-min2", "acme", {**stick, **WEEKS, "interval": "month", "min_events": 2}),
        ("stickiness-event-breakdown", "nyc", {**stick, "event": "$pageview", "breakdown": browser}),
        ("stickiness-person-filter", "acme", {**stick, "filters": pro, "breakdown": plan}),
        ("retention-day", "acme", {**ret, "intervals": 10}),
        ("retention-week", "nyc", {**ret, "period": "week", "intervals": 6}),
        ("retention-week-monday", "nyc", {**ret, "period": "week", "intervals": 6, "week_start": "monday"}),
        ("retention-month", "acme", {**ret, "period": "month", "intervals": 3}),
        ("retention-hour", "nyc", {**ret, "date_to": "2024-03-10", "period": "hour", "intervals": 30}),
        (
            "retention-first-time",
            "acme",
            {
                **ret,
                "period": "week",
                "intervals": 6,
                "retention_type": "first_time",
                "start_event": "signup",
                "return_event": None,
            },
        ),
        ("retention-cumulative", "nyc", {**ret, "intervals": 14, "cumulative": True}),
        ("retention-breakdown", "acme", {**ret, "period": "week", "intervals": 5, "breakdown": browser}),
        (
            "retention-person",
            "nyc",
            {**ret, "period": "week", "intervals": 5, "filters": pro, "breakdown": plan},
        ),
        ("funnel-ordered", "acme", fun),
        ("funnel-ordered-nyc-1h", "nyc", {**fun, "window": {"value": 1, "unit": "hour"}}),
        (
            "funnel-strict",
            "acme",
            {**fun, "order": "strict", "steps": ["$pageview", "$pageview", "feature_x"]},
        ),
        (
            "funnel-unordered",
            "nyc",
            {**fun, "order": "unordered", "steps": ["feature_x", "$pageview", "$pageview", "purchase"]},
        ),
        (
            "funnel-any-event",
            "acme",
            {**fun, "steps": [None, "purchase"], "window": {"value": 30, "unit": "minute"}},
        ),
        (
            "funnel-step-filters",
            "nyc",
            {
                **fun,
                "steps": [
                    {"event": "$pageview", "filters": [{"key": "path", "value": "/pricing"}]},
                    {"event": "purchase", "filters": [{"key": "price", "operator": "gt", "value": 5}]},
                ],
            },
        ),
        (
            "funnel-exclusion",
            "acme",
            {**fun, "exclusions": [{"event": "invite", "from_step": 0, "to_step": 2}]},
        ),
        ("funnel-breakdown", "nyc", {**fun, "breakdown": browser, "filters": pro}),
        (
            "funnel-person-breakdown",
            "acme",
            {**fun, "order": "strict", "breakdown": plan, "steps": ["$pageview", "feature_x"]},
        ),
        ("sessions-day", "acme", ses),
        (
            "sessions-week-key-events",
            "nyc",
            {**ses, **WEEKS, "interval": "week", "key_events": ["purchase"], "engaged_seconds": 60},
        ),
        (
            "sessions-cap",
            "nyc",
            {
                **ses,
                "date_from": "2024-03-08",
                "date_to": "2024-03-12",
                "max_hours": 2,
                "inactivity_minutes": 45,
            },
        ),
        ("sessions-breakdown", "acme", {**ses, "interval": "month", "breakdown": browser, "filters": pro}),
        ("sessions-person-breakdown", "nyc", {**ses, "breakdown": plan, "pageview_events": ["$screen"]}),
        ("adoption-week", "acme", ado),
        ("adoption-day-active", "nyc", {**ado, **MARCH, "interval": "day", "active_event": "$pageview"}),
        ("adoption-month-breakdown", "acme", {**ado, "interval": "month", "breakdown": browser}),
        ("adoption-person", "nyc", {**ado, "breakdown": plan, "filters": pro}),
        ("ttv-week", "acme", ttv),
        (
            "ttv-day-window",
            "nyc",
            {**ttv, **MARCH, "cohort_interval": "day", "window": {"value": 30, "unit": "minute"}},
        ),
        ("ttv-month-breakdown", "acme", {**ttv, "cohort_interval": "month", "breakdown": browser}),
        ("ttv-person", "nyc", {**ttv, "value_event": "purchase", "breakdown": plan, "filters": pro}),
    ]


SPECS: list[tuple[str, str, dict[str, Any]]] = _trends() + _other_kinds()
