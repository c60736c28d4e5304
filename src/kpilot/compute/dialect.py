"""SQL dialects: the few constructs that differ between DuckDB and Spark SQL.

The compiler writes everything else in plain ANSI-ish SQL and asks the dialect for these fragments, so one
compiler serves every engine. Golden SQL snapshots pin the DuckDB output.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

__all__ = ["DIALECTS", "Dialect", "DuckDBDialect", "SparkDialect", "lit"]


def lit(value: str | int | float | bool | date | datetime | None) -> str:
    """A SQL literal; strings are quoted with doubled single quotes (the only escape ANSI SQL needs)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


class Dialect(Protocol):
    name: str

    def local_ts(self, col: str, tz: str) -> str: ...
    def json_text(self, col: str, key: str) -> str: ...
    def trunc(self, unit: str, expr: str, week_start: str = "monday") -> str: ...
    def add_days(self, expr: str, days: str | int) -> str: ...
    def epoch_seconds(self, expr: str) -> str: ...
    def median(self, expr: str) -> str: ...
    def quantile(self, expr: str, q: float) -> str: ...
    def to_double(self, expr: str) -> str: ...
    def periods_between(self, unit: str, start: str, end: str) -> str: ...
    def arg_min(self, value: str, key: str) -> str: ...
    def in_list(self, expr: str, values: list[str]) -> str: ...


class DuckDBDialect:
    name = "duckdb"

    def local_ts(self, col: str, tz: str) -> str:
        if tz == "UTC":
            return col
        return f"timezone({lit(tz)}, {col} AT TIME ZONE 'UTC')"

    def json_text(self, col: str, key: str) -> str:
        path = '$."' + key.replace('"', '\\"') + '"'
        return f"json_extract_string({col}, {lit(path)})"

    def trunc(self, unit: str, expr: str, week_start: str = "monday") -> str:
        if unit == "week" and week_start == "sunday":
            return f"(date_trunc('week', {expr} + INTERVAL 1 DAY) - INTERVAL 1 DAY)"
        return f"date_trunc({lit(unit)}, {expr})"

    def add_days(self, expr: str, days: str | int) -> str:
        return f"({expr} + to_days(CAST({days} AS INTEGER)))"

    def epoch_seconds(self, expr: str) -> str:
        return f"epoch({expr})"

    def median(self, expr: str) -> str:
        return f"quantile_cont({expr}, 0.5)"

    def quantile(self, expr: str, q: float) -> str:
        return f"quantile_cont({expr}, {q!r})"

    def to_double(self, expr: str) -> str:
        return f"TRY_CAST({expr} AS DOUBLE)"

    def arg_min(self, value: str, key: str) -> str:
        return f"arg_min({value}, {key})"

    def in_list(self, expr: str, values: list[str]) -> str:
        """``expr IN (values)`` as a CASE: DuckDB evaluates it inside the scan, where an IN list of several
        strings is planned as a join costing about 3x as much per row of a large table. The range in front
        lets the scan skip row groups whose min/max exclude every name (an IN list would; a CASE does not).
        Parenthesised, so it stays one condition wherever a caller puts it.
        """
        if not values:
            return "FALSE"
        if len(values) == 1:
            return f"{expr} = {lit(values[0])}"
        whens = " ".join(f"WHEN {lit(v)} THEN TRUE" for v in values)
        lo, hi = min(values), max(values)
        return f"({expr} >= {lit(lo)} AND {expr} <= {lit(hi)} AND CASE {expr} {whens} ELSE FALSE END)"

    def periods_between(self, unit: str, start: str, end: str) -> str:
        """Whole calendar ``unit``s from ``start`` to ``end``; both must already be truncated to ``unit``."""
        if unit == "week":
            return f"(date_diff('day', {start}, {end}) // 7)"
        if unit in ("hour", "day", "month"):
            return f"date_diff({lit(unit)}, {start}, {end})"
        raise ValueError(f"unknown unit {unit!r}")


class SparkDialect:
    name = "spark"

    def local_ts(self, col: str, tz: str) -> str:
        if tz == "UTC":
            return col
        return f"from_utc_timestamp({col}, {lit(tz)})"

    def json_text(self, col: str, key: str) -> str:
        """Same text as DuckDB's ``json_extract_string``: strings unquoted, other values as compact JSON.

        The bracket path ``$['key']`` reads any key except ones with a quote or ``*`` (Spark's path parser
        stops or wildcards there); those go through a JSON-to-map parse, which gives the same text.
        """
        if "'" in key or "*" in key:
            return f"try_element_at(from_json({col}, 'map<string,string>'), {lit(key)})"
        path = "$['" + key + "']"
        return f"get_json_object({col}, {lit(path)})"

    def trunc(self, unit: str, expr: str, week_start: str = "monday") -> str:
        if unit == "week" and week_start == "sunday":
            return f"(date_trunc('week', {expr} + INTERVAL 1 DAY) - INTERVAL 1 DAY)"
        return f"date_trunc({lit(unit)}, {expr})"

    def add_days(self, expr: str, days: str | int) -> str:
        return f"({expr} + make_interval(0, 0, 0, CAST({days} AS INT)))"

    def epoch_seconds(self, expr: str) -> str:
        # a DOUBLE like DuckDB's epoch() (``/ 1000000.0`` would make a DECIMAL in Spark)
        return f"(CAST(unix_micros({expr}) AS DOUBLE) / 1000000)"

    def median(self, expr: str) -> str:
        return f"percentile({expr}, 0.5)"

    def quantile(self, expr: str, q: float) -> str:
        return f"percentile({expr}, {q!r})"

    def to_double(self, expr: str) -> str:
        return f"TRY_CAST({expr} AS DOUBLE)"

    def arg_min(self, value: str, key: str) -> str:
        return f"min_by({value}, {key})"

    def in_list(self, expr: str, values: list[str]) -> str:
        if not values:
            return "FALSE"
        return f"{expr} IN ({', '.join(lit(v) for v in values)})"

    def periods_between(self, unit: str, start: str, end: str) -> str:
        """Whole calendar ``unit``s from ``start`` to ``end`` (wall-clock, independent of the session zone)."""
        days = f"datediff(CAST({end} AS DATE), CAST({start} AS DATE))"
        if unit == "hour":
            return f"({days} * 24 + hour({end}) - hour({start}))"
        if unit == "day":
            return days
        if unit == "week":
            return f"({days} div 7)"
        if unit == "month":
            return f"((year({end}) - year({start})) * 12 + month({end}) - month({start}))"
        raise ValueError(f"unknown unit {unit!r}")


DIALECTS: dict[str, Dialect] = {"duckdb": DuckDBDialect(), "spark": SparkDialect()}
