"""Per-day, per-event rollups of active persons as roaring bitmaps: exact distinct counts without raw events.

A rollup of one project holds, for every local calendar day ``d`` (in the project timezone) and event name
``e``, the set of persons (their dense integer ids) who did ``e`` on ``d``, and per day the union over all
events. Unions and intersections of these sets answer DAU, rolling WAU/MAU, DAU/MAU, stickiness, recurring
retention and feature adoption exactly (no sampling, no sketches): a rolling MAU value is the size of the union
of 30 day sets, a retention cell the size of a cohort's set intersected with a later period's set.

Identity merges after the fact stay exact. A set holds the person ids current when its events were added;
when a merge later absorbs person ``x`` into ``y`` (:meth:`Rollups.record_merge`), stored sets are left as they
are and every set is *canonicalised* before it is counted or intersected: ``S' = (S - absorbed) |
{survivor(x) : x in S & absorbed}``. Canonicalising commutes with union (it maps elements one by one), so a
union of many day sets is canonicalised once; intersections canonicalise both operands first, because a
person may sit in one set under the old id and in the other under the survivor's. This needs person ids
never to be reused after being absorbed.

What a rollup can answer (:func:`answer` returns ``None`` otherwise, and the caller falls back to raw events):
whole-day date ranges in the rollup's timezone, no property filters, no breakdown, no ``compare``;
trends ``dau``/``unique``/``wau``/``mau``/``dau_mau_ratio`` (any interval the engine allows except hour),
stickiness with ``min_events`` 1, recurring retention by day/week/month (cumulative or not), and feature
adoption. Funnels, sessions and time to value need event times and always use raw events.

:func:`build` makes an in-memory rollup from the stored events and :meth:`Rollups.add` adds a batch of (day,
event, person) rows. The store keeps a persistent rollup per project, maintained in the same transaction as
every write (:mod:`kpilot.store.rollup_store`); :func:`kpilot.compute.rollup_cache.answer_from_store` loads
the part of it a spec needs and answers from it, which is what the DuckDB engine does before it falls back to
raw events. The results are the same JSON the engine returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from pyroaring import BitMap

from kpilot.compute.buckets import bucket_label, buckets, next_bucket
from kpilot.compute.queries.retention import cohort_starts
from kpilot.compute.spec import (
    FeatureAdoptionSpec,
    QuerySpec,
    RetentionSpec,
    StickinessSpec,
    TrendsSpec,
)
from kpilot.store.rollup_store import (
    bitmap_from,
    grouped,
    person_sets,
    project_sources,
)

__all__ = [
    "Rollups",
    "answer",
    "answerable",
    "build",
    "load",
    "needs",
]

_EPOCH = date(1970, 1, 1)
_ROLLING = {"wau": 7, "mau": 30}
_EMPTY = BitMap()
"""Shared empty set: never modified (every operation here makes a new set)."""


@dataclass
class Rollups:
    """The day x event person sets of one project in one timezone, plus the merges to apply at query time."""

    project_id: int
    timezone: str
    by_event: dict[tuple[date, str], BitMap] = field(default_factory=dict)
    any_event: dict[date, BitMap] = field(default_factory=dict)
    survivor: dict[int, int] = field(default_factory=dict)
    """absorbed person id -> the person it was merged into (possibly absorbed later too)."""
    absorbed: BitMap = field(default_factory=BitMap)
    stale: bool = False
    """Set when an added row carries an absorbed person id (the store reused it): rebuild before use."""
    _resolved: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # ---- maintenance ---------------------------------------------------------------------------------
    def add(self, days: Iterable[date], events: Iterable[str], persons: Iterable[int]) -> None:
        """Add rows of (local day, event, person id): what a write batch stores, after identity resolution.

        A person id that was absorbed earlier cannot be told apart from the absorbed person's old entries, so
        such a row marks the rollup :attr:`stale` (it answers nothing until rebuilt).
        """
        for d, e, p in zip(days, events, persons, strict=True):
            if int(p) in self.absorbed:
                self.stale = True
            self.by_event.setdefault((d, e), BitMap()).add(int(p))
            self.any_event.setdefault(d, BitMap()).add(int(p))

    def add_stored(self, day: date, event: str | None, blob: bytes) -> None:
        """Union one stored row (a serialized bitmap; ``event`` None: any event) into the sets."""
        bm = BitMap.deserialize(blob)
        if event is None:
            self.any_event[day] = self.any_event[day] | bm if day in self.any_event else bm
        else:
            key = (day, event)
            self.by_event[key] = self.by_event[key] | bm if key in self.by_event else bm

    def record_merge(self, absorbed: int, into: int) -> None:
        """Person ``absorbed`` now belongs to ``into`` (the store re-pointed its distinct ids)."""
        if absorbed != into:
            self.survivor[absorbed] = into
            self.absorbed.add(absorbed)
            self._resolved = None

    # ---- reading -------------------------------------------------------------------------------------
    def final(self, person: int) -> int:
        seen = 0
        while person in self.survivor and seen <= len(self.survivor):
            person = self.survivor[person]
            seen += 1
        return person

    def _final_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted absorbed ids and, for each, the person it ended up in (chains followed by pointer jumping)."""
        if self._resolved is None:
            src = np.array(sorted(self.survivor), dtype=np.int64)
            dst = np.array([self.survivor[int(a)] for a in src], dtype=np.int64)
            for _ in range(64):  # 2**64 links: any chain (merges never form a cycle: absorbed ids stay dead)
                idx = np.minimum(np.searchsorted(src, dst), len(src) - 1)
                hit = src[idx] == dst
                if not hit.any():
                    break
                dst = np.where(hit, dst[idx], dst)
            self._resolved = (src, dst)
        return self._resolved

    def canonical(self, persons: BitMap) -> BitMap:
        """``persons`` with every absorbed id replaced by the id of the person it ended up in."""
        if not self.survivor:
            return persons
        moved = persons & self.absorbed
        if not moved:
            return persons
        src, dst = self._final_ids()
        ids = np.frombuffer(moved.to_array(), dtype=np.uint32)
        return (persons - self.absorbed) | bitmap_from(dst[np.searchsorted(src, ids)])

    def canonicalised(self) -> Rollups:
        """This rollup with every set canonical and no merges left to apply (itself when it has none)."""
        if not self.survivor:
            return self
        return Rollups(
            self.project_id,
            self.timezone,
            by_event={k: self.canonical(v) for k, v in self.by_event.items()},
            any_event={k: self.canonical(v) for k, v in self.any_event.items()},
            stale=self.stale,
        )

    def day_set(self, day: date, event: str | None) -> BitMap:
        """The stored set of ``day`` and ``event`` as it is (not canonicalised); empty when there is none."""
        got = self.any_event.get(day) if event is None else self.by_event.get((day, event))
        return _EMPTY if got is None else got

    def persons(self, days: Iterable[date], event: str | None = None) -> BitMap:
        """Canonical set of persons who did ``event`` (any event when None) on any of ``days``."""
        if event is None:
            parts = [self.any_event[d] for d in days if d in self.any_event]
        else:
            parts = [self.by_event[(d, event)] for d in days if (d, event) in self.by_event]
        return self.canonical(BitMap.union(*parts)) if parts else BitMap()


def build(store: Any, project_id: int, timezone: str) -> Rollups:
    """A rollup of every stored event of ``project_id``, with local days in ``timezone``."""
    cur = store.cursor()
    try:
        table = grouped(cur, *project_sources(project_id), timezone)
    finally:
        cur.close()
    out = Rollups(project_id, timezone)
    for day, event, persons in person_sets(table):
        if event is None:
            out.any_event[_EPOCH + timedelta(days=day)] = persons
        else:
            out.by_event[(_EPOCH + timedelta(days=day), event)] = persons
    return out


# ---- answering query specs --------------------------------------------------------------------------------
def answerable(spec: QuerySpec, timezone: str) -> bool:
    """Whether a rollup in ``timezone`` answers ``spec`` (it also needs to exist and be current)."""
    if spec.filters or spec.breakdown is not None:
        return False
    if isinstance(spec.date_from, datetime) or isinstance(spec.date_to, datetime):
        return False
    if (spec.timezone or timezone) != timezone:
        return False
    if isinstance(spec, TrendsSpec):
        return not spec.compare and spec.math != "total" and spec.interval != "hour"
    if isinstance(spec, StickinessSpec):
        return spec.min_events == 1
    if isinstance(spec, RetentionSpec):
        return spec.period != "hour" and spec.retention_type == "recurring"
    return isinstance(spec, FeatureAdoptionSpec)


def answer(rollups: Rollups, spec: QuerySpec, week_start: str = "monday") -> dict[str, Any] | None:
    """The engine's result for ``spec`` computed from the rollup, or ``None`` when the rollup cannot answer it."""
    if rollups.stale or not answerable(spec, rollups.timezone):
        return None
    r = rollups.canonicalised()  # every set once, so unions and intersections below need no more
    if isinstance(spec, TrendsSpec):
        return _trends(r, spec, week_start)
    if isinstance(spec, StickinessSpec):
        return _stickiness(r, spec, week_start)
    if isinstance(spec, RetentionSpec):
        return _retention(r, spec, spec.week_start or week_start)
    if isinstance(spec, FeatureAdoptionSpec):
        return _adoption(r, spec, week_start)
    return None


def needs(spec: QuerySpec, week_start: str) -> tuple[date, date, set[str | None]]:
    """Days (first, last) and events whose sets answering ``spec`` reads."""
    if isinstance(spec, RetentionSpec):
        starts = cohort_starts(spec, spec.week_start or week_start)
        last = next_bucket(starts[-1], spec.period).date() - timedelta(days=1)
        return starts[0].date(), last, {spec.start_event, spec.return_event}
    first = spec.first_day - timedelta(days=max(_ROLLING.values()))
    if isinstance(spec, FeatureAdoptionSpec):
        return first, spec.last_day, {spec.event, spec.active_event}
    if isinstance(spec, TrendsSpec | StickinessSpec):
        return first, spec.last_day, {spec.event}
    raise AssertionError(f"not answerable from rollups: {spec.kind}")


def _fetch(
    cursor: Any,
    project_id: int,
    first: date,
    last: date,
    events: Iterable[str | None],
    sizes: dict[tuple[date, str | None], int] | None = None,
) -> dict[tuple[date, str | None], BitMap]:
    """The stored sets of days ``first``..``last`` and ``events`` (None: any event), delta rows unioned, not
    canonicalised; ``sizes`` receives the stored size of each set (its rows' bytes)."""
    named = sorted(e for e in events if e is not None)
    params: list[Any] = [project_id, first, last]
    clauses = ["event IS NULL"] if None in events else []
    if named:
        clauses.append("list_contains($4::VARCHAR[], event)")
        params.append(named)
    if not clauses:
        return {}
    rows = cursor.execute(
        f"""SELECT day, event, persons FROM rollup_persons
            WHERE project_id = $1 AND day BETWEEN $2 AND $3 AND ({" OR ".join(clauses)})""",
        params,
    ).fetchall()
    parts: dict[tuple[date, str | None], list[BitMap]] = {}
    for day, event, blob in rows:
        parts.setdefault((day, event), []).append(BitMap.deserialize(blob))
        if sizes is not None:
            sizes[(day, event)] = sizes.get((day, event), 0) + len(blob)
    return {k: v[0] if len(v) == 1 else BitMap.union(*v) for k, v in parts.items()}


def _merges(cursor: Any, project_id: int, into: Rollups) -> None:
    for absorbed, survivor in cursor.execute(
        "SELECT absorbed, survivor FROM rollup_merges WHERE project_id = ?", [project_id]
    ).fetchall():
        into.record_merge(int(absorbed), int(survivor))


def load(
    cursor: Any, project_id: int, timezone: str, first: date, last: date, events: set[str | None]
) -> Rollups:
    """The stored rollup's sets for days ``first``..``last`` and ``events`` (None: any event), with merges."""
    out = Rollups(project_id, timezone)
    for (day, event), bm in _fetch(cursor, project_id, first, last, events).items():
        if event is None:
            out.any_event[day] = bm
        else:
            out.by_event[(day, event)] = bm
    _merges(cursor, project_id, out)
    return out


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _bucket_days(start: datetime, interval: str, first: date, last: date) -> list[date]:
    """Days of the bucket starting at ``start`` that lie inside ``[first, last]``."""
    end = next_bucket(start, interval).date()
    return _days(max(start.date(), first), min(end - timedelta(days=1), last))


def _union(r: Rollups, days: Iterable[date], event: str | None) -> BitMap:
    """Union of the day sets of ``days`` (``r`` canonical: see :meth:`Rollups.canonicalised`)."""
    parts = [r.day_set(d, event) for d in days]
    parts = [p for p in parts if p]
    if not parts:
        return BitMap()
    return parts[0] if len(parts) == 1 else BitMap.union(*parts)


def _rolling(r: Rollups, event: str | None, first: date, last: date, window: int) -> list[int]:
    """For each day of ``first``..``last``, the number of persons in the union of the ``window`` day sets
    ending on it.

    Days are cut into blocks of ``window`` (counted from ``first - window + 1``); per day the union of its
    block up to it (prefix) and from it to the block's end (suffix). A window is one prefix when it starts a
    block, else the suffix of its first day plus the prefix of its last: three unions per day, not ``window``.
    """
    sets = [r.day_set(d, event) for d in _days(first - timedelta(days=window - 1), last)]
    n = len(sets)
    prefix: list[BitMap] = []
    for i, s in enumerate(sets):
        prefix.append(s if i % window == 0 else prefix[i - 1] | s)
    suffix: list[BitMap] = [_EMPTY] * n
    for i in range(n - 1, -1, -1):
        end_of_block = i % window == window - 1 or i == n - 1
        suffix[i] = sets[i] if end_of_block else sets[i] | suffix[i + 1]
    out = []
    for i in range(window - 1, n):
        lo = i - window + 1
        if lo % window == 0:
            out.append(len(prefix[i]))
        else:
            out.append(suffix[lo].union_cardinality(prefix[i]))
    return out


def _trends(r: Rollups, spec: TrendsSpec, week_start: str) -> dict[str, Any] | None:
    if spec.compare or spec.math == "total" or spec.interval == "hour":
        return None
    first, last = spec.first_day, spec.last_day
    start, end = spec.local_bounds()
    if spec.interval == "day" and spec.math in ("wau", "mau", "dau_mau_ratio"):
        counts = _rolling(r, spec.event, first, last, _ROLLING.get(spec.math, 30))
        values: list[int | float] = []
        for d, n in zip(_days(first, last), counts, strict=True):
            if spec.math == "dau_mau_ratio":
                dau = len(r.day_set(d, spec.event))
                values.append(dau / n if n else 0.0)
            else:
                values.append(n)
        return {
            "series": [
                {"date": d.isoformat(), "value": v} for d, v in zip(_days(first, last), values, strict=True)
            ]
        }
    series = []
    for b in buckets(start, end, spec.interval, week_start):
        n = len(_union(r, _bucket_days(b, spec.interval, first, last), spec.event))
        series.append({"date": bucket_label(b, spec.interval), "value": n})
    return {"series": series}


def _stickiness(r: Rollups, spec: StickinessSpec, week_start: str) -> dict[str, Any] | None:
    if spec.min_events != 1:
        return None
    start, end = spec.local_bounds()
    labels = buckets(start, end, spec.interval, week_start)
    sets = [
        _union(r, _bucket_days(b, spec.interval, spec.first_day, spec.last_day), spec.event) for b in labels
    ]
    hist = _times_seen(sets)
    counts = [hist.get(k, 0) for k in range(1, len(labels) + 1)]
    if spec.cumulative:
        for i in range(len(counts) - 2, -1, -1):
            counts[i] += counts[i + 1]
    return {"values": counts, "intervals": len(labels)}


def _times_seen(sets: list[BitMap]) -> dict[int, int]:
    """How many persons are in exactly ``k`` of ``sets``, per ``k`` >= 1 that occurs.

    Bitmaps only: each person's count is kept in binary across bit planes (adding a set is a ripple carry of
    intersections and symmetric differences), then the union of the sets is split plane by plane into the
    persons of each count.
    """
    planes: list[BitMap] = []
    for s in sets:
        carry = s
        for j in range(len(planes)):
            if not carry:
                break
            planes[j], carry = planes[j] ^ carry, planes[j] & carry
        else:
            if carry:
                planes.append(carry)
    groups = {0: BitMap.union(*sets)} if sets else {}
    for j in range(len(planes) - 1, -1, -1):
        split: dict[int, BitMap] = {}
        for k, persons in groups.items():
            split[k | 1 << j] = persons & planes[j]
            split[k] = persons - planes[j]
        groups = {k: g for k, g in split.items() if g}
    return {k: len(g) for k, g in groups.items() if k}


def _retention(r: Rollups, spec: RetentionSpec, week_start: str) -> dict[str, Any] | None:
    if spec.period == "hour" or spec.retention_type != "recurring":
        return None
    starts = cohort_starts(spec, week_start)
    n = spec.intervals

    def period_days(i: int) -> list[date]:
        lo = starts[i]
        return _days(lo.date(), next_bucket(lo, spec.period).date() - timedelta(days=1))

    cohorts = [_union(r, period_days(i), spec.start_event) for i in range(n)]
    if spec.return_event == spec.start_event:
        returns = list(cohorts)
    else:
        returns = [_union(r, period_days(i), spec.return_event) for i in range(n)]
    if spec.cumulative:  # "on or after": returned in period p or later
        for i in range(n - 2, -1, -1):
            returns[i] = returns[i] | returns[i + 1]
    rows = []
    for c in range(n):
        values = [len(cohorts[c])] + [
            cohorts[c].intersection_cardinality(returns[c + k]) if c + k < n else 0 for k in range(1, n)
        ]
        rows.append({"date": bucket_label(starts[c], spec.period), "values": values})
    return {"rows": rows}


def _adoption(r: Rollups, spec: FeatureAdoptionSpec, week_start: str) -> dict[str, Any]:
    start, end = spec.local_bounds()
    series = []
    for b in buckets(start, end, spec.interval, week_start):
        days = _bucket_days(b, spec.interval, spec.first_day, spec.last_day)
        active = _union(r, days, spec.active_event)
        adopters = _union(r, days, spec.event).intersection_cardinality(active)
        n = len(active)
        series.append(
            {
                "date": bucket_label(b, spec.interval),
                "adopters": adopters,
                "active": n,
                "value": adopters / n if n else 0.0,
            }
        )
    return {"series": series}
