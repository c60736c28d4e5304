"""Property schema drift: per event, compare the property keys and JSON types of each day with the day before.

"The day before" is the previous UTC day on which the same event occurred (a day without the event is
skipped, not compared as empty). For each (event, day) the set of keys seen on any event of that day is
compared with the set of the previous day:

* ``appeared``: the key occurs today and did not occur on the previous day;
* ``disappeared``: the key occurred on the previous day and does not occur today;
* ``type_changed``: the key occurs on both days and the set of JSON types it held differs (for example
  ``{number}`` then ``{string}``, or ``{number}`` then ``{number, string}``). ``null`` values are left out of
  the type sets: a property that is sometimes null has not changed type.

JSON types are the JSON ones (``string``, ``number``, ``boolean``, ``object``, ``array``), so an integer
and a decimal are both ``number``. Everything is aggregated in DuckDB (``json_each`` over the properties);
only the changes come back to Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from kpilot.store.duckdb_store import EventStore

__all__ = ["DriftChange", "fetch", "schema_drift"]

Change = Literal["appeared", "disappeared", "type_changed"]

_JSON_TYPE = """CASE j.type WHEN 'VARCHAR' THEN 'string' WHEN 'BIGINT' THEN 'number' WHEN 'UBIGINT' THEN 'number'
    WHEN 'DOUBLE' THEN 'number' WHEN 'BOOLEAN' THEN 'boolean' WHEN 'OBJECT' THEN 'object'
    WHEN 'ARRAY' THEN 'array' ELSE 'null' END"""


@dataclass(frozen=True, slots=True)
class DriftChange:
    event: str
    day: date
    previous_day: date
    key: str
    change: Change
    types_before: list[str]
    types_after: list[str]
    events_with_key: int
    """Events carrying the key: on ``day`` (appeared, type_changed) or on ``previous_day`` (disappeared)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "day": self.day.isoformat(),
            "previous_day": self.previous_day.isoformat(),
            "key": self.key,
            "change": self.change,
            "types_before": self.types_before,
            "types_after": self.types_after,
            "events_with_key": self.events_with_key,
        }

    def describe(self) -> str:
        if self.change == "appeared":
            return f"{self.key!r} appeared ({'/'.join(self.types_after) or 'null'})"
        if self.change == "disappeared":
            return f"{self.key!r} disappeared (was {'/'.join(self.types_before) or 'null'})"
        return f"{self.key!r} changed type {'/'.join(self.types_before)} -> {'/'.join(self.types_after)}"


def fetch(store: EventStore, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run one SELECT with named ``$parameters`` on a fresh cursor."""
    cur = store.cursor()
    try:
        return cur.execute(sql, params).fetchall()
    finally:
        cur.close()


_EARLIEST = datetime(1, 1, 1)
_LATEST = datetime(9999, 12, 31)


def schema_drift(
    store: EventStore, project_id: int, lo: datetime | None = None, hi: datetime | None = None
) -> list[DriftChange]:
    """Changes on the UTC days in ``[lo, hi)`` (``None``: unbounded), each against its previous event day."""
    lo = lo or _EARLIEST
    hi = hi or _LATEST
    days_sql = """
        SELECT event, day, lag(day) OVER (PARTITION BY event ORDER BY day) AS prev_day
        FROM (SELECT DISTINCT event, CAST(timestamp AS DATE) AS day FROM events
              WHERE project_id = $project AND timestamp < $hi)"""
    first_prev = fetch(
        store,
        f"SELECT min(prev_day) FROM ({days_sql}) d WHERE day >= CAST($lo AS DATE)",
        {"project": project_id, "hi": hi, "lo": lo},
    )[0][0]
    if first_prev is None:
        return []
    sql = f"""
    WITH days AS ({days_sql}),
    wanted AS (SELECT * FROM days WHERE prev_day IS NOT NULL AND day >= CAST($lo AS DATE)),
    kt AS (
        SELECT e.event, CAST(e.timestamp AS DATE) AS day, j.key, {_JSON_TYPE} AS jtype, count(*) AS n
        FROM events e, json_each(e.properties) j
        WHERE e.project_id = $project AND e.timestamp >= $scan_from AND e.timestamp < $hi
        GROUP BY ALL
    ),
    k AS (
        SELECT event, day, key,
               coalesce(list(DISTINCT jtype ORDER BY jtype) FILTER (WHERE jtype <> 'null'), []) AS types,
               sum(n) AS n
        FROM kt GROUP BY ALL
    )
    SELECT 'appeared' AS change, w.event, w.day, w.prev_day, c.key, [] AS before, c.types AS after, c.n
    FROM wanted w JOIN k c ON c.event = w.event AND c.day = w.day
    ANTI JOIN k p ON p.event = w.event AND p.day = w.prev_day AND p.key = c.key
    UNION ALL
    SELECT 'disappeared', w.event, w.day, w.prev_day, p.key, p.types, [], p.n
    FROM wanted w JOIN k p ON p.event = w.event AND p.day = w.prev_day
    ANTI JOIN k c ON c.event = w.event AND c.day = w.day AND c.key = p.key
    UNION ALL
    SELECT 'type_changed', w.event, w.day, w.prev_day, c.key, p.types, c.types, c.n
    FROM wanted w JOIN k c ON c.event = w.event AND c.day = w.day
    JOIN k p ON p.event = w.event AND p.day = w.prev_day AND p.key = c.key
    WHERE len(p.types) > 0 AND len(c.types) > 0 AND p.types <> c.types
    ORDER BY 3, 2, 5, 1"""
    params = {
        "project": project_id,
        "lo": lo,
        "hi": hi,
        "scan_from": datetime.combine(first_prev, datetime.min.time()),
    }
    return [
        DriftChange(event, day, prev, key, change, list(before), list(after), int(n))
        for change, event, day, prev, key, before, after, n in fetch(store, sql, params)
    ]
