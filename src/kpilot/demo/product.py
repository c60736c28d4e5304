"""Product events of the demo: a web analytics product ("reports for teams"), columnar with numpy.

What the events look like (PostHog vocabulary, one row per event):

* Anonymous visits: ``$pageview`` with an ``anon-...`` distinct id on marketing pages. The very first
  page view of a person carries ``utm_source``/``utm_medium`` (not for ``direct`` visitors). About 30% of
  first visits are a single page view (a bounce). Visitors who never sign up come back a few times.
* Signup: ``$identify`` (distinct id ``user-N``, ``$anon_distinct_id`` = the anonymous id, so both ids are
  one person from then on; person properties ``plan``, ``country``, ``email`` set, ``$initial_utm_source``
  set once), then ``signed_up`` and an onboarding page view.
* Activation: ``project_created``; value: ``report_created`` then ``report_shared`` (the funnel
  signed_up -> project_created -> report_shared).
* Usage sessions of signed-up persons on active days until they churn: a page view, then several of
  ``dashboard_viewed``, ``filter_applied``, ``report_created``, ``search_performed``, ``export_csv`` (only
  persons who adopted exporting), ``report_shared`` (only after reaching value), ``invite_sent`` (mostly
  team plans), with 3 s .. a few minutes between events (so 30 minutes of inactivity separates sessions).
  A day is active with probability engagement x weekday factor (weekends about half), so weekly seasonality
  and churn show in DAU, retention and stickiness.

``received_at`` is a few seconds after each timestamp (as if collected live), so the audit sees clean
timestamps. Every property of an event name is present on every such event (no schema drift), except
the UTM properties, which only first page views have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from kpilot.demo.persons import DAY, DemoPersons, time_of_day, weekday_factor
from kpilot.demo.registry import register, report_progress
from kpilot.workspace import ProjectInfo, Workspace

__all__ = ["BATCH_ROWS", "EVENTS", "generate_events", "write_events"]

EVENTS = (
    "$pageview",
    "$identify",
    "signed_up",
    "project_created",
    "report_created",
    "report_shared",
    "dashboard_viewed",
    "filter_applied",
    "export_csv",
    "invite_sent",
    "search_performed",
)
E = {name: i for i, name in enumerate(EVENTS)}
BATCH_ROWS = 100_000

_USAGE_P = {
    "$pageview": 0.30,
    "dashboard_viewed": 0.24,
    "filter_applied": 0.13,
    "report_created": 0.09,
    "search_performed": 0.07,
    "export_csv": 0.06,
    "report_shared": 0.05,
    "project_created": 0.03,
    "invite_sent": 0.03,
}
_SITE_PATHS = ("/", "/pricing", "/features", "/blog/metrics-that-matter", "/docs", "/customers")
_APP_PATHS = ("/app", "/app/dashboards", "/app/reports", "/app/projects", "/app/settings")
_MEDIUM = {
    "google": "cpc",
    "newsletter": "email",
    "twitter": "social",
    "linkedin": "social",
    "partner": "referral",
    "producthunt": "referral",
}
_CHOICES = {
    "signed_up": ("method", ("email", "google", "github")),
    "project_created": ("template", ("blank", "saas", "ecommerce", "mobile")),
    "report_created": ("report_type", ("trends", "funnel", "retention", "table")),
    "report_shared": ("share_channel", ("link", "email", "slack")),
    "filter_applied": ("property", ("country", "plan", "browser", "utm_source")),
    "invite_sent": ("role", ("member", "admin", "viewer")),
}

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class _Rows:
    """Columnar accumulator: person index, seconds since the demo start, event code, first-visit flag."""

    person: list[IntArray] = field(default_factory=list)
    t: list[FloatArray] = field(default_factory=list)
    code: list[IntArray] = field(default_factory=list)
    first: list[npt.NDArray[np.bool_]] = field(default_factory=list)

    def add(self, person: IntArray, t: FloatArray, code: IntArray | int, first: bool = False) -> None:
        self.person.append(person.astype(np.int64))
        self.t.append(t.astype(np.float64))
        self.code.append(np.broadcast_to(np.asarray(code, dtype=np.int64), person.shape).copy())
        self.first.append(np.full(person.shape, first))


@dataclass(slots=True)
class DemoEvents:
    """The generated events, sorted by time: person index, seconds, event code, first-visit flag."""

    person: IntArray
    t: FloatArray
    code: IntArray
    first: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.t)


def _expand(
    rng: np.random.Generator, person: IntArray, start: FloatArray, n_events: IntArray, mean_gap: float
) -> tuple[IntArray, FloatArray, IntArray]:
    """Sessions -> event rows: (person, time, rank in session); gaps of 3 s + exponential(mean_gap)."""
    total = int(n_events.sum())
    rows_person = np.repeat(person, n_events)
    group_start = np.repeat(np.cumsum(n_events) - n_events, n_events)
    rank = np.arange(total) - group_start
    gaps = np.where(rank > 0, rng.exponential(mean_gap, total) + 3.0, 0.0)
    csum = np.cumsum(gaps)
    offsets = csum - np.repeat(csum[np.cumsum(n_events) - n_events], n_events)
    return rows_person, np.repeat(start, n_events) + offsets, rank


def generate_events(rng: np.random.Generator, persons: DemoPersons, days: list[date]) -> DemoEvents:
    """Every product event of the demo, as columns (see the module docstring for the story)."""
    n = persons.n
    horizon = len(days) * DAY
    rows = _Rows()
    everyone = np.arange(n)

    # first visit: a page view at arrival, more every 3 s + ~45 s; stop before a same-session signup
    k = 1 + rng.poisson(1.3, n)
    p, t, rank = _expand(rng, everyone, persons.arrival_s, k, 45.0)
    keep = (rank == 0) | ~(t >= persons.signup_s[p] - 2.0)
    rows.add(p[keep & (rank == 0)], t[keep & (rank == 0)], E["$pageview"], first=True)
    rows.add(p[keep & (rank > 0)], t[keep & (rank > 0)], E["$pageview"])

    # visitors who never sign up come back now and then, anonymously
    visitors = everyone[~persons.signed_up]
    returns = rng.poisson(0.6, len(visitors))
    who = np.repeat(visitors, returns)
    start = persons.arrival_s[who] + rng.exponential(4 * DAY, len(who)) + 1800
    p, t, _ = _expand(rng, who, start, 1 + rng.poisson(0.8, len(who)), 45.0)
    rows.add(p, t, E["$pageview"])

    # a later visit ends with the signup for those who did not sign up on their first visit
    signed = everyone[persons.signed_up]
    late = signed[persons.signup_s[signed] - persons.arrival_s[signed] > 1200]
    start = persons.signup_s[late] - rng.uniform(30, 300, len(late))
    p, t, rank = _expand(rng, late, start, 1 + rng.poisson(1.0, len(late)), 45.0)
    keep = (rank == 0) | (t < persons.signup_s[p] - 2.0)
    rows.add(p[keep], t[keep], E["$pageview"])

    # signup, activation, value
    s = persons.signup_s[signed]
    rows.add(signed, s, E["$identify"])
    rows.add(signed, s + 1.0, E["signed_up"])
    rows.add(signed, s + 4.0, E["$pageview"])
    act = everyone[~np.isnan(persons.activated_s)]
    a = persons.activated_s[act]
    rows.add(act, a - rng.uniform(20, 90, len(act)), E["$pageview"])
    rows.add(act, a, E["project_created"])
    val = everyone[~np.isnan(persons.value_s)]
    v = persons.value_s[val]
    rows.add(val, v - rng.uniform(150, 400, len(val)), E["$pageview"])
    rows.add(val, v - rng.uniform(30, 140, len(val)), E["report_created"])
    rows.add(val, v, E["report_shared"])

    _usage(rng, persons, days, signed, rows)

    person = np.concatenate(rows.person)
    t_all = np.concatenate(rows.t)
    ok = (t_all >= 0) & (t_all < horizon)
    order = np.argsort(t_all[ok], kind="stable")
    return DemoEvents(
        person[ok][order],
        t_all[ok][order],
        np.concatenate(rows.code)[ok][order],
        np.concatenate(rows.first)[ok][order],
    )


def _usage(
    rng: np.random.Generator, persons: DemoPersons, days: list[date], signed: IntArray, rows: _Rows
) -> None:
    """Usage sessions of signed-up persons on their active days, until they churn."""
    n_days = len(days)
    day_start = np.arange(n_days) * DAY
    signup_day = np.floor(persons.signup_s[signed] / DAY)
    alive = (np.arange(n_days)[None, :] > signup_day[:, None]) & (
        day_start[None, :] < persons.churn_s[signed][:, None]
    )
    p_active = 0.85 * persons.engagement[signed][:, None] * weekday_factor(days)[None, :]
    active = alive & (rng.random(alive.shape) < p_active)
    who_i, day_i = np.nonzero(active)
    who = signed[who_i]
    n_sessions = 1 + rng.poisson(0.6 * persons.engagement[who])
    who = np.repeat(who, n_sessions)
    start = np.repeat(day_i * DAY, n_sessions) + time_of_day(rng, len(who))
    alive_then = start < persons.churn_s[who]
    who, start = who[alive_then], start[alive_then]
    eng = persons.engagement[who]
    n_events = np.where(rng.random(len(who)) < 0.1, 1, 2 + rng.poisson(2.0 + 5.0 * eng))
    p, t, rank = _expand(rng, who, start, n_events, 50.0)

    names = list(_USAGE_P)
    drawn = rng.choice(len(names), size=len(p), p=np.array(list(_USAGE_P.values())))
    code = np.array([E[name] for name in names])[drawn]
    code[rank == 0] = E["$pageview"]
    # what a person cannot do yet (or at all) becomes something they can
    not_value = ~(t >= persons.value_s[p])
    not_active = ~(t >= persons.activated_s[p])
    code[(code == E["report_shared"]) & not_value] = E["dashboard_viewed"]
    code[(code == E["project_created"]) & not_active] = E["$pageview"]
    code[(code == E["report_created"]) & not_active] = E["$pageview"]
    no_export = ~persons.export_adopter[p] | not_active
    code[(code == E["export_csv"]) & no_export] = E["filter_applied"]
    solo = (persons.plan[p] != "team") & (rng.random(len(p)) < 0.7)
    code[(code == E["invite_sent"]) & solo] = E["search_performed"]
    rows.add(p, t, code)


# ---- to the store ---------------------------------------------------------------------------------------
_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("properties", pa.string()),
        ("received_at", pa.timestamp("us")),
    ]
)


def _uuids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.bytes(16 * n).hex()
    out = []
    for i in range(0, 32 * n, 32):
        h = raw[i : i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}")
    return out


def _properties(
    rng: np.random.Generator, persons: DemoPersons, ev: DemoEvents, is_user: npt.NDArray[np.bool_]
) -> list[str]:
    """The properties JSON text of every event (values are plain ASCII: no escaping needed)."""
    n = len(ev)
    aux = rng.integers(0, 1 << 30, n).tolist()
    browser = persons.browser[ev.person].tolist()
    os_ = persons.os[ev.person].tolist()
    channel = persons.channel[ev.person].tolist()
    anon = persons.anon_id[ev.person].tolist()
    codes = ev.code.tolist()
    first = ev.first.tolist()
    user = is_user.tolist()
    out: list[str] = []
    for i in range(n):
        code = codes[i]
        base = f'"$browser": "{browser[i]}", "$os": "{os_[i]}", "$lib": "web"'
        if code == 0:  # $pageview
            paths = _APP_PATHS if user[i] else _SITE_PATHS
            path = paths[aux[i] % len(paths)]
            extra = f'"$pathname": "{path}", "$current_url": "https://reportly.example{path}"'
            if first[i] and channel[i] != "direct":
                extra += f', "utm_source": "{channel[i]}", "utm_medium": "{_MEDIUM[channel[i]]}"'
        elif code == 1:  # $identify
            extra = f'"$anon_distinct_id": "{anon[i]}"'
        elif code == E["dashboard_viewed"]:
            extra = f'"dashboard_id": {aux[i] % 40 + 1}'
        elif code == E["export_csv"]:
            extra = f'"rows": {aux[i] % 5000 + 10}'
        elif code == E["search_performed"]:
            extra = f'"results": {aux[i] % 25}'
        else:
            key, values = _CHOICES[EVENTS[code]]
            extra = f'"{key}": "{values[aux[i] % len(values)]}"'
        out.append("{" + base + ", " + extra + "}")
    return out


def write_events(
    ws: Workspace, project: ProjectInfo, rng: np.random.Generator, persons: DemoPersons, ev: DemoEvents
) -> int:
    """Store ``ev``: identify calls first (one batch, with merges and person properties), then the rest
    in time order in batches of :data:`BATCH_ROWS`. Returns the number of events stored."""
    is_user = persons.signed_up[ev.person] & (ev.t >= persons.signup_s[ev.person])
    distinct = np.where(is_user, persons.user_id[ev.person], persons.anon_id[ev.person])
    ts = persons.to_datetime(ev.t)
    received = persons.to_datetime(ev.t + rng.uniform(0.05, 3.0, len(ev)))
    table = pa.table(
        {
            "uuid": _uuids(rng, len(ev)),
            "event": np.asarray(EVENTS)[ev.code],
            "distinct_id": distinct,
            "timestamp": ts,
            "properties": _properties(rng, persons, ev, is_user),
            "received_at": received,
        },
        schema=_SCHEMA,
    )
    identify = ev.code == E["$identify"]
    idx = np.nonzero(identify)[0]
    who = ev.person[idx]
    merges = list(zip(persons.anon_id[who].tolist(), persons.user_id[who].tolist(), strict=True))
    when = ts[idx].astype(datetime).tolist()
    prop_rows: list[tuple[str, str, str | None, datetime, bool]] = []
    for uid, plan, country, channel, at in zip(
        persons.user_id[who].tolist(),
        persons.plan[who].tolist(),
        persons.country[who].tolist(),
        persons.channel[who].tolist(),
        when,
        strict=True,
    ):
        prop_rows += [
            (uid, "plan", plan, at, False),
            (uid, "country", country, at, False),
            (uid, "email", f"{uid}@example.com", at, False),
            (uid, "$initial_utm_source", channel, at, True),
        ]
    stored = ws.store.write_arrow(project.id, table.filter(pa.array(identify)), merges, prop_rows).accepted
    rest = table.filter(pa.array(~identify))
    total = rest.num_rows
    for offset in range(0, total, BATCH_ROWS):
        stored += ws.store.write_arrow(project.id, rest.slice(offset, BATCH_ROWS), [], []).accepted
        report_progress(min(offset + BATCH_ROWS, total) / max(total, 1))
    return stored


@register(
    "product",
    order=0,
    description="product events: visits, signups with identify, activation funnel, feature usage, churn",
    metrics=(
        "dau",
        "wau",
        "mau",
        "dau_mau_stickiness",
        "wau_mau",
        "active_days_per_user",
        "day_1_retention",
        "day_7_retention",
        "week_1_retention",
        "user_churn_rate_weekly",
        "signups",
        "signup_conversion_rate",
        "funnel_conversion_rate",
        "activation_rate",
        "time_to_first_value",
        "session_count",
        "avg_session_duration",
        "sessions_per_user",
        "bounce_rate",
        "feature_adoption_rate",
    ),
)
def product_events(
    ws: Workspace, project: ProjectInfo, rng: np.random.Generator, persons: DemoPersons, days: list[date]
) -> None:
    """Generate and store the product events (the demo's first generator)."""
    events = generate_events(rng, persons, days)
    report_progress(0.05)
    write_events(ws, project, rng, persons, events)
