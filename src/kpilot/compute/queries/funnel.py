"""Funnels: how many persons go through a sequence of steps within a conversion window.

The semantics are written out in docs/queries/funnel.md; in short:

* Only events inside the query's date range (local time) exist for the funnel, every step included; the
  spec-level ``filters`` apply to every event (steps, exclusions, and the events that break a strict funnel),
  each step's own ``filters`` only to that step. Timestamps compare in UTC, at microsecond precision.
* An *attempt* starts at every timestamp where the person did step 0. Step ``k`` (k >= 1) must happen
  strictly after step ``k - 1`` and at most ``window`` after step 0 (the window end itself is inside).
* ``ordered``: other events may come in between; each step takes the earliest qualifying event (greedy, which
  reaches the most steps). ``strict``: step ``k`` must happen at the person's next event timestamp after step
  ``k - 1``; events sharing a timestamp are simultaneous, so any of them may be the step. ``unordered``: every
  step-event timestamp is an anchor; a step is done when a matching event lies in ``[anchor, anchor + window]``
  (a step listed ``r`` times needs ``r`` distinct matching timestamps); row ``k`` of the result counts persons
  who completed at least ``k + 1`` steps, and times are between the sorted step times.
* Per person the attempt reaching most steps wins, ties to the earliest start. Persons count once per step.
* Exclusions: a person is dropped if, in any attempt that reached ``from_step``, the exclusion event happens
  strictly after that step and strictly before ``to_step`` (or at most ``window`` after step 0 when the attempt
  never reached ``to_step``).
* Breakdown: the smallest breakdown value among the step-0 (anchor) events at the chosen attempt's start.

Everything is computed in SQL with window functions (one pass per step) and portable constructs only.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, assert_never

from kpilot.compute.context import QueryContext
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import FunnelSpec, FunnelStep

__all__ = ["compile_funnel", "run"]

MICROS = 1_000_000
_FOLLOWING = "ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING"


def run(engine: Any, ctx: QueryContext, spec: FunnelSpec) -> dict[str, Any]:
    start, end = spec.local_bounds()
    if spec.order == "unordered":
        bd_events: list[str | None] = [s.event for s in spec.steps]
        bd_filters = list(spec.filters)
    else:
        bd_events = [spec.steps[0].event]
        bd_filters = [*spec.filters, *spec.steps[0].filters]
    bd_expr, top = bdmod.resolve(engine, ctx, spec.breakdown, start, end, bd_events, bd_filters)
    stats: dict[str, dict[int, tuple[int, float | None, float | None]]] = defaultdict(dict)
    for bd, level, count, avg, median in engine.fetchall(compile_funnel(ctx, spec, start, end, bd_expr)):
        stats[str(bd)][int(level)] = (
            int(count),
            None if avg is None else float(avg),
            None if median is None else float(median),
        )
    return bdmod.wrap(spec.breakdown, top, set(stats), lambda bd: {"steps": _steps(spec, stats.get(bd, {}))})


def _steps(
    spec: FunnelSpec, stats: dict[int, tuple[int, float | None, float | None]]
) -> list[dict[str, Any]]:
    counts = [stats.get(k, (0, None, None))[0] for k in range(len(spec.steps))]
    out: list[dict[str, Any]] = []
    for k, step in enumerate(spec.steps):
        count = counts[k]
        prev = counts[k - 1] if k else count
        _, avg, median = stats.get(k, (0, None, None))
        out.append(
            {
                "step": k,
                "event": step.event,
                "count": count,
                "conversion_from_previous": count / prev if prev else 0.0,
                "conversion_from_first": count / counts[0] if counts[0] else 0.0,
                "drop_off": prev - count,
                "avg_seconds_from_previous": avg if k else None,
                "median_seconds_from_previous": median if k else None,
            }
        )
    return out


# ---- SQL --------------------------------------------------------------------------------------------


def compile_funnel(
    ctx: QueryContext, spec: FunnelSpec, local_start: datetime, local_end: datetime, bd_expr: str | None
) -> str:
    """One SELECT returning ``(bd, level, persons, avg_seconds, median_seconds)`` per reached level."""
    window = spec.window.seconds * MICROS
    n = len(spec.steps)
    groups, slots = _definition_groups(spec.steps)
    if spec.order == "unordered":
        flags = [_flag(ctx, step, f"g{j}") for j, step in enumerate(groups)]
    else:
        flags = [_flag(ctx, step, f"m{k}") for k, step in enumerate(spec.steps)]
    flags += [
        f"CASE WHEN {ctx.event_condition(x.event)} THEN 1 ELSE 0 END AS x{i}"
        for i, x in enumerate(spec.exclusions)
    ]
    # whole microseconds since the epoch (UTC): exact comparisons at the window end, no DST jumps
    micros = f"CAST(round({ctx.dialect.epoch_seconds('e.timestamp')} * {MICROS}) AS BIGINT) AS t"
    events: list[str | None] | None = None
    if spec.order != "strict":
        events = [s.event for s in spec.steps] + [x.event for x in spec.exclusions]
    # The event names are matched by the dialect's fastest form (a CASE for DuckDB, where an IN list of
    # five names costs more than the rest of the scan); only the columns the stages read are kept.
    source = ctx.events_source(
        local_start,
        local_end,
        filters=spec.filters,
        breakdown_expr=bd_expr,
        extra_columns=", ".join([micros, *flags]),
    )
    cols = ", ".join(["person_id", "bd", "t", *(f.rsplit(" AS ", 1)[1] for f in flags)])
    names = None if events is None or None in events else sorted({e for e in events if e is not None})
    where = "" if names is None else f"\nWHERE {ctx.dialect.in_list('event', names)}"
    ctes = [f"ev AS (\nSELECT {cols} FROM (\n{source}\n) src{where}\n)"]
    if spec.order == "ordered":
        ctes += _ordered(n, window)
        times = [f"t{k}" for k in range(n)]
    elif spec.order == "strict":
        ctes += _strict(n, window)
        times = [f"t{k}" for k in range(n)]
    elif spec.order == "unordered":
        ctes += _unordered(groups, slots, window)
        times = [f"c{j}_{r}" for j, r in slots]
    else:
        assert_never(spec.order)
    ctes += _choose(spec, times, window)
    return "WITH " + ",\n".join(ctes) + "\n" + _aggregate(ctx, times, chained=spec.order != "unordered")


def _flag(ctx: QueryContext, step: FunnelStep, name: str) -> str:
    cond = " AND ".join([ctx.event_condition(step.event), *ctx.conditions(step.filters)])
    return f"CASE WHEN {cond} THEN 1 ELSE 0 END AS {name}"


def _definition_groups(steps: list[FunnelStep]) -> tuple[list[FunnelStep], list[tuple[int, int]]]:
    """Distinct step definitions, and per step ``(group, r)``: the r-th occurrence of its definition."""
    groups: list[FunnelStep] = []
    keys: list[tuple[str | None, tuple[str, ...]]] = []
    slots: list[tuple[int, int]] = []
    for step in steps:
        key = step.definition_key()
        if key not in keys:
            keys.append(key)
            groups.append(step)
        j = keys.index(key)
        slots.append((j, 1 + sum(1 for g, _ in slots if g == j)))
    return groups, slots


def _ordered(n: int, window: int) -> list[str]:
    """Stage k: for every attempt still alive, the earliest step-k event strictly after step k-1."""
    ctes = [
        "s0 AS (SELECT person_id, t AS s, min(bd) AS bd, t AS t0 FROM ev WHERE m0 = 1 GROUP BY person_id, t)"
    ]
    for k in range(1, n):
        prev = ", ".join(f"t{j}" for j in range(k))
        nulls = ", ".join("NULL" for _ in range(k))
        # events sort before attempts at an equal time, so the following rows are strictly later events.
        ctes.append(
            f"s{k} AS (\n"
            f"SELECT person_id, s, bd, {prev}, CASE WHEN nx <= s + {window} THEN nx END AS t{k} FROM (\n"
            f"  SELECT person_id, s, bd, {prev}, kind, min(te) OVER (PARTITION BY person_id ORDER BY o, kind {_FOLLOWING}) AS nx\n"
            f"  FROM (SELECT person_id, s, bd, {prev}, t{k - 1} AS o, 1 AS kind, NULL AS te FROM s{k - 1} WHERE t{k - 1} IS NOT NULL\n"
            f"        UNION ALL SELECT person_id, NULL, NULL, {nulls}, t, 0, t FROM ev WHERE m{k} = 1) u\n"
            f") w WHERE kind = 1\n"
            f"UNION ALL SELECT person_id, s, bd, {prev}, NULL FROM s{k - 1} WHERE t{k - 1} IS NULL\n)"
        )
    ctes.append(f"attempts AS (SELECT * FROM s{n - 1})")
    return ctes


def _strict(n: int, window: int) -> list[str]:
    """Per person timeline of distinct timestamps; step k must sit k timestamps after step 0."""
    flags = ", ".join(f"max(m{k}) AS m{k}" for k in range(n))
    leads = ", ".join(
        f"lead(t, {k}) OVER (PARTITION BY person_id ORDER BY t) AS l{k}, "
        f"lead(m{k}, {k}) OVER (PARTITION BY person_id ORDER BY t) AS f{k}"
        for k in range(1, n)
    )
    cols = []
    for k in range(1, n):
        cond = " AND ".join(f"f{j} = 1" for j in range(1, k + 1))
        cols.append(f"CASE WHEN {cond} AND l{k} <= s + {window} THEN l{k} END AS t{k}")
    return [
        f"tl AS (SELECT person_id, t, {flags}, min(CASE WHEN m0 = 1 THEN bd END) AS bd FROM ev GROUP BY person_id, t)",
        f"seq AS (SELECT person_id, t AS s, bd, m0, {leads} FROM tl)",
        f"attempts AS (SELECT person_id, s, bd, s AS t0, {', '.join(cols)} FROM seq WHERE m0 = 1)",
    ]


def _unordered(groups: list[FunnelStep], slots: list[tuple[int, int]], window: int) -> list[str]:
    """Stage j: per anchor, the 1st..r-th distinct group-j timestamps in ``[anchor, anchor + window]``.

    ``q{j}`` lists each person's distinct group-j timestamps with the next ones as ``lead`` columns; those
    columns grow along the list, so a ``min`` over the rows after an anchor is the first row at/after it.
    """
    any_group = " OR ".join(f"g{j} = 1" for j in range(len(groups)))
    ctes = [
        f"u0 AS (SELECT person_id, t AS s, min(bd) AS bd FROM ev WHERE {any_group} GROUP BY person_id, t)"
    ]
    carried: list[str] = []
    for j in range(len(groups)):
        ranks = range(1, 1 + max(r for g, r in slots if g == j))
        leads = "".join(f", lead(t, {r - 1}) OVER (PARTITION BY person_id ORDER BY t) AS r{r}" for r in ranks)
        keep = "".join(f", {c}" for c in carried)
        nulls = "".join(", NULL" for _ in carried)
        rs = ", ".join(f"r{r}" for r in ranks)
        null_rs = ", ".join(f"NULL AS r{r}" for r in ranks)
        mins = ", ".join(
            f"min(r{r}) OVER (PARTITION BY person_id ORDER BY o, kind {_FOLLOWING}) AS n{r}" for r in ranks
        )
        cols = ", ".join(f"CASE WHEN n{r} <= s + {window} THEN n{r} END AS c{j}_{r}" for r in ranks)
        ctes.append(
            f"q{j} AS (SELECT person_id, t{leads} FROM (SELECT DISTINCT person_id, t FROM ev WHERE g{j} = 1) d)"
        )
        # anchors sort before events at an equal time: an event at the anchor's own time counts.
        ctes.append(
            f"u{j + 1} AS (\n"
            f"SELECT person_id, s, bd{keep}, {cols} FROM (\n"
            f"  SELECT person_id, s, bd{keep}, kind, {mins}\n"
            f"  FROM (SELECT person_id, s, bd{keep}, s AS o, 0 AS kind, {null_rs} FROM u{j}\n"
            f"        UNION ALL SELECT person_id, NULL, NULL{nulls}, t, 1, {rs} FROM q{j}) u\n"
            f") w WHERE kind = 0\n)"
        )
        carried += [f"c{j}_{r}" for r in ranks]
    ctes.append(f"attempts AS (SELECT * FROM u{len(groups)})")
    return ctes


def _choose(spec: FunnelSpec, times: list[str], window: int) -> list[str]:
    """Drop excluded persons, keep each person's best attempt, and unpivot its reached step times."""
    ctes: list[str] = []
    keep = ""
    if spec.exclusions:
        parts = []
        for i, x in enumerate(spec.exclusions):
            f, g = f"a.t{x.from_step}", f"a.t{x.to_step}"
            parts.append(
                f"SELECT a.person_id FROM attempts a JOIN ev x ON x.person_id = a.person_id AND x.x{i} = 1\n"
                f"WHERE {f} IS NOT NULL AND x.t > {f}\n"
                f"  AND (({g} IS NOT NULL AND x.t < {g}) OR ({g} IS NULL AND x.t <= a.s + {window}))"
            )
        ctes.append("excluded AS (\n" + "\nUNION ALL\n".join(parts) + "\n)")
        keep = "WHERE person_id NOT IN (SELECT person_id FROM excluded)"
    reached = " + ".join(f"CASE WHEN {c} IS NULL THEN 0 ELSE 1 END" for c in times)
    ctes.append(
        f"best AS (SELECT * FROM (\n"
        f"  SELECT a.*, row_number() OVER (PARTITION BY person_id ORDER BY {reached} DESC, s) AS rn\n"
        f"  FROM attempts a {keep}) r WHERE rn = 1)"
    )
    return ctes


def _aggregate(ctx: QueryContext, times: list[str], *, chained: bool) -> str:
    """Persons, average and median seconds per reached level.

    ``chained`` (``ordered``, ``strict``): a step time is set only when the one before is, and is later, so
    level ``k`` is column ``k`` and its time the difference to column ``k - 1``, no sorting needed. Otherwise
    (``unordered``) each person's reached times are sorted and numbered.
    """
    agg = f"count(*) AS persons, avg(d) AS avg_s, {ctx.dialect.median('d')} AS median_s"
    if chained:
        levels = ["SELECT bd, 0 AS level, CAST(NULL AS DOUBLE) AS d FROM best"] + [
            f"SELECT bd, {k}, ({c} - {times[k - 1]}) / {MICROS}.0 FROM best WHERE {c} IS NOT NULL"
            for k, c in enumerate(times)
            if k
        ]
        return (
            f"SELECT bd, level, {agg}\nFROM (\n" + "\nUNION ALL ".join(levels) + "\n) lv\nGROUP BY bd, level"
        )
    reached = "\n  UNION ALL ".join(
        f"SELECT person_id, bd, {c} AS tt FROM best WHERE {c} IS NOT NULL" for c in times
    )
    over = "OVER (PARTITION BY person_id ORDER BY tt)"
    return (
        f"SELECT bd, level, {agg}\n"
        f"FROM (SELECT bd, row_number() {over} - 1 AS level, (tt - lag(tt) {over}) / {MICROS}.0 AS d\n"
        f"      FROM (\n  {reached}\n) reached) lv\n"
        f"GROUP BY bd, level"
    )
