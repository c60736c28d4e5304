"""A synthetic product's event log at scale, written straight to Parquet one day at a time.

Everything comes from one seed, so ``(events, persons, days, seed)`` always gives the same file. The model:

* **Persons.** 30% exist before day 0 (identified users ``u<p>`` from the start); the others arrive uniformly
  over the days. Each has an activity weight from a Pareto distribution (alpha 1.5, capped at 200): a few
  heavy users and a long tail. 20% never churn; the others stay for an exponential number of days (mean 21).
* **Sessions.** Each day gets its share of the events (weekends 0.7x), cut into sessions of geometric length
  (mean 6 events). A session's owner is drawn among the persons alive that day with probability proportional
  to their weight, and every arriving person has a session on their first day. Session starts follow a daily
  curve; gaps between events are exponential (mean 40 s) with a 3% chance of a 20-50 minute pause, so some
  visits split on the 30-minute inactivity rule. Events are ``$pageview`` (first of every session, then 65%),
  ``$autocapture`` (10%) and ten feature events with Zipf-like shares (25% together).
* **Funnel.** 60% of arriving persons do ``signup_started`` during their first session, then
  ``signup_completed`` (70% of them), ``onboarding_completed`` (65%), ``project_created`` (60%) and
  ``teammate_invited`` (50%) with growing delays, so some finish outside a 7-day window; 15% start a second
  signup attempt a few days later.
* **Identity.** Arriving persons are anonymous (``a<p>``) until ``signup_completed``, where a ``$identify``
  event links ``a<p>`` to ``u<p>``. 5% of identified persons also use a second device (``d<p>``, 30% of their
  sessions) that stays anonymous until a later ``$identify``: those merge two persons that both already have
  events, i.e. identity merges after the fact.

Rows are PostHog-shaped: ``uuid``, ``event``, ``distinct_id``, ``timestamp`` (naive UTC, millisecond
precision) and ``properties`` (JSON text). Each day is sorted by time (a ``$identify`` first among events
at the same instant) and written as one row group; only one day of events is in memory at a time.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "EVENT_NAMES",
    "FEATURES",
    "FUNNEL",
    "GenerationReport",
    "Params",
    "generate",
    "to_jsonl",
]

FEATURES = (
    "search_used",
    "report_exported",
    "link_shared",
    "comment_added",
    "filter_applied",
    "chart_created",
    "api_key_created",
    "integration_connected",
    "alert_configured",
    "theme_changed",
)
FUNNEL = ("signup_started", "signup_completed", "onboarding_completed", "project_created", "teammate_invited")
EVENT_NAMES = ("$pageview", "$autocapture", "$identify", *FUNNEL, *FEATURES)
_CODE = {name: i for i, name in enumerate(EVENT_NAMES)}
_BROWSERS = ("Chrome", "Safari", "Firefox", "Edge", "Mobile Safari")
_ID_PREFIX = ("a", "u", "d")  # anonymous first device, identified user, anonymous second device
_MS_DAY = 86_400_000
_NEVER = np.iinfo(np.int64).max
_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("properties", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class Params:
    events: int = 1_000_000
    persons: int = 20_000
    days: int = 90
    start: date = date(2024, 1, 1)
    seed: int = 7
    existing_share: float = 0.3
    second_device_share: float = 0.05
    mean_session_events: float = 6.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.isoformat()
        return out


@dataclass(slots=True)
class GenerationReport:
    path: str
    events: int = 0
    persons: int = 0
    identifies: int = 0
    late_merges: int = 0
    seconds: float = 0.0
    per_event: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Persons:
    existing: np.ndarray
    arrival: np.ndarray  # day index of first activity
    last: np.ndarray  # last active day index (inclusive)
    weight: np.ndarray
    browser: np.ndarray
    first_start: np.ndarray  # ms of the arrival session (new persons), else 0
    ident_ts: np.ndarray  # ms from which u<p> is used (-1: always, _NEVER: never)
    dev2: np.ndarray  # uses a second device
    dev2_ts: np.ndarray  # ms from which the second device is identified


def _start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Milliseconds into the day: busier in the (UTC) afternoon, quiet at night."""
    hours = np.arange(24)
    weights = 1.2 + np.sin((hours - 9) / 24 * 2 * np.pi)
    hour = rng.choice(24, size=n, p=weights / weights.sum())
    return np.asarray(hour * 3_600_000 + rng.integers(0, 3_600_000, n), dtype=np.int64)


def _persons(p: Params, rng: np.random.Generator, t0: int) -> _Persons:
    n = p.persons
    existing = rng.random(n) < p.existing_share
    arrival = np.where(existing, 0, rng.integers(0, p.days, n)).astype(np.int64)
    weight = np.minimum((1.0 - rng.random(n)) ** (-1 / 1.5), 200.0)
    loyal = rng.random(n) < 0.2
    last = np.where(loyal, p.days, arrival + np.ceil(rng.exponential(21.0, n)).astype(np.int64))
    first_start = np.where(existing, 0, t0 + arrival * _MS_DAY + _time_of_day(rng, n))
    return _Persons(
        existing=existing,
        arrival=arrival,
        last=last,
        weight=weight,
        browser=rng.integers(0, len(_BROWSERS), n),
        first_start=first_start.astype(np.int64),
        ident_ts=np.where(existing, -1, _NEVER).astype(np.int64),
        dev2=np.zeros(n, dtype=bool),
        dev2_ts=np.full(n, _NEVER, dtype=np.int64),
    )


def _exp_ms(rng: np.random.Generator, mean_seconds: float, n: int) -> np.ndarray:
    return (rng.exponential(mean_seconds, n) * 1000).astype(np.int64)


def _extra_events(
    p: Params, rng: np.random.Generator, ps: _Persons, end_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Funnel and $identify events for every person: (person, ts ms, event code, anon kind), sorted by ts.

    ``anon kind`` is the id prefix index of the anonymous id a ``$identify`` links (-1 for other events).
    Also fills in the persons' identification times.
    """
    n = p.persons
    new = ~ps.existing
    fun = new & (rng.random(n) < 0.6)
    t0 = ps.first_start + rng.integers(1_000, 60_000, n)
    done1 = fun & (rng.random(n) < 0.7)
    t1 = t0 + 1_000 + _exp_ms(rng, 300.0, n)
    done2 = done1 & (rng.random(n) < 0.65)
    t2 = t1 + 1_000 + _exp_ms(rng, 6 * 3600.0, n)
    done3 = done2 & (rng.random(n) < 0.6)
    t3 = t2 + 1_000 + _exp_ms(rng, 2 * 86400.0, n)
    done4 = done3 & (rng.random(n) < 0.5)
    t4 = t3 + 1_000 + _exp_ms(rng, 3 * 86400.0, n)
    retry = fun & (rng.random(n) < 0.15)
    t0b = t0 + 3_600_000 + _exp_ms(rng, 2 * 86400.0, n)
    ps.ident_ts[done1] = t1[done1]
    identified = ps.existing | done1
    ps.dev2 = identified & (rng.random(n) < p.second_device_share)
    base = np.where(ps.existing, _start_ms(p.start), np.maximum(t1, ps.first_start))
    ps.dev2_ts = np.where(ps.dev2, base + 3_600_000 + _exp_ms(rng, 7 * 86400.0, n), _NEVER)
    idx = np.arange(n)
    parts: list[tuple[np.ndarray, np.ndarray, int, int]] = [
        (idx[fun], t0[fun], _CODE["signup_started"], -1),
        (idx[retry], t0b[retry], _CODE["signup_started"], -1),
        (idx[done1], t1[done1], _CODE["signup_completed"], -1),
        (idx[done1], t1[done1], _CODE["$identify"], 0),
        (idx[done2], t2[done2], _CODE["onboarding_completed"], -1),
        (idx[done3], t3[done3], _CODE["project_created"], -1),
        (idx[done4], t4[done4], _CODE["teammate_invited"], -1),
        (idx[ps.dev2], ps.dev2_ts[ps.dev2], _CODE["$identify"], 2),
    ]
    person = np.concatenate([a for a, _, _, _ in parts])
    ts = np.concatenate([t for _, t, _, _ in parts])
    code = np.concatenate([np.full(len(a), c, dtype=np.int16) for a, _, c, _ in parts])
    anon = np.concatenate([np.full(len(a), k, dtype=np.int8) for a, _, _, k in parts])
    keep = ts < end_ms
    order = np.argsort(ts[keep], kind="stable")
    return person[keep][order], ts[keep][order], code[keep][order], anon[keep][order]


def _day_budgets(p: Params, rng: np.random.Generator, n_session_events: int) -> np.ndarray:
    weekday = np.array([(p.start + timedelta(days=d)).weekday() for d in range(p.days)])
    weights = np.where(weekday >= 5, 0.7, 1.0)
    return rng.multinomial(n_session_events, weights / weights.sum())


def _session_lengths(rng: np.random.Generator, mean: float, budget: int, forced: int) -> np.ndarray:
    """Geometric session lengths (forced sessions first) summing to exactly ``budget`` events."""
    est = max(int((budget / mean) * 1.2) + 16, forced)
    lengths = rng.geometric(1.0 / mean, est)
    while lengths.sum() < budget:
        lengths = np.concatenate([lengths, rng.geometric(1.0 / mean, est)])
    total = np.cumsum(lengths)
    cut = int(np.searchsorted(total, budget))  # first session reaching the budget
    lengths = lengths[: cut + 1].copy()
    lengths[-1] -= int(total[cut] - budget)
    return lengths[lengths > 0]


def _session_events(
    p: Params, rng: np.random.Generator, ps: _Persons, day: int, day_ms: int, budget: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One day's session events: (person, ts ms, event code, id kind)."""
    arriving = np.flatnonzero((ps.arrival == day) & ~ps.existing)
    lengths = _session_lengths(rng, p.mean_session_events, budget, 0)
    n_forced = min(len(arriving), len(lengths))
    alive = np.flatnonzero((ps.arrival <= day) & (ps.last >= day))
    if len(alive) == 0:
        alive = np.arange(len(ps.arrival))
    w = ps.weight[alive]
    chosen = alive[rng.choice(len(alive), size=len(lengths) - n_forced, p=w / w.sum())]
    owners = np.concatenate([arriving[:n_forced], chosen])
    starts = np.concatenate([ps.first_start[arriving[:n_forced]], day_ms + _time_of_day(rng, len(chosen))])
    on_dev2 = ps.dev2[owners] & (rng.random(len(owners)) < 0.3)
    total = int(lengths.sum())
    first = np.zeros(total, dtype=bool)
    first[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    gaps = _exp_ms(rng, 40.0, total) + 1
    pause = rng.random(total) < 0.03
    gaps[pause] = rng.integers(20 * 60_000, 50 * 60_000, int(pause.sum()))
    gaps[gaps == 30 * 60_000] += 1  # never exactly the 30-minute limit (engines may compare float seconds)
    gaps[first] = 0
    cum = np.cumsum(gaps)
    offsets = cum - np.repeat(cum[first], lengths)
    person = np.repeat(owners, lengths)
    ts = np.repeat(starts, lengths) + offsets
    names = np.array([_CODE["$pageview"], _CODE["$autocapture"], *[_CODE[f] for f in FEATURES]])
    feature_share = 1.0 / np.arange(1, len(FEATURES) + 1)
    probs = np.concatenate([[0.65, 0.10], 0.25 * feature_share / feature_share.sum()])
    code = names[rng.choice(len(names), size=total, p=probs)].astype(np.int16)
    code[first] = _CODE["$pageview"]
    dev = np.repeat(on_dev2, lengths)
    kind = np.where(
        dev,
        np.where(ts >= ps.dev2_ts[person], 1, 2),
        np.where(ts >= ps.ident_ts[person], 1, 0),
    ).astype(np.int8)
    return person, ts, code, kind


def _ids(prefix_kind: np.ndarray, person: np.ndarray) -> pa.Array:
    prefix = pc.take(pa.array(_ID_PREFIX), pa.array(prefix_kind.astype(np.int64)))
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(person), pa.string()), "")


def _table(
    ps: _Persons,
    rng: np.random.Generator,
    first_row: int,
    person: np.ndarray,
    ts: np.ndarray,
    code: np.ndarray,
    kind: np.ndarray,
    anon: np.ndarray,
) -> pa.Table:
    n = len(person)
    uuid = pc.binary_join_element_wise(
        "ev-", pc.cast(pa.array(np.arange(first_row, first_row + n)), pa.string()), ""
    )
    event = pc.take(pa.array(EVENT_NAMES), pa.array(code.astype(np.int64)))
    browser = pc.take(pa.array(_BROWSERS), pa.array(ps.browser[person]))
    page = pc.cast(pa.array(rng.integers(0, 200, n)), pa.string())
    normal = pc.binary_join_element_wise('{"$browser":"', browser, '","$pathname":"/p/', page, '"}', "")
    is_identify = anon >= 0
    linked = _ids(np.maximum(anon, 0), person)
    identify = pc.binary_join_element_wise('{"$anon_distinct_id":"', linked, '"}', "")
    props = pc.if_else(pa.array(is_identify), identify, normal)
    stamp = pa.array((ts * 1000).astype("datetime64[us]"))
    return pa.Table.from_arrays([uuid, event, _ids(kind, person), stamp, props], schema=_SCHEMA)


def generate(p: Params, out: Path) -> GenerationReport:
    """Write ``out`` (one Parquet file, one row group per day) and return what was written."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(p.seed)
    start_ms = _start_ms(p.start)
    end_ms = start_ms + p.days * _MS_DAY
    ps = _persons(p, rng, start_ms)
    x_person, x_ts, x_code, x_anon = _extra_events(p, rng, ps, end_ms)
    if len(x_ts) >= p.events:
        raise ValueError(
            f"{p.events} events are too few for {p.persons} persons (funnel alone needs {len(x_ts)})"
        )
    budgets = _day_budgets(p, rng, p.events - len(x_ts))
    report = GenerationReport(path=str(out), persons=p.persons)
    report.identifies = int((x_code == _CODE["$identify"]).sum())
    report.late_merges = int((x_anon == 2).sum())
    counts = np.zeros(len(EVENT_NAMES), dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    empty = np.zeros(0, dtype=np.int64)
    carry = (empty, empty, empty.astype(np.int16), empty.astype(np.int8), empty.astype(np.int8))
    rows = 0
    with pq.ParquetWriter(tmp, _SCHEMA) as writer:
        for day in range(p.days):
            day_ms = start_ms + day * _MS_DAY
            s_person, s_ts, s_code, s_kind = _session_events(p, rng, ps, day, day_ms, int(budgets[day]))
            lo, hi = np.searchsorted(x_ts, [day_ms, day_ms + _MS_DAY])
            xp, xt = x_person[lo:hi], x_ts[lo:hi]
            x_kind = np.where(xt >= ps.ident_ts[xp], 1, 0).astype(np.int8)
            person = np.concatenate([carry[0], s_person, xp])
            ts = np.concatenate([carry[1], s_ts, xt])
            code = np.concatenate([carry[2], s_code, x_code[lo:hi]])
            kind = np.concatenate([carry[3], s_kind, x_kind])
            anon = np.concatenate([carry[4], np.full(len(s_ts), -1, np.int8), x_anon[lo:hi]])
            now = ts < day_ms + _MS_DAY
            later = ~now
            carry = (person[later], ts[later], code[later], kind[later], anon[later])
            person, ts, code, kind, anon = person[now], ts[now], code[now], kind[now], anon[now]
            order = np.lexsort((anon < 0, ts))  # by time; a $identify first at an equal instant
            person, ts, code, kind, anon = person[order], ts[order], code[order], kind[order], anon[order]
            writer.write_table(
                _table(ps, rng, rows, person, ts, code, kind, anon), row_group_size=len(ts) or 1
            )
            rows += len(ts)
            counts += np.bincount(code, minlength=len(EVENT_NAMES))
    tmp.replace(out)
    report.events = rows
    report.per_event = {name: int(c) for name, c in zip(EVENT_NAMES, counts, strict=True)}
    report.seconds = round(time.perf_counter() - t_start, 3)
    return report


def to_jsonl(parquet: Path, out: Path, limit: int | None = None) -> int:
    """The same events as JSON lines (``properties`` as an object, ``timestamp`` as ISO text ending in Z)."""
    import duckdb

    con = duckdb.connect()
    lim = f" LIMIT {int(limit)}" if limit is not None else ""
    src = str(parquet).replace("'", "''")
    dst = str(out).replace("'", "''")
    con.execute(
        f"""COPY (SELECT uuid, event, distinct_id,
                         strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%gZ') AS timestamp,
                         json(properties) AS properties
                  FROM read_parquet('{src}'){lim}) TO '{dst}' (FORMAT JSON)"""
    )
    n = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM read_parquet('{src}'){lim})").fetchone()
    con.close()
    return int(n[0]) if n else 0


def main(argv: list[str] | None = None) -> None:
    d = Params()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("out", type=Path, help="Parquet file to write")
    ap.add_argument("--events", type=int, default=d.events)
    ap.add_argument("--persons", type=int, default=d.persons)
    ap.add_argument("--days", type=int, default=d.days)
    ap.add_argument("--start", type=date.fromisoformat, default=d.start)
    ap.add_argument("--seed", type=int, default=d.seed)
    args = ap.parse_args(argv)
    params = Params(args.events, args.persons, args.days, args.start, args.seed)
    print(json.dumps(asdict(generate(params, args.out)), indent=2))


if __name__ == "__main__":
    main()
