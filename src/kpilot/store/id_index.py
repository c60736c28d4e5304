"""An exact in-memory index of stored event ids, so deduplication rarely has to read stored events.

Deduplication asks, for every incoming event, whether an event with the same id is stored with a timestamp
within :data:`~kpilot.store.duckdb_store.DEDUP_WINDOW` of it. Asking DuckDB means scanning the id hashes
of every stored event in that window, and at a steady high rate the window holds everything stored in the
last day: the cost of each write grows with the data kept.

This index holds the 64-bit id hashes (``events.uuid_hash``) of the stored events per project and UTC day
of their timestamp, as sorted numpy arrays. An incoming event is looked up in the days its window touches
(the day before, its own, the day after). A miss proves the id is not stored in the window; a hit is a
*candidate*, which the store confirms against the stored rows (same id text, timestamps within the window).
Hash collisions and hits in the outer parts of the neighbouring days only cost that confirmation.

Days are loaded from the store the first time a write touches them, and evicted least-recently-used past
a memory budget (8 bytes per stored event; setting ``KPILOT_ID_INDEX_MB``), after which they are loaded
again when needed. The index only ever learns of committed rows: a day is loaded inside the write's
transaction before anything is inserted, and a write's ids are added after its commit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timedelta

import duckdb
import numpy as np

__all__ = ["DAY_US", "IdIndex", "days_of"]

DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1)


def days_of(timestamps: np.ndarray) -> np.ndarray:
    """UTC day numbers (days since 1970-01-01, floored) of ``datetime64[us]`` timestamps."""
    return np.floor_divide(timestamps.astype("datetime64[us]").astype(np.int64), DAY_US)


class _Day:
    """The sorted hash runs of one project day; runs of similar size are merged (amortised O(log n))."""

    __slots__ = ("runs",)

    def __init__(self, hashes: np.ndarray) -> None:
        self.runs: list[np.ndarray] = [np.sort(hashes)] if len(hashes) else []

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.runs)

    def add(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        self.runs.append(np.sort(hashes))
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            last = self.runs.pop()
            merged = np.concatenate([self.runs.pop(), last])
            merged.sort(kind="stable")  # two sorted runs: timsort merges them in one linear pass
            self.runs.append(merged)

    def contains(self, sorted_hashes: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(sorted_hashes), dtype=bool)
        for run in self.runs:
            at = np.searchsorted(run, sorted_hashes)
            found = at < len(run)
            found[found] = run[at[found]] == sorted_hashes[found]
            hit |= found
        return hit


class IdIndex:
    """Stored id hashes per (project, UTC day), loaded on demand, bounded by ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._days: OrderedDict[tuple[int, int], _Day] = OrderedDict()
        self.loads = 0
        """Store reads made to load days (for tests and statistics)."""

    @property
    def nbytes(self) -> int:
        """Bytes held (safe to read from another thread: the dict's values are copied in one C call)."""
        return sum(d.nbytes for d in list(self._days.values()))

    def loaded(self, project_id: int) -> list[int]:
        return sorted(day for p, day in self._days if p == project_id)

    def forget(self) -> None:
        self._days.clear()

    def forget_project(self, project_id: int) -> None:
        for key in [k for k in self._days if k[0] == project_id]:
            del self._days[key]

    def candidates(
        self, cur: duckdb.DuckDBPyConnection, project_id: int, hashes: np.ndarray, days: np.ndarray
    ) -> np.ndarray:
        """A mask of the rows whose hash is stored within a day either side of the row's UTC day.

        ``hashes`` (uint64) and ``days`` (from :func:`days_of`) describe the incoming rows; days not loaded
        yet are read from the store through ``cur`` (the write's transaction, before it inserts).
        """
        hit = np.zeros(len(hashes), dtype=bool)
        if not len(hashes):
            return hit
        wanted = np.unique(np.concatenate([days - 1, days, days + 1]))
        self._load(cur, project_id, [int(d) for d in wanted if (project_id, int(d)) not in self._days])
        for day in wanted:
            key = (project_id, int(day))
            self._days.move_to_end(key)
            near = np.abs(days - day) <= 1
            if not near.any():
                continue
            rows = np.flatnonzero(near)
            order = np.argsort(hashes[rows])
            found = self._days[key].contains(hashes[rows][order])
            hit[rows[order[found]]] = True
        self._evict(keep={(project_id, int(d)) for d in wanted})
        return hit

    def add(self, project_id: int, hashes: np.ndarray, days: np.ndarray) -> None:
        """Record committed rows; days that are not loaded are skipped (a later load reads them)."""
        if not len(hashes):
            return
        for day in np.unique(days):
            entry = self._days.get((project_id, int(day)))
            if entry is not None:
                entry.add(hashes[days == day])
        self._evict(keep=set())

    def _load(self, cur: duckdb.DuckDBPyConnection, project_id: int, days: Iterable[int]) -> None:
        todo = sorted(days)
        if not todo:
            return
        self.loads += 1
        lo, hi = _bound(todo[0]), _bound(todo[-1] + 1)
        got = cur.execute(
            """SELECT date_diff('day', DATE '1970-01-01', CAST(timestamp AS DATE)) AS day, uuid_hash FROM events
               WHERE project_id = ? AND timestamp >= ? AND timestamp <= ? AND uuid_hash IS NOT NULL
                 AND day IN (SELECT unnest(?::BIGINT[]))""",
            [project_id, lo, hi, todo],
        ).fetchnumpy()
        stored_days = np.asarray(got["day"], dtype=np.int64)
        stored = np.asarray(got["uuid_hash"], dtype=np.uint64)
        order = np.argsort(stored_days, kind="stable")
        stored_days, stored = stored_days[order], stored[order]
        for day in todo:
            a, b = np.searchsorted(stored_days, [day, day + 1])
            self._days[(project_id, day)] = _Day(stored[a:b])

    def _evict(self, keep: set[tuple[int, int]]) -> None:
        total = self.nbytes
        for key in list(self._days):
            if total <= self.budget_bytes:
                return
            if key in keep:
                continue
            total -= self._days.pop(key).nbytes


def _bound(day: int) -> datetime:
    """Midnight starting ``day``, clamped to the representable range (events of year 1 and 9999)."""
    try:
        return _EPOCH + timedelta(days=day)
    except OverflowError:
        return datetime.min if day < 0 else datetime.max
