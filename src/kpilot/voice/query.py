"""The ``voice`` query kind: survey scores, feedback sentiment and volume, support times, feature requests.

Rows are bucketed by their time (``responded_at``, ``created_at``) in the query timezone. The person behind
a row is its ``distinct_id``, else its customer's distinct id. ``filters``/``breakdown`` of ``type: "person"``
read that person's properties; ``type: "event"`` reads a column of the row (survey, metric, source, kind,
status, channel, priority) or of its customer (``channel``, ``country``). Each result has a ``series`` (one
point per period) and a ``total`` over the whole range (computed from all rows, not from the points).
Formulas: :mod:`kpilot.voice.metrics`, docs/customer_voice.md.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from kpilot.compute.buckets import as_datetime, bucket_label, buckets
from kpilot.compute.context import BREAKDOWN_NONE, BREAKDOWN_OTHER, QueryContext, _compare
from kpilot.compute.dialect import lit
from kpilot.compute.queries import breakdown as bdmod
from kpilot.compute.spec import Breakdown, VoiceSpec
from kpilot.errors import NotFoundError, SpecError
from kpilot.revenue.schema import missing_tables
from kpilot.revenue.settings import RevenueSettings
from kpilot.voice import metrics
from kpilot.voice.feature_requests import top_requests

__all__ = ["run"]

_TABLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "survey": ("survey_responses", "responded_at", ("survey", "metric")),
    "feedback": ("feedback_items", "created_at", ("source", "kind", "status", "sentiment_label")),
    "tickets": ("tickets", "created_at", ("channel", "priority", "status")),
}
_CUSTOMER_COLS = ("country",)
_SURVEY_METRIC = {
    "nps": "nps",
    "csat": "csat",
    "csat_mean": "csat",
    "ces": "ces",
    "ces_agree_rate": "ces",
    "responses": None,
}
_TIME_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def _column(table: str, key: str, where: str) -> str:
    own = _TABLES[table][2]
    if key in own:
        return f"t.{key}"
    if key == "channel":
        return "coalesce(t.channel, c.channel)" if table == "tickets" else "c.channel"
    if key in _CUSTOMER_COLS:
        return f"c.{key}"
    raise SpecError(
        f"{key!r} is not a column here; expected one of {', '.join((*own, 'channel', *_CUSTOMER_COLS))} "
        f"(or type 'person' for a property of the person)",
        field=where,
    )


def _from(ctx: QueryContext, table: str, where: str) -> str:
    name = _TABLES[table][0]
    return (
        f"FROM {name} t\n"
        f"LEFT JOIN customers c ON c.project_id = t.project_id AND c.customer_id = t.customer_id\n"
        f"LEFT JOIN person_distinct_ids p ON p.project_id = t.project_id AND p.distinct_id = coalesce(t.distinct_id, c.distinct_id)\n"
        f"WHERE t.project_id = {ctx.project_id} AND {where}"
    )


def _scope(
    engine: Any, ctx: QueryContext, spec: VoiceSpec, table: str, extra: str
) -> tuple[str, str, str, list[str]]:
    """``(where, bd expression, local ts expression, top values)``."""
    ts_col = f"t.{_TABLES[table][1]}"
    lo, hi = ctx.utc_range(*spec.local_bounds())
    conds = [f"{ts_col} >= {lit(lo)}", f"{ts_col} < {lit(hi)}", extra]
    for i, f in enumerate(spec.filters):
        if f.type == "person":
            conds.append(ctx.property_condition(f, person_col="p.person_id"))
        else:
            conds.append(_compare(_column(table, f.key, f"filters.{i}.key"), f, ctx.dialect))
    where = " AND ".join(c for c in conds if c)
    local = ctx.local_ts(ts_col)
    if spec.breakdown is None:
        return where, "''", local, []
    raw = _raw(ctx, table, spec.breakdown)
    rows = engine.fetchall(
        f"SELECT v, count(*) AS n FROM (SELECT {raw} AS v {_from(ctx, table, where)}) s WHERE v IS NOT NULL "
        f"GROUP BY v ORDER BY n DESC, v LIMIT {spec.breakdown.limit}"
    )
    top = [str(r[0]) for r in rows]
    values = ", ".join(lit(v) for v in top) or "NULL"
    bd = (
        f"CASE WHEN {raw} IS NULL THEN {lit(BREAKDOWN_NONE)} WHEN {raw} IN ({values}) THEN {raw} "
        f"ELSE {lit(BREAKDOWN_OTHER)} END"
    )
    return where, bd, local, top


def _raw(ctx: QueryContext, table: str, b: Breakdown) -> str:
    if b.type == "person":
        return (
            f"(SELECT pp.value FROM person_properties pp WHERE pp.project_id = {ctx.project_id} "
            f"AND pp.person_id = p.person_id AND pp.key = {lit(b.key)})"
        )
    return _column(table, b.key, "breakdown.key")


def run(engine: Any, ctx: QueryContext, spec: VoiceSpec) -> dict[str, Any]:
    missing = missing_tables(engine)
    if missing:
        raise NotFoundError(
            f"no customer-voice data imported yet (table {missing[0]} is missing): "
            "run `kpilot import surveys|tickets|feedback FILE`"
        )
    header = {"measure": spec.measure, "interval": spec.interval}
    if spec.measure == "feature_requests":
        if spec.breakdown is not None:
            raise SpecError("feature_requests has no breakdown", field="breakdown")
        return {
            **header,
            **top_requests(
                engine, ctx.project_id, spec.first_day, spec.last_day, spec.settings, RevenueSettings()
            ),
        }
    m = spec.measure
    if m in _SURVEY_METRIC:
        table, aggs, point = "survey", _survey_aggs(spec), _survey_point
        metric = _SURVEY_METRIC[m]
        extra = " AND ".join(
            x
            for x in (
                f"t.metric = {lit(metric)}" if metric else "",
                f"t.survey = {lit(spec.survey)}" if spec.survey else "",
            )
            if x
        )
    elif m in ("feedback_volume", "sentiment_score", "sentiment_mean"):
        table, aggs, point = "feedback", _FEEDBACK_AGGS, _feedback_point
        kind = spec.settings.feedback_kind
        extra = "" if kind == "all" else f"t.kind = {lit(kind)}"
    else:
        table, aggs, point = "tickets", _ticket_aggs(ctx, spec), _ticket_point
        extra = ""
    where, bd, local, top = _scope(engine, ctx, spec, table, extra)
    src = _from(ctx, table, where)
    per: dict[str, dict[datetime, tuple[Any, ...]]] = defaultdict(dict)
    for row in engine.fetchall(
        f"SELECT {bd} AS bd, {ctx.trunc(spec.interval, local)} AS b, {aggs} {src} GROUP BY 1, 2"
    ):
        per[str(row[0])][as_datetime(row[1])] = tuple(row[2:])
    totals = {str(r[0]): tuple(r[1:]) for r in engine.fetchall(f"SELECT {bd} AS bd, {aggs} {src} GROUP BY 1")}
    labels = buckets(*spec.local_bounds(), spec.interval, ctx.week_start)

    def build(group: str) -> dict[str, Any]:
        series = [
            {"date": bucket_label(b, spec.interval), **point(spec, per.get(group, {}).get(b))} for b in labels
        ]
        return {"series": series, "total": point(spec, totals.get(group))}

    return {**header, **bdmod.wrap(spec.breakdown, top, set(per) | set(totals), build)}


# ---- surveys ----------------------------------------------------------------------------------------
def _survey_aggs(spec: VoiceSpec) -> str:
    s = spec.settings
    return (
        "count(*), sum(CASE WHEN t.score >= 9 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN t.score BETWEEN 7 AND 8 THEN 1 ELSE 0 END), sum(CASE WHEN t.score <= 6 THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN t.score >= {int(s.csat_satisfied_min)} THEN 1 ELSE 0 END), avg(CAST(t.score AS DOUBLE)), "
        f"sum(CASE WHEN t.score >= {int(s.ces_agree_min)} THEN 1 ELSE 0 END)"
    )


def _survey_point(spec: VoiceSpec, row: tuple[Any, ...] | None) -> dict[str, Any]:
    n, promoters, passives, detractors, satisfied, mean, agree = (
        (int(x) if i != 5 else x) for i, x in enumerate(row or (0, 0, 0, 0, 0, None, 0))
    )
    m = spec.measure
    if m == "nps":
        stats = metrics.nps_stats(
            promoters, passives, detractors, spec.settings.confidence, spec.settings.moe_method
        )
        return {"value": stats.pop("nps"), **stats}
    mean_value = None if mean is None else float(mean)
    if m == "csat":
        return {"value": metrics.percent(satisfied, n), "responses": n, "mean": mean_value}
    if m == "ces_agree_rate":
        return {"value": metrics.percent(agree, n), "responses": n, "mean": mean_value}
    if m in ("csat_mean", "ces"):
        return {"value": mean_value, "responses": n}
    return {"value": n}


# ---- feedback ----------------------------------------------------------------------------------------
_FEEDBACK_AGGS = (
    "count(*), sum(CASE WHEN t.sentiment_label = 'positive' THEN 1 ELSE 0 END), "
    "sum(CASE WHEN t.sentiment_label = 'neutral' THEN 1 ELSE 0 END), "
    "sum(CASE WHEN t.sentiment_label = 'negative' THEN 1 ELSE 0 END), avg(t.sentiment)"
)


def _feedback_point(spec: VoiceSpec, row: tuple[Any, ...] | None) -> dict[str, Any]:
    n, pos, neu, neg, mean = row or (0, 0, 0, 0, None)
    n, pos, neu, neg = int(n), int(pos or 0), int(neu or 0), int(neg or 0)
    counts = {"items": n, "positive": pos, "neutral": neu, "negative": neg}
    if spec.measure == "feedback_volume":
        return {"value": n, **counts}
    if spec.measure == "sentiment_mean":
        return {"value": None if mean is None else float(mean), **counts}
    return {"value": metrics.sentiment_score(pos, neu, neg), **counts}


# ---- tickets -----------------------------------------------------------------------------------------
def _ticket_aggs(ctx: QueryContext, spec: VoiceSpec) -> str:
    d = ctx.dialect
    col = "t.first_response_at" if spec.measure == "first_response_time" else "t.resolved_at"
    secs = f"({d.epoch_seconds(col)} - {d.epoch_seconds('t.created_at')})"
    return (
        f"count(*), sum(CASE WHEN t.escalation_level >= {int(spec.settings.escalation_min_level)} THEN 1 ELSE 0 END), "
        f"count({col}), {d.median(secs)}, {d.quantile(secs, 0.9)}"
    )


def _ticket_point(spec: VoiceSpec, row: tuple[Any, ...] | None) -> dict[str, Any]:
    n, escalated, timed, median, p90 = row or (0, 0, 0, None, None)
    n, escalated, timed = int(n), int(escalated or 0), int(timed or 0)
    if spec.measure == "tickets":
        return {"value": n, "escalated": escalated}
    if spec.measure == "escalation_rate":
        return {"value": metrics.percent(escalated, n), "tickets": n, "escalated": escalated}
    unit = _TIME_UNITS[spec.settings.time_unit]
    return {
        "value": None if median is None else float(median) / unit,
        "p90": None if p90 is None else float(p90) / unit,
        "tickets": n,
        "with_time": timed,
        "unit": spec.settings.time_unit,
    }
