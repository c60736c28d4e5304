"""Rollups kept inside the event store: per local day and event, the set of persons as a roaring bitmap.

The tables (see :mod:`kpilot.store.schema`):

* ``rollup_projects(project_id, timezone, built_at)``: which projects have a rollup, and the timezone whose
  calendar days it uses (the project timezone).
* ``rollup_persons(project_id, day, event, persons)``: serialized bitmaps of person ids. ``event`` NULL is
  the union over all events of the day. A key (project, day, event) may have several rows: every write batch
  *appends* the persons it brought (a delta), which keeps maintenance cheap whatever the size of the day's
  set; :func:`compact` merges the rows of a key into one, and readers union whatever rows they find.
* ``rollup_merges(project_id, absorbed, survivor)``: identity merges that happened after the build. Stored
  bitmaps are never rewritten for a merge; readers replace absorbed ids by their survivor
  (:mod:`kpilot.compute.rollups`). Person ids are never reused after being absorbed (the store allocates
  new ids above every id ever merged), so an absorbed id in a bitmap always means the absorbed person.

Everything here runs inside the caller's write transaction: rollups change exactly when events do.

Readers cache what they load (:mod:`kpilot.compute.rollups`), so the store tells them when it writes:
:func:`commit_begins` and :func:`commit_ended` bracket every COMMIT of :class:`EventStore` (its
``_transaction``), and :func:`write_generation` is what a reader compares before trusting its cache. The
counter belongs to the database file, not to one :class:`EventStore`, since two stores opened on one file in
one process share the database.
"""

from __future__ import annotations

import array
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from kpilot.store.batch_rows import BatchRows

__all__ = [
    "BUILD_DAYS",
    "Sink",
    "add_merges",
    "add_staged",
    "bitmap_from",
    "build",
    "commit_begins",
    "commit_ended",
    "compact",
    "day_chunks",
    "drop",
    "grouped",
    "person_sets",
    "pipelined",
    "project_sources",
    "rollup_timezone",
    "utc_days",
    "write_generation",
]

_DAY = "CAST({local} AS DATE)"


def bitmap_from(values: np.ndarray) -> BitMap:
    """A bitmap of the (non-negative, < 2**32) integers in ``values``."""
    arr = array.array("I")
    arr.frombytes(np.ascontiguousarray(values, dtype=np.uint32).tobytes())
    return BitMap(arr)


def _local(col: str, timezone: str) -> str:
    if timezone == "UTC":
        return col
    quoted = "'" + timezone.replace("'", "''") + "'"
    return f"timezone({quoted}, {col} AT TIME ZONE 'UTC')"


def rollup_timezone(cur: duckdb.DuckDBPyConnection, project_id: int) -> str | None:
    """The timezone of ``project_id``'s rollup, or None when the project has none."""
    rows = cur.execute("SELECT timezone FROM rollup_projects WHERE project_id = ?", [project_id]).fetchall()
    return str(rows[0][0]) if rows else None


def person_sets(table: pa.Table) -> Iterator[tuple[int, str | None, BitMap]]:
    """The sets in (day, event, person_id) rows grouped by day, then event (``day`` in days since
    1970-01-01; persons may repeat): one per (day, event), then one per day for any event (``event``
    None)."""
    if table.num_rows == 0:
        return
    day = table.column("day").to_numpy()
    person = table.column("person_id").to_numpy()
    event = table.column("event").combine_chunks().dictionary_encode()
    names = event.dictionary.to_pylist()
    code = event.indices.to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], (day[1:] != day[:-1]) | (code[1:] != code[:-1])]))
    ends = np.append(starts[1:], len(day))
    sets = [
        (int(day[lo]), names[int(code[lo])], bitmap_from(person[lo:hi]))
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
    of_day: dict[int, list[BitMap]] = {}
    for d, _, persons in sets:
        of_day.setdefault(d, []).append(persons)
    # a day's set for any event is the union of its event sets (made before any set is handed out)
    any_event = [
        (d, None, BitMap.union(*bms) if len(bms) > 1 else BitMap(bms[0])) for d, bms in of_day.items()
    ]
    yield from sets
    yield from any_event


Sink = list[tuple[int, str | None, BitMap]]
"""Where a write's appended sets go as well: (local day as days since 1970-01-01, event or None, persons)."""


def _append(
    cur: duckdb.DuckDBPyConnection, project_id: int, table: pa.Table, sink: Sink | None = None
) -> int:
    """Append bitmaps for (day, event, person_id) rows grouped as :func:`person_sets` reads them; returns
    rows added."""
    return _insert_bitmaps(cur, project_id, _bitmap_rows(table, sink))


def _bitmap_rows(table: pa.Table, sink: Sink | None = None) -> pa.Table | None:
    """The ``rollup_persons`` rows (without project) of (day, event, person_id) rows, or None if empty."""
    out_day: list[int] = []
    out_event: list[str | None] = []
    out_blob: list[bytes] = []
    for day, event, persons in person_sets(table):
        if sink is not None:
            sink.append((day, event, persons))
        out_day.append(day)
        out_event.append(event)
        out_blob.append(persons.serialize())
    if not out_day:
        return None
    return pa.table(
        {
            "day": pa.array(out_day, pa.int32()),
            "event": pa.array(out_event, pa.string()),
            "persons": pa.array(out_blob, pa.binary()),
        }
    )


def _insert_bitmaps(cur: duckdb.DuckDBPyConnection, project_id: int, rows: pa.Table | None) -> int:
    if rows is None:
        return 0
    cur.register("rollup_rows", rows)
    cur.execute(
        """INSERT INTO rollup_persons
           SELECT ?, DATE '1970-01-01' + day, event, persons FROM rollup_rows""",
        [project_id],
    )
    cur.unregister("rollup_rows")
    return int(rows.num_rows)


def grouped(
    cur: duckdb.DuckDBPyConnection,
    source: str,
    persons: str,
    timezone: str,
    where: str = "TRUE",
) -> pa.Table:
    """(day, event, person_id) of the events in ``source``, persons from ``persons`` (distinct_id, person_id),
    grouped and sorted as :func:`person_sets` needs them; ``day`` counts days since 1970-01-01, local time."""
    day = _DAY.format(local=_local("e.timestamp", timezone))
    return cur.sql(
        f"""SELECT CAST({day} - DATE '1970-01-01' AS INTEGER) AS day, e.event, p.person_id
            FROM {source} e JOIN {persons} p ON p.distinct_id = e.distinct_id
            WHERE {where}
            GROUP BY ALL ORDER BY day, e.event, p.person_id"""
    ).to_arrow_table()


K = TypeVar("K")
R = TypeVar("R")

BUILD_DAYS = 7
"""A build reads this many days of events at a time, so memory stays bounded whatever the store's size."""


def day_chunks(present: list[int], size: int = BUILD_DAYS) -> Iterator[tuple[int, int]]:
    """Chunks ``(first, last)`` of local days (days since 1970-01-01) covering every local day of the UTC
    days ``present`` (ascending): no offset exceeds a day, so UTC day ``u`` has local days ``u - 1`` to
    ``u + 1``. The chunks do not overlap, each starts next to a day in ``present`` (so the years between two
    far-apart events cost nothing), and each holds at most ``size`` days."""
    i, done = 0, None
    while i < len(present):
        first = present[i] - 1 if done is None else max(present[i] - 1, done + 1)
        last = done = first + size - 1
        while i < len(present) and present[i] + 1 <= last:
            i += 1
        yield first, last


def utc_days(cur: duckdb.DuckDBPyConnection, table: str, column: str, project_id: int) -> list[int]:
    """The UTC days (days since 1970-01-01, exact at any date) of ``column`` in ``project_id``'s rows."""
    rows = cur.execute(
        f"""SELECT DISTINCT CAST(CAST({column} AS DATE) - DATE '1970-01-01' AS BIGINT) AS d FROM {table}
            WHERE project_id = ? ORDER BY d""",
        [project_id],
    ).fetchall()
    return [int(r[0]) for r in rows]


def drop(cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
    """Remove ``project_id``'s rollup: queries then read raw events until it is built again."""
    cur.execute("DELETE FROM rollup_projects WHERE project_id = ?", [project_id])
    cur.execute("DELETE FROM rollup_persons WHERE project_id = ?", [project_id])
    cur.execute("DELETE FROM rollup_merges WHERE project_id = ?", [project_id])


def project_sources(project_id: int) -> tuple[str, str]:
    """SQL sources of ``project_id``'s stored events and of its distinct ids, for :func:`grouped`."""
    pid = int(project_id)
    return (
        f"(SELECT * FROM events WHERE project_id = {pid})",
        f"(SELECT distinct_id, person_id FROM person_distinct_ids WHERE project_id = {pid})",
    )


def build(cur: duckdb.DuckDBPyConnection, project_id: int, timezone: str) -> int:
    """(Re)build ``project_id``'s rollup from its stored events in ``timezone``; returns rows written."""
    drop(cur, project_id)
    cur.execute(
        "INSERT INTO rollup_projects VALUES (?, ?, ?)",
        [project_id, timezone, datetime.now(UTC).replace(tzinfo=None)],
    )
    local_day = _DAY.format(local=_local("e.timestamp", timezone))
    source, persons = project_sources(project_id)
    # Local days in chunks; the UTC bounds are padded by a day on each side (no offset exceeds one day),
    # and the local-day test keeps each event in exactly one chunk.
    chunks = list(day_chunks(utc_days(cur, "events", "timestamp", project_id)))

    def rows_of(first: int, last: int) -> pa.Table:
        where = (
            f"e.timestamp >= CAST(DATE '1970-01-01' + {first - 1} AS TIMESTAMP) "
            f"AND e.timestamp < CAST(DATE '1970-01-01' + {last + 2} AS TIMESTAMP) "
            f"AND {local_day} BETWEEN DATE '1970-01-01' + {first} AND DATE '1970-01-01' + {last}"
        )
        return grouped(cur, source, persons, timezone, where)

    return pipelined(
        chunks, lambda c: rows_of(*c), _bitmap_rows, lambda rows: _insert_bitmaps(cur, project_id, rows)
    )


def pipelined(
    chunks: Sequence[K],
    read: Callable[[K], pa.Table],
    make: Callable[[pa.Table], R],
    write: Callable[[R], int],
) -> int:
    """``write(make(read(c)))`` for every chunk in order; returns the sum of what ``write`` returns.

    A pipeline of two: ``read`` of the next chunk (a DuckDB query, which releases the GIL) runs on a worker
    thread while ``make`` (numpy, pyroaring) works on the current one. ``read`` and ``write`` share the
    caller's cursor, so they never run at once: a chunk is written after the next one has been read.
    """
    written = 0
    with ThreadPoolExecutor(1, thread_name_prefix="kpilot-build") as pool:
        ahead = pool.submit(read, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            assert ahead is not None
            table = ahead.result()
            if i + 1 < len(chunks):
                ahead = pool.submit(read, chunks[i + 1])
            made = make(table)
            del table
            if i + 1 < len(chunks):
                concurrent.futures.wait([ahead])
            written += write(made)
    return written


def add_staged(
    cur: duckdb.DuckDBPyConnection,
    project_id: int,
    timezone: str,
    sink: Sink | None = None,
    rows: BatchRows | None = None,
) -> int:
    """Append the persons of the events in the temp table ``staged`` (deduplicated, ids resolved); the sets
    appended also go to ``sink`` when given (readers' caches are told them, :mod:`kpilot.store.change_log`).

    The write path leaves the batch's ids and persons in the temp table ``batch_persons``, so this never
    scans the project's whole id table; ``rows`` is the batch as the write read it for every upkeep
    (read here when not given).
    """
    return _append(cur, project_id, (rows or BatchRows(cur)).grouped(timezone), sink)


def add_merges(cur: duckdb.DuckDBPyConnection, project_id: int, remap: Iterable[tuple[int, int]]) -> None:
    """Record that each ``absorbed`` person now belongs to ``survivor``."""
    pairs = [(int(a), int(b)) for a, b in remap if a != b]
    if not pairs:
        return
    # one INSERT from an Arrow table: a batch can bring a thousand merges (executemany runs one per row)
    cur.register(
        "rollup_new_merges",
        pa.table(
            {
                "absorbed": pa.array([a for a, _ in pairs], pa.int64()),
                "survivor": pa.array([b for _, b in pairs], pa.int64()),
            }
        ),
    )
    cur.execute("INSERT INTO rollup_merges SELECT ?, absorbed, survivor FROM rollup_new_merges", [project_id])
    cur.unregister("rollup_new_merges")


def compact(cur: duckdb.DuckDBPyConnection, project_id: int) -> int:
    """Merge the rows of every key with more than one row into one; returns the number of keys merged."""
    keys = cur.execute(
        """SELECT day, event FROM rollup_persons WHERE project_id = ?
           GROUP BY ALL HAVING count(*) > 1""",
        [project_id],
    ).fetchall()
    if not keys:
        return 0
    cur.register("compact_keys", pa.table({"day": [k[0] for k in keys], "event": [k[1] for k in keys]}))
    rows = cur.execute(
        """SELECT r.day, r.event, r.persons FROM rollup_persons r
           SEMI JOIN compact_keys k ON k.day = r.day AND k.event IS NOT DISTINCT FROM r.event
           WHERE r.project_id = ?""",
        [project_id],
    ).fetchall()
    merged: dict[tuple[object, str | None], BitMap] = {}
    for day, event, blob in rows:
        bm = BitMap.deserialize(blob)
        key = (day, event)
        if key in merged:
            merged[key] |= bm
        else:
            merged[key] = bm
    cur.execute(
        """DELETE FROM rollup_persons r USING compact_keys k
           WHERE r.project_id = ? AND k.day = r.day AND k.event IS NOT DISTINCT FROM r.event""",
        [project_id],
    )
    cur.unregister("compact_keys")
    cur.register(
        "compacted",
        pa.table(
            {
                "day": pa.array([k[0] for k in merged], pa.date32()),
                "event": pa.array([k[1] for k in merged], pa.string()),
                "persons": pa.array([bm.serialize() for bm in merged.values()], pa.binary()),
            }
        ),
    )
    cur.execute("INSERT INTO rollup_persons SELECT ?, day, event, persons FROM compacted", [project_id])
    cur.unregister("compacted")
    return len(merged)


# ---- write generations --------------------------------------------------------------------------------
class _Generation:
    __slots__ = ("committing", "value")

    def __init__(self) -> None:
        self.value = 0
        self.committing = 0


_GENERATION_LOCK = threading.Lock()
_GENERATIONS: dict[object, _Generation] = {}
_STORE_GENERATION: weakref.WeakKeyDictionary[Any, _Generation] = weakref.WeakKeyDictionary()


def _generation(store: Any) -> _Generation:
    """The counter of ``store``'s database file (by device and inode, so any spelling of the path agrees)."""
    gen = _STORE_GENERATION.get(store)
    if gen is not None:
        return gen
    with _GENERATION_LOCK:
        key: object
        try:
            st = os.stat(store.path)
            key = (st.st_dev, st.st_ino)
        except (OSError, TypeError, AttributeError):  # in memory, or no file: this store alone
            key = ("store", id(store))
        gen = _GENERATIONS.setdefault(key, _Generation())
        _STORE_GENERATION[store] = gen
        return gen


def commit_begins(store: Any) -> None:
    """``store`` is about to COMMIT a write: caches of its data must not be trusted until it ends."""
    gen = _generation(store)
    with _GENERATION_LOCK:
        gen.committing += 1
        gen.value += 1


def commit_ended(store: Any) -> None:
    """The COMMIT announced by :func:`commit_begins` is over (done or failed)."""
    gen = _generation(store)
    with _GENERATION_LOCK:
        gen.committing -= 1
        gen.value += 1


def write_generation(store: Any) -> tuple[int, bool]:
    """(generation, quiet) of ``store``'s database: the generation changes around every committed write, and
    ``quiet`` is False while a commit is under way. Data read while quiet, with the same generation before
    and after the read, is the data of that generation."""
    gen = _generation(store)
    with _GENERATION_LOCK:
        return gen.value, gen.committing == 0
