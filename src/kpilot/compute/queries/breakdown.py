"""Breakdowns shared by every query kind: top-N values by persons, plus "$other" and "$none"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from kpilot.compute.context import BREAKDOWN_NONE, BREAKDOWN_OTHER, QueryContext
from kpilot.compute.spec import Breakdown, PropertyFilter

__all__ = ["breakdown_values", "resolve", "wrap"]


def resolve(
    engine: Any,
    ctx: QueryContext,
    breakdown: Breakdown | None,
    local_start: datetime,
    local_end: datetime,
    events: Sequence[str | None] | None,
    filters: Sequence[PropertyFilter],
) -> tuple[str | None, list[str]]:
    """The SQL expression for column ``bd`` and the top values, or ``(None, [])`` without a breakdown."""
    if breakdown is None:
        return None, []
    source = ctx.events_source(
        local_start,
        local_end,
        events=events,
        filters=filters,
        extra_columns=f"{ctx.breakdown_raw(breakdown)} AS v",
    )
    rows = engine.fetchall(ctx.top_values_sql(breakdown, source))
    top = [str(r[0]) for r in rows]
    return ctx.breakdown_expr(breakdown, top), top


def breakdown_values(top: Sequence[str], present: set[str]) -> list[str]:
    """Result order: top values, then "$other" and "$none" when they occur."""
    out = list(top)
    out += [v for v in (BREAKDOWN_OTHER, BREAKDOWN_NONE) if v in present]
    return out


def wrap(
    breakdown: Breakdown | None, top: Sequence[str], present: set[str], build: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """Without a breakdown: ``build('')``. With one: one result per value under ``results``."""
    if breakdown is None:
        return build("")
    return {
        "breakdown": {"key": breakdown.key, "type": breakdown.type},
        "results": [{"breakdown_value": v, **build(v)} for v in breakdown_values(top, present)],
    }
