"""``kpilot audit``: is the event data behind the numbers clean? Per event and UTC day, in SQL.

For each event name and UTC calendar day of the event timestamp (UTC, not the project timezone: the
audit is about ingestion, and ingestion statistics are kept per UTC day):

* ``volume``: events stored.
* ``rejected``: rows an import refused (metadata table ``import_rejections``, by the event name and day
  the row claimed; rows without a readable name or day are reported under an unknown event or day). The
  most frequent reasons are listed with one example ``file:line`` each.
* ``deduplicated``: rows dropped at ingestion as repeats of an event already stored (``ingest_stats``).
* ``anonymous``: events of persons who were never identified. A person is *identified* when one of its
  distinct ids sent an identify or alias call (``$identify``, ``$create_alias``, ``$merge_dangerously``;
  Segment ``identify``/``alias`` become these) or when it has two or more distinct ids (ids are only ever
  linked by such calls, or by a Segment message carrying both ``userId`` and ``anonymousId``). The store
  does not remember whether an id came from ``userId`` or ``anonymousId``, so a person known only by a
  ``userId`` that never sent identify counts as anonymous.
* ``future``: timestamp later than ``received_at`` + ``future_hours`` (default 1 hour), or later than now.
* ``past``: timestamp more than ``past_days`` (default 365) before ``received_at``. A deliberate backfill
  of old history shows up here: widen ``past_days`` for such imports.
* schema drift: see :mod:`kpilot.quality.drift`.

The report ends with a verdict: ``clean`` when nothing was rejected, no timestamp is out of range, no
property changed type or disappeared and the ingestion server logged no warning; otherwise ``warnings``
with the list of issues. Duplicates dropped, properties that appeared and anonymous traffic are notices:
they do not distort the numbers by themselves.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, inspect, or_, select

from kpilot.meta.models import ImportRejection, ImportRun
from kpilot.quality.drift import DriftChange, fetch, schema_drift
from kpilot.workspace import ProjectInfo, Workspace

__all__ = ["IDENTIFY_EVENTS", "AuditOptions", "AuditReport", "DayStats", "run_audit"]

IDENTIFY_EVENTS = ("$identify", "$create_alias", "$merge_dangerously")
TOP_REASONS = 20


@dataclass(frozen=True, slots=True)
class AuditOptions:
    date_from: date | None = None
    """First UTC day audited (default: the first day with data)."""
    date_to: date | None = None
    """Last UTC day audited, inclusive (default: the last day with data)."""
    future_hours: float = 1.0
    past_days: float = 365.0
    now: datetime | None = None
    """The current UTC time (naive); tests pin it."""


@dataclass(slots=True)
class DayStats:
    day: date | None
    event: str | None
    volume: int = 0
    rejected: int = 0
    deduplicated: int = 0
    anonymous: int = 0
    future: int = 0
    past: int = 0
    drift: int = 0

    @property
    def anonymous_share(self) -> float | None:
        return self.anonymous / self.volume if self.volume else None

    @property
    def has_issue(self) -> bool:
        return bool(self.rejected or self.future or self.past or self.drift)

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat() if self.day else None,
            "event": self.event,
            "volume": self.volume,
            "rejected": self.rejected,
            "deduplicated": self.deduplicated,
            "anonymous": self.anonymous,
            "anonymous_share": self.anonymous_share,
            "future_timestamps": self.future,
            "past_timestamps": self.past,
            "schema_changes": self.drift,
        }


@dataclass(slots=True)
class AuditReport:
    project: str
    options: AuditOptions
    rows: list[DayStats]
    drift: list[DriftChange]
    rejections_without_detail: int = 0
    """Rejected rows counted by import runs but not kept with a reason (beyond the per-run cap)."""
    ingestion_warnings: list[dict[str, Any]] = field(default_factory=list)
    rejection_reasons: list[dict[str, Any]] = field(default_factory=list)
    """The most frequent reasons of stored rejected rows, with a count and one example ``file:line``."""

    # ---- aggregates -----------------------------------------------------------------------------------
    def totals(self) -> DayStats:
        out = DayStats(None, None)
        for r in self.rows:
            out.volume += r.volume
            out.rejected += r.rejected
            out.deduplicated += r.deduplicated
            out.anonymous += r.anonymous
            out.future += r.future
            out.past += r.past
            out.drift += r.drift
        out.rejected += self.rejections_without_detail
        return out

    def by_event(self) -> list[tuple[str | None, int, DayStats]]:
        """Per event: (event, number of days with events, totals), busiest first."""
        acc: dict[str | None, DayStats] = {}
        days: dict[str | None, set[date]] = defaultdict(set)
        for r in self.rows:
            t = acc.setdefault(r.event, DayStats(None, r.event))
            t.volume += r.volume
            t.rejected += r.rejected
            t.deduplicated += r.deduplicated
            t.anonymous += r.anonymous
            t.future += r.future
            t.past += r.past
            t.drift += r.drift
            if r.day is not None and r.volume:
                days[r.event].add(r.day)
        ordered = sorted(acc.values(), key=lambda s: (-s.volume, s.event or ""))
        return [(s.event, len(days[s.event]), s) for s in ordered]

    def issues(self) -> list[str]:
        t = self.totals()
        out = []
        if t.rejected:
            out.append(f"{t.rejected:,} row(s) rejected at import{_pct(t.rejected, t.volume + t.rejected)}")
        if self.ingestion_warnings:
            n = sum(int(w["count"]) for w in self.ingestion_warnings)
            out.append(f"{n:,} event(s) dropped or altered by the ingestion server")
        if t.future:
            out.append(f"{t.future:,} event(s) timestamped in the future{_pct(t.future, t.volume)}")
        if t.past:
            out.append(
                f"{t.past:,} event(s) timestamped over {self.options.past_days:g} days before receipt"
                f"{_pct(t.past, t.volume)} (a backfill of history? widen --past-days)"
            )
        changed = sum(1 for d in self.drift if d.change == "type_changed")
        gone = sum(1 for d in self.drift if d.change == "disappeared")
        if changed:
            out.append(f"{changed:,} property type change(s)")
        if gone:
            out.append(f"{gone:,} property disappearance(s)")
        return out

    def notices(self) -> list[str]:
        t = self.totals()
        out = []
        if t.deduplicated:
            out.append(f"{t.deduplicated:,} duplicate row(s) dropped at ingestion (not counted twice)")
        appeared = sum(1 for d in self.drift if d.change == "appeared")
        if appeared:
            out.append(f"{appeared:,} property appearance(s)")
        if t.volume:
            out.append(f"{t.anonymous / t.volume:.1%} of events come from persons never identified")
        return out

    @property
    def status(self) -> str:
        return "warnings" if self.issues() else "clean"

    def summary(self) -> str:
        t = self.totals()
        days = {r.day for r in self.rows if r.day is not None and r.volume}
        scope = f"{t.volume:,} events over {len(days)} day(s)"
        issues = self.issues()
        if not issues:
            return (
                f"Clean: {scope}; no rejected rows, no out-of-range timestamps, no property type change "
                "or disappearance. The numbers rest on clean data."
            )
        return f"Check before trusting the numbers ({scope}): " + "; ".join(issues) + "."

    def as_dict(self) -> dict[str, Any]:
        t = self.totals()
        return {
            "project": self.project,
            "status": self.status,
            "summary": self.summary(),
            "issues": self.issues(),
            "notices": self.notices(),
            "options": {
                "date_from": _iso(self.options.date_from),
                "date_to": _iso(self.options.date_to),
                "future_hours": self.options.future_hours,
                "past_days": self.options.past_days,
                "day": "UTC",
            },
            "totals": {k: v for k, v in t.as_dict().items() if k not in ("day", "event")},
            "rejections_without_detail": self.rejections_without_detail,
            "ingestion_warnings": self.ingestion_warnings,
            "rejection_reasons": self.rejection_reasons,
            "by_event": [
                {"event": e, "days": d, **{k: v for k, v in s.as_dict().items() if k not in ("day", "event")}}
                for e, d, s in self.by_event()
            ],
            "days": [r.as_dict() for r in self.rows],
            "schema_drift": [d.as_dict() for d in self.drift],
        }


def _pct(part: int, whole: int) -> str:
    return f" ({part / whole:.2%})" if whole else ""


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


# ---- computing ------------------------------------------------------------------------------------------
def run_audit(ws: Workspace, project: ProjectInfo, options: AuditOptions | None = None) -> AuditReport:
    """Audit ``project`` over the options' UTC days; everything heavy is aggregated in SQL."""
    opts = options or AuditOptions()
    now = opts.now or datetime.now(UTC).replace(tzinfo=None)
    lo = datetime.combine(opts.date_from, datetime.min.time()) if opts.date_from else datetime(1, 1, 1)
    hi = (
        datetime.combine(opts.date_to + timedelta(days=1), datetime.min.time())
        if opts.date_to
        else datetime(9999, 12, 31)
    )
    rows: dict[tuple[date | None, str | None], DayStats] = {}

    def row(day: date | None, event: str | None) -> DayStats:
        return rows.setdefault((day, event), DayStats(day, event))

    for day, event, volume, anonymous, future, past in fetch(
        ws.store,
        _EVENTS_SQL,
        {
            "project": project.id,
            "lo": lo,
            "hi": hi,
            "now": now,
            "future": timedelta(hours=opts.future_hours),
            "past": timedelta(days=opts.past_days),
        },
    ):
        r = row(day, event)
        r.volume, r.anonymous, r.future, r.past = int(volume), int(anonymous), int(future), int(past)
    for day, event, dedup in fetch(
        ws.store,
        """SELECT day, event, sum(deduplicated) FROM ingest_stats
           WHERE project_id = $project AND day >= CAST($lo AS DATE) AND day < CAST($hi AS DATE)
           GROUP BY ALL HAVING sum(deduplicated) > 0""",
        {"project": project.id, "lo": lo, "hi": hi},
    ):
        row(day, event).deduplicated = int(dedup)
    for (day, event), n in _rejections(ws, project, opts).items():
        row(day, event).rejected += n
    drift = schema_drift(ws.store, project.id, lo, hi)
    for d in drift:
        row(d.day, d.event).drift += 1
    ordered = sorted(rows.values(), key=lambda r: (r.day or date.min, r.event or ""))
    return AuditReport(
        project.name,
        opts,
        ordered,
        drift,
        _rejections_without_detail(ws, project),
        _ingestion_warnings(ws, project, lo, hi),
        _rejection_reasons(ws, project, opts),
    )


_EVENTS_SQL = f"""
WITH ids AS (
    SELECT distinct_id, person_id FROM person_distinct_ids WHERE project_id = $project
), identified AS (
    SELECT person_id FROM ids GROUP BY person_id HAVING count(*) > 1
    UNION
    SELECT i.person_id FROM events e JOIN ids i ON i.distinct_id = e.distinct_id
    WHERE e.project_id = $project AND e.event IN ({", ".join(f"'{e}'" for e in IDENTIFY_EVENTS)})
)
SELECT CAST(e.timestamp AS DATE) AS day, e.event, count(*) AS volume,
       count(*) FILTER (WHERE idf.person_id IS NULL) AS anonymous,
       count(*) FILTER (WHERE e.timestamp > e.received_at + $future OR e.timestamp > $now) AS future,
       count(*) FILTER (WHERE e.timestamp < e.received_at - $past) AS past
FROM events e
LEFT JOIN ids i ON i.distinct_id = e.distinct_id
LEFT JOIN identified idf ON idf.person_id = i.person_id
WHERE e.project_id = $project AND e.timestamp >= $lo AND e.timestamp < $hi
GROUP BY ALL
"""


def _rejections(
    ws: Workspace, project: ProjectInfo, opts: AuditOptions
) -> dict[tuple[date | None, str | None], int]:
    """Stored rejected rows by the (day, event) they claimed; unreadable days count under day None."""
    q = (
        select(ImportRejection.day, ImportRejection.event, func.count())
        .where(ImportRejection.project_id == project.id)
        .group_by(ImportRejection.day, ImportRejection.event)
    )
    out: dict[tuple[date | None, str | None], int] = defaultdict(int)
    with ws.meta.session() as s:
        for day_text, event, n in s.execute(q):
            day = _parse_day(day_text)
            if day is not None and (
                (opts.date_from and day < opts.date_from) or (opts.date_to and day > opts.date_to)
            ):
                continue
            out[(day, event)] += int(n)
    return out


def _rejection_reasons(ws: Workspace, project: ProjectInfo, opts: AuditOptions) -> list[dict[str, Any]]:
    """Top :data:`TOP_REASONS` reasons of rejected rows in the range (rows without a day always count)."""
    r = ImportRejection
    conds = [r.project_id == project.id]
    if opts.date_from or opts.date_to:
        lo = opts.date_from.isoformat() if opts.date_from else "0000-00-00"
        hi = opts.date_to.isoformat() if opts.date_to else "9999-99-99"
        conds.append(or_(r.day.is_(None), and_(r.day >= lo, r.day <= hi)))
    q = (
        select(r.reason, func.count(), func.min(r.id))
        .where(*conds)
        .group_by(r.reason)
        .order_by(func.count().desc(), r.reason)
        .limit(TOP_REASONS)
    )
    with ws.meta.session() as s:
        out = []
        for reason, n, first_id in s.execute(q).all():
            example = s.get(ImportRejection, first_id)
            where = f"{example.file}:{example.line}" if example is not None else None
            out.append({"reason": reason, "count": int(n), "example": where})
    return out


def _parse_day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _rejections_without_detail(ws: Workspace, project: ProjectInfo) -> int:
    with ws.meta.session() as s:
        counted = s.scalar(
            select(func.coalesce(func.sum(ImportRun.rows_rejected), 0)).where(
                ImportRun.project_id == project.id
            )
        )
        stored = s.scalar(select(func.count()).where(ImportRejection.project_id == project.id))
    return max(int(counted or 0) - int(stored or 0), 0)


def _ingestion_warnings(
    ws: Workspace, project: ProjectInfo, lo: datetime, hi: datetime
) -> list[dict[str, Any]]:
    """Warnings logged by the ingestion server (table ``ingestion_warnings``, when the workspace has it)."""
    from sqlalchemy import MetaData, Table

    engine = ws.meta.engine
    if not inspect(engine).has_table("ingestion_warnings"):
        return []
    table = Table("ingestion_warnings", MetaData(), autoload_with=engine)
    q = (
        select(table.c.kind, table.c.event, func.count())
        .where(table.c.project_id == project.id, table.c.created_at >= lo, table.c.created_at < hi)
        .group_by(table.c.kind, table.c.event)
        .order_by(func.count().desc())
    )
    with engine.connect() as conn:
        return [{"kind": kind, "event": event, "count": int(n)} for kind, event, n in conn.execute(q)]
