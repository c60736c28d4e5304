"""Filters and breakdowns of customer-based measures (MRR, movements, CAC by channel ...).

A customer-based measure counts customers, not events, so its ``filters`` and ``breakdown`` read customer
data: ``type: "person"`` is a property of the person linked to the customer (customers.distinct_id ->
person), ``type: "event"`` names a customer attribute: ``channel`` (imported, else the person's first-touch
``utm_source`` or ``$referring_domain`` from events), ``country``, ``customer_id``, ``email`` or ``name``.
Breakdown values follow the engine's rules: the ``limit`` values with most customers, then ``$other`` and
``$none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kpilot.compute.context import BREAKDOWN_NONE, BREAKDOWN_OTHER, QueryContext, _compare
from kpilot.compute.dialect import lit
from kpilot.compute.spec import Breakdown, PropertyFilter
from kpilot.errors import SpecError
from kpilot.revenue.mrr import CustomerScope

__all__ = ["CUSTOMER_ATTRIBUTES", "customer_scope", "first_touch_cte"]

CUSTOMER_ATTRIBUTES = ("channel", "country", "customer_id", "email", "name")


def first_touch_cte(ctx: QueryContext) -> str:
    """``ft(person_id, channel)``: the ``utm_source`` (else ``$referring_domain``) of each person's earliest
    event that has one."""
    d = ctx.dialect
    ch = f"coalesce({d.json_text('e.properties', 'utm_source')}, {d.json_text('e.properties', '$referring_domain')})"
    return (
        f"ft AS (SELECT person_id, channel FROM (\n"
        f"  SELECT p.person_id, {ch} AS channel,\n"
        f"         row_number() OVER (PARTITION BY p.person_id ORDER BY e.timestamp, e.uuid) AS rn\n"
        f"  FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id\n"
        f"  WHERE e.project_id = {ctx.project_id} AND {ch} IS NOT NULL) x WHERE rn = 1)"
    )


def _attr_expr(key: str, where: str) -> str:
    if key not in CUSTOMER_ATTRIBUTES:
        raise SpecError(
            f"{key!r} is not a customer attribute; expected one of {', '.join(CUSTOMER_ATTRIBUTES)} "
            f"(or use type 'person' for a property of the customer's person)",
            field=where,
        )
    if key == "channel":
        return "coalesce(c.channel, ft.channel)"
    return f"c.{key}"


def _uses_channel(filters: Sequence[PropertyFilter], breakdown: Breakdown | None) -> bool:
    items: list[PropertyFilter | Breakdown] = [*filters, *([breakdown] if breakdown else [])]
    return any(i.type == "event" and i.key == "channel" for i in items)


def customer_scope(
    engine: Any, ctx: QueryContext, filters: Sequence[PropertyFilter], breakdown: Breakdown | None
) -> tuple[CustomerScope, list[str]]:
    """The scope for ``filters``/``breakdown`` and the top breakdown values (``[]`` without breakdown)."""
    conds: list[str] = []
    for i, f in enumerate(filters):
        if f.type == "person":
            conds.append(ctx.property_condition(f, person_col="p.person_id"))
        else:
            conds.append(_compare(_attr_expr(f.key, f"filters.{i}.key"), f, ctx.dialect))
    where = " AND ".join(conds) or "TRUE"
    channel = _uses_channel(filters, breakdown)
    ctes = first_touch_cte(ctx) + ",\n" if channel else ""
    joins = "LEFT JOIN ft ON ft.person_id = p.person_id" if channel else ""
    if breakdown is None:
        return CustomerScope(where=where, ctes=ctes, joins=joins), []
    if breakdown.type == "person":
        raw = (
            f"(SELECT pp.value FROM person_properties pp WHERE pp.project_id = {ctx.project_id} "
            f"AND pp.person_id = p.person_id AND pp.key = {lit(breakdown.key)})"
        )
    else:
        raw = _attr_expr(breakdown.key, "breakdown.key")
    with_ = f"WITH {ctes.rstrip().rstrip(',')}\n" if ctes else ""
    rows = engine.fetchall(
        f"{with_}SELECT v, count(*) AS n FROM (SELECT {raw} AS v FROM customers c\n"
        f"LEFT JOIN person_distinct_ids p ON p.project_id = c.project_id AND p.distinct_id = c.distinct_id\n"
        f"{joins}\nWHERE c.project_id = {ctx.project_id} AND {where}) s WHERE v IS NOT NULL\n"
        f"GROUP BY v ORDER BY n DESC, v LIMIT {breakdown.limit}"
    )
    top = [str(r[0]) for r in rows]
    if top:
        values = ", ".join(lit(v) for v in top)
        bd = (
            f"CASE WHEN {raw} IS NULL THEN {lit(BREAKDOWN_NONE)} WHEN {raw} IN ({values}) THEN {raw} "
            f"ELSE {lit(BREAKDOWN_OTHER)} END"
        )
    else:
        bd = f"CASE WHEN {raw} IS NULL THEN {lit(BREAKDOWN_NONE)} ELSE {lit(BREAKDOWN_OTHER)} END"
    return CustomerScope(where=where, bd=bd, ctes=ctes, joins=joins), top
