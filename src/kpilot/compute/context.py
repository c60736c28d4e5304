"""What every compiled query needs: project, timezone, week start, dialect, and the shared event source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from kpilot.compute.dialect import Dialect, lit
from kpilot.compute.spec import Breakdown, PropertyFilter

__all__ = ["BREAKDOWN_NONE", "BREAKDOWN_OTHER", "QueryContext", "local_to_utc"]

BREAKDOWN_OTHER = "$other"
BREAKDOWN_NONE = "$none"


def local_to_utc(local: datetime, tz: str) -> datetime:
    """Wall-clock ``local`` in ``tz`` to naive UTC (the earlier instant for ambiguous times)."""
    return local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class QueryContext:
    project_id: int
    timezone: str
    week_start: str
    dialect: Dialect

    # ---- filters -----------------------------------------------------------------------------------
    def property_condition(
        self, f: PropertyFilter, props_col: str = "e.properties", person_col: str = "p.person_id"
    ) -> str:
        if f.type == "person":
            return self._person_condition(f, person_col)
        expr = self.dialect.json_text(props_col, f.key)
        return _compare(expr, f, self.dialect)

    def _person_condition(self, f: PropertyFilter, person_col: str) -> str:
        base = f"SELECT person_id FROM person_properties WHERE project_id = {self.project_id} AND key = {lit(f.key)}"
        if f.operator == "is_set":
            return f"{person_col} IN ({base} AND value IS NOT NULL)"
        if f.operator == "is_not_set":
            return f"{person_col} NOT IN ({base} AND value IS NOT NULL)"
        if f.operator in ("is_not", "not_icontains"):
            positive = f.model_copy(update={"operator": "exact" if f.operator == "is_not" else "icontains"})
            return f"{person_col} NOT IN ({base} AND {_compare('value', positive, self.dialect)})"
        return f"{person_col} IN ({base} AND {_compare('value', f, self.dialect)})"

    def conditions(self, filters: Sequence[PropertyFilter]) -> list[str]:
        return [self.property_condition(f) for f in filters]

    def event_condition(self, event: str | None, col: str = "e.event") -> str:
        return "TRUE" if event is None else f"{col} = {lit(event)}"

    # ---- time --------------------------------------------------------------------------------------
    def local_ts(self, col: str = "e.timestamp") -> str:
        return self.dialect.local_ts(col, self.timezone)

    def utc_range(self, local_start: datetime, local_end: datetime) -> tuple[datetime, datetime]:
        return local_to_utc(local_start, self.timezone), local_to_utc(local_end, self.timezone)

    def trunc(self, unit: str, expr: str) -> str:
        return self.dialect.trunc(unit, expr, self.week_start)

    # ---- the shared event source --------------------------------------------------------------------
    def events_source(
        self,
        local_start: datetime,
        local_end: datetime,
        *,
        events: Sequence[str | None] | None = None,
        filters: Sequence[PropertyFilter] = (),
        breakdown_expr: str | None = None,
        extra_columns: str = "",
    ) -> str:
        """SELECT of (person_id, event, ts local, bd) for the project, range, events and filters.

        The UTC range is computed here in Python so the store can prune by ``timestamp`` directly.
        """
        lo, hi = self.utc_range(local_start, local_end)
        conds = [
            f"e.project_id = {self.project_id}",
            f"e.timestamp >= {lit(lo)}",
            f"e.timestamp < {lit(hi)}",
        ]
        if events is not None and None not in events:
            names = sorted({e for e in events if e is not None})
            conds.append("e.event IN (" + ", ".join(lit(n) for n in names) + ")" if names else "FALSE")
        conds.extend(self.conditions(filters))
        bd = breakdown_expr or "''"
        extra = f", {extra_columns}" if extra_columns else ""
        return (
            f"SELECT p.person_id, e.event, {self.local_ts()} AS ts, {bd} AS bd{extra}\n"
            f"FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id\n"
            f"WHERE " + "\n  AND ".join(conds)
        )

    def breakdown_raw(self, b: Breakdown) -> str:
        if b.type == "event":
            return self.dialect.json_text("e.properties", b.key)
        return (
            # max() over the single matching row: Spark 3.5 only accepts aggregated correlated subqueries
            f"(SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = {self.project_id} "
            f"AND pp.person_id = p.person_id AND pp.key = {lit(b.key)})"
        )

    def breakdown_expr(self, b: Breakdown, top_values: Sequence[str]) -> str:
        raw = self.breakdown_raw(b)
        if not top_values:
            return f"CASE WHEN {raw} IS NULL THEN {lit(BREAKDOWN_NONE)} ELSE {lit(BREAKDOWN_OTHER)} END"
        values = ", ".join(lit(v) for v in top_values)
        return (
            f"CASE WHEN {raw} IS NULL THEN {lit(BREAKDOWN_NONE)} WHEN {raw} IN ({values}) THEN {raw} "
            f"ELSE {lit(BREAKDOWN_OTHER)} END"
        )

    def top_values_sql(self, b: Breakdown, source_without_bd: str) -> str:
        """Top ``limit`` breakdown values by number of persons, then name (deterministic)."""
        return (
            f"SELECT v, count(DISTINCT person_id) AS n FROM ({source_without_bd}) s WHERE v IS NOT NULL "
            f"GROUP BY v ORDER BY n DESC, v LIMIT {b.limit}"
        )


def _compare(expr: str, f: PropertyFilter, dialect: Dialect) -> str:
    op = f.operator
    value = f.value
    if op == "is_set":
        return f"{expr} IS NOT NULL"
    if op == "is_not_set":
        return f"{expr} IS NULL"
    if op in ("gt", "gte", "lt", "lte"):
        sym = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        return f"{dialect.to_double(expr)} {sym} {lit(value)}"  # type: ignore[arg-type]
    if op in ("icontains", "not_icontains"):
        needle = str(value).lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = "%" + needle + "%"
        core = f"lower({expr}) LIKE {lit(pattern)} ESCAPE '\\'"
        return core if op == "icontains" else f"({expr} IS NULL OR NOT ({core}))"
    values = value if isinstance(value, list) else [value]
    texts = ", ".join(lit(_as_text(v)) for v in values)
    if op == "exact":
        return f"{expr} IN ({texts})"
    if op == "is_not":
        return f"({expr} IS NULL OR {expr} NOT IN ({texts}))"
    raise AssertionError(op)


def _as_text(v: object) -> str:
    """How a JSON scalar reads back as text: true/false, integers without '.0'."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
