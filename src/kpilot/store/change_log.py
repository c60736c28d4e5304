"""What recent commits changed in each project's rollup, so readers' caches refresh instead of reloading.

Readers cache the rollup sets they load (:mod:`kpilot.compute.rollups`) for one write generation of the
store (:func:`kpilot.store.rollup_store.write_generation`; every COMMIT moves it on by two). Without more
information any commit makes the next query read every set again, which on a large store costs a tenth of a
second or more while events keep arriving. The writer therefore records, per commit, what it changed:

* the UTC days of the events a project received (their local days lie within a day of those),
* the identity merges recorded for the project (absorbed person -> survivor), and
* the person sets the write appended to the rollup (per local day and event), while they fit
  :data:`SETS_BYTES`: with them a reader updates its sets without reading the store at all. (DuckDB reads
  a whole vector of BLOBs to return one, so reading even one day's sets costs about as much as reading
  all of them.) Past the budget the oldest commits' sets are forgotten and readers read their days again.

A commit that does anything else (a build, a drop, a bulk write without upkeep, a failed commit) is recorded
as unknown, and a reader whose cached generation is older than the records kept (the last
:data:`KEEP` commits) cannot tell what changed: both mean a full reload, as before.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field, replace

from pyroaring import BitMap

__all__ = ["KEEP", "SETS_BYTES", "ChangeLog", "Changes", "ProjectChange", "Sets"]

KEEP = 512
"""Commits remembered."""
SETS_BYTES = 16 * 2**20
"""Estimated memory of the appended sets remembered (4 bytes per person in a set). Large commits (a busy
server's) fill it within a minute or two; small ones rarely reach it before :data:`KEEP` commits."""

Sets = tuple[tuple[int, str | None, BitMap], ...]
"""Sets appended to a rollup: (local day as days since 1970-01-01, event or None for any event, persons)."""


@dataclass(frozen=True)
class ProjectChange:
    """What commits changed in one project's rollup: UTC days of added events, merges recorded (in order)."""

    utc_days: frozenset[int] = frozenset()
    merges: tuple[tuple[int, int], ...] = ()
    sets: Sets | None = ()
    """The sets appended, in order (None: not remembered; read the days again)."""

    @property
    def nbytes(self) -> int:
        return 0 if self.sets is None else sum(64 + 4 * len(bm) for _, _, bm in self.sets)


@dataclass
class Changes:
    """What one transaction changed, collected while it runs; ``known`` stays False unless every write of it
    reported what it changed."""

    known: bool = True
    projects: dict[int, ProjectChange] = field(default_factory=dict)

    def add(
        self, project_id: int, utc_days: frozenset[int], merges: tuple[tuple[int, int], ...], sets: Sets = ()
    ) -> None:
        before = self.projects.get(project_id, ProjectChange())
        kept = None if before.sets is None else before.sets + sets
        self.projects[project_id] = ProjectChange(before.utc_days | utc_days, before.merges + merges, kept)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.projects.values())

    def without_sets(self) -> Changes:
        return Changes(self.known, {k: replace(p, sets=None) for k, p in self.projects.items()})


class ChangeLog:
    """The changes of the last :data:`KEEP` commits of one database file, by the generation each ended at."""

    def __init__(self, keep: int = KEEP, sets_bytes: int = SETS_BYTES) -> None:
        self._lock = threading.Lock()
        self._records: deque[tuple[int, Changes | None]] = deque(maxlen=keep)
        self._sets_bytes = sets_bytes
        self._with_sets = 0
        """Records from this index on still hold their sets."""
        self._nbytes = 0

    def record(self, generation: int, changes: Changes | None) -> None:
        """The commit that ended at ``generation`` changed ``changes`` (None or not ``known``: unknown)."""
        with self._lock:
            if len(self._records) == self._records.maxlen:
                _, oldest = self._records[0]
                if self._with_sets == 0 and oldest is not None:
                    self._nbytes -= oldest.nbytes
                self._with_sets = max(0, self._with_sets - 1)
            entry = changes if changes is not None and changes.known else None
            self._records.append((generation, entry))
            self._nbytes += 0 if entry is None else entry.nbytes
            while self._nbytes > self._sets_bytes and self._with_sets < len(self._records):
                generation_at, old = self._records[self._with_sets]
                if old is not None:
                    self._nbytes -= old.nbytes
                    self._records[self._with_sets] = (generation_at, old.without_sets())
                self._with_sets += 1

    def since(self, first: int, last: int, project_id: int) -> ProjectChange | None:
        """What the commits between generations ``first`` and ``last`` (both quiet) changed in
        ``project_id``'s rollup, or None when that is not known."""
        if last < first or (last - first) % 2:
            return None
        with self._lock:
            records = [changes for generation, changes in self._records if first < generation <= last]
        if len(records) != (last - first) // 2:  # a commit older than the records kept, or not recorded yet
            return None
        total = ProjectChange()
        for changes in records:
            if changes is None:
                return None
            part = changes.projects.get(project_id)
            if part is not None:
                sets = None if total.sets is None or part.sets is None else total.sets + part.sets
                total = ProjectChange(total.utc_days | part.utc_days, total.merges + part.merges, sets)
        return total
