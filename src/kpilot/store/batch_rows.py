"""The events of one write batch with their persons, read once for the rollup and the session upkeep.

The write path (:meth:`~kpilot.store.duckdb_store.EventStore.write_arrow`) leaves a batch's deduplicated
events in the temp table ``staged`` and its distinct ids with their (final) persons in ``batch_persons``.
The rollup upkeep needs each event's local day, name and person (:mod:`kpilot.store.rollup_store`), the
session upkeep each event's person, time and name (:mod:`kpilot.store.session_store`). :class:`BatchRows`
joins the two tables once per write and hands each upkeep what it needs; the rollup's grouping by day and
event is done here on the joined rows rather than by a second query.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

__all__ = ["BatchRows"]


def _local_day(col: str, timezone: str) -> str:
    """SQL for the local day of the UTC timestamp ``col`` in ``timezone``, as days since 1970-01-01."""
    local = col
    if timezone != "UTC":
        quoted = "'" + timezone.replace("'", "''") + "'"
        local = f"timezone({quoted}, {col} AT TIME ZONE 'UTC')"
    return f"CAST(CAST({local} AS DATE) - DATE '1970-01-01' AS INTEGER)"


class BatchRows:
    """The batch's events joined with their persons, read on first use (inside the write's transaction)."""

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self._cur = cur
        self._table: pa.Table | None = None
        self._timezone: str | None = None
        self._names: pa.DictionaryArray | None = None

    def events(self, timezone: str | None = None) -> pa.Table:
        """``person_id``, ``timestamp`` and ``event`` of every event of the batch (in no particular order),
        and with ``timezone`` their local ``day`` in it (days since 1970-01-01)."""
        if self._table is None or (timezone is not None and timezone != self._timezone):
            day = f", {_local_day('s.timestamp', timezone)} AS day" if timezone is not None else ""
            self._table = self._cur.sql(
                f"""SELECT bp.person_id, s.timestamp, s.event{day}
                    FROM staged s JOIN batch_persons bp USING (distinct_id)"""
            ).to_arrow_table()
            self._timezone = timezone
            self._names = None
        return self._table

    def event_names(self) -> pa.DictionaryArray:
        """The ``event`` column of :meth:`events`, dictionary-encoded (a string dictionary)."""
        if self._names is None:
            enc = self.events(self._timezone).column("event").combine_chunks().dictionary_encode()
            self._names = pa.DictionaryArray.from_arrays(enc.indices, enc.dictionary.cast(pa.string()))
        return self._names

    def grouped(self, timezone: str) -> pa.Table:
        """(day, event, person_id) of the events, local days in ``timezone``, grouped by day and then event
        as :func:`kpilot.store.rollup_store.person_sets` reads them (within a group persons come in any
        order, and repeat when a person did the event more than once)."""
        table = self.events(timezone)
        if table.num_rows == 0:
            return pa.table(
                {
                    "day": pa.array([], pa.int32()),
                    "event": pa.array([], pa.string()),
                    "person_id": pa.array([], pa.int64()),
                }
            )
        day = np.asarray(table.column("day").to_numpy(zero_copy_only=False), np.int64)
        enc = self.event_names()
        code = np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64)
        names = max(len(enc.dictionary), 1)
        key = (day - day.min()) * names + code
        # a stable sort of small integers is a radix sort: far cheaper than grouping in SQL
        order = np.argsort(key.astype(np.int16) if key.max() < 2**15 else key, kind="stable")
        return pa.table(
            {
                "day": pa.array(day[order], pa.int32()),
                "event": pa.DictionaryArray.from_arrays(pa.array(code[order], pa.int32()), enc.dictionary),
                "person_id": pa.array(
                    np.asarray(table.column("person_id").to_numpy(zero_copy_only=False), np.int64)[order]
                ),
            }
        )
