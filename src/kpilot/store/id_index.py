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

Days are loaded from the store the first time a write touches them. Memory is bounded by a budget (8
bytes per hash held; setting ``KPILOT_ID_INDEX_MB``): past it, days the current write does not touch are
dropped, least recently used first (and loaded again when needed), and if the days it does touch still
exceed the budget, their hashes move to sorted runs in files (:mod:`kpilot.store.id_runs`), looked up
through memory maps whose pages are handed back to the kernel after each lookup. So the process's memory
stays flat however many events a day holds; the price is disk (8 bytes per event of the busy days) and
page-cache reads. The index only ever learns of committed rows: a day is loaded inside the write's
transaction before anything is inserted, and a write's ids are added after its commit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np

from kpilot.store.id_runs import MAX_MERGED, DiskRun, SpillDir, members

__all__ = ["DAY_US", "IdIndex", "days_of"]

DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1)


def days_of(timestamps: np.ndarray) -> np.ndarray:
    """UTC day numbers (days since 1970-01-01, floored) of ``datetime64[us]`` timestamps."""
    return np.floor_divide(timestamps.astype("datetime64[us]").astype(np.int64), DAY_US)


class _Day:
    """The hashes of one project day: sorted runs in memory (``hot``) and in files (``cold``).

    Runs of similar size are merged (amortised O(log n) runs on each side)."""

    __slots__ = ("cold", "hot")

    def __init__(self, hashes: np.ndarray) -> None:
        self.hot: list[np.ndarray] = [np.sort(hashes)] if len(hashes) else []
        self.cold: list[DiskRun] = []

    @property
    def nbytes(self) -> int:
        """Bytes held in memory."""
        return sum(r.nbytes for r in self.hot)

    @property
    def disk_bytes(self) -> int:
        return sum(r.nbytes for r in self.cold)

    def add(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        self.hot.append(np.sort(hashes))
        while len(self.hot) > 1 and len(self.hot[-2]) <= 2 * len(self.hot[-1]):
            last = self.hot.pop()
            merged = np.concatenate([self.hot.pop(), last])
            merged.sort(kind="stable")  # two sorted runs: timsort merges them in one linear pass
            self.hot.append(merged)

    def spill(self, spill: SpillDir) -> None:
        """Move the in-memory hashes to a run file, then merge run files of similar size."""
        if not self.hot:
            return
        merged = self.hot[0] if len(self.hot) == 1 else np.sort(np.concatenate(self.hot), kind="stable")
        self.cold.append(DiskRun.write(spill.new_file(), merged))
        self.hot = []
        while (
            len(self.cold) > 1
            and self.cold[-2].n <= 2 * self.cold[-1].n
            and self.cold[-2].n + self.cold[-1].n <= MAX_MERGED
        ):
            last, before = self.cold.pop(), self.cold.pop()
            self.cold.append(DiskRun.merge(spill.new_file(), before, last))
            before.delete()
            last.delete()

    def contains(self, sorted_hashes: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(sorted_hashes), dtype=bool)
        for run in self.hot:
            hit |= members(run, sorted_hashes)
        for cold in self.cold:
            hit |= cold.contains(sorted_hashes)
            cold.release()
        return hit

    def drop(self) -> None:
        for cold in self.cold:
            cold.delete()
        self.cold = []
        self.hot = []


class IdIndex:
    """Stored id hashes per (project, UTC day), loaded on demand; ``budget_bytes`` bounds the memory held.

    With ``spill_to`` (a directory), hashes of the days a write needs that do not fit the budget move to run
    files in a private directory under it; without, such days are dropped like any other and read again.
    """

    def __init__(self, budget_bytes: int, spill_to: Path | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._spill = SpillDir(spill_to) if spill_to is not None else None
        self._days: OrderedDict[tuple[int, int], _Day] = OrderedDict()
        self.loads = 0
        """Store reads made to load days (for tests and statistics)."""

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (safe to read from another thread: the dict's values are copied in one C call)."""
        return sum(d.nbytes for d in list(self._days.values()))

    @property
    def disk_bytes(self) -> int:
        """Bytes held in run files (safe to read from another thread, like :attr:`nbytes`)."""
        return sum(d.disk_bytes for d in list(self._days.values()))

    def loaded(self, project_id: int) -> list[int]:
        return sorted(day for p, day in self._days if p == project_id)

    def forget(self) -> None:
        for day in self._days.values():
            day.drop()
        self._days.clear()

    def forget_project(self, project_id: int) -> None:
        for key in [k for k in self._days if k[0] == project_id]:
            self._days.pop(key).drop()

    def close(self) -> None:
        """Drop everything and remove the run files' directory."""
        self.forget()
        if self._spill is not None:
            self._spill.remove()

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
        wanted = _around(days)
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
        touched = np.unique(days)
        for day in touched:
            entry = self._days.get((project_id, int(day)))
            if entry is not None:
                entry.add(hashes[days == day])
        self._evict(keep={(project_id, int(d)) for d in _around(touched)})

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
        """Get under the budget: drop days outside ``keep`` (least recently used first), then move the
        in-memory hashes of ``keep`` days to run files (the largest first), or drop those too without."""
        total = self.nbytes
        for key in list(self._days):
            if total <= self.budget_bytes:
                return
            if key in keep and self._spill is not None:
                continue
            day = self._days.pop(key)
            total -= day.nbytes
            day.drop()
        if self._spill is None:
            return
        for key in sorted(keep & self._days.keys(), key=lambda k: self._days[k].nbytes, reverse=True):
            if total <= self.budget_bytes:
                return
            total -= self._days[key].nbytes
            self._days[key].spill(self._spill)


def _around(days: np.ndarray) -> np.ndarray:
    """The sorted distinct days a row of each of ``days`` may match: its own and the one either side."""
    return np.unique(np.concatenate([days - 1, days, days + 1]))


def _bound(day: int) -> datetime:
    """Midnight starting ``day``, clamped to the representable range (events of year 1 and 9999)."""
    try:
        return _EPOCH + timedelta(days=day)
    except OverflowError:
        return datetime.min if day < 0 else datetime.max
