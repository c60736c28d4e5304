"""What recent commits changed in each project's rollup, so readers' caches refresh instead of reloading.

Readers cache the rollup sets they load (:mod:`kpilot.compute.rollups`) for one write generation of the
store (:func:`kpilot.store.rollup_store.write_generation`; every COMMIT moves it on by two). Without more
information any commit makes the next query read every set again, which on a large store costs a tenth of a
second or more while events keep arriving. The writer therefore records, per commit, what it changed:

* the UTC days of the events a project received (their local days lie within a day of those), and
* the identity merges recorded for the project (absorbed person -> survivor).

A commit that does anything else (a build, a drop, a bulk write without upkeep, a failed commit) is recorded
as unknown, and a reader whose cached generation is older than the records kept (the last
:data:`KEEP` commits) cannot tell what changed: both mean a full reload, as before.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

__all__ = ["KEEP", "ChangeLog", "Changes", "ProjectChange"]

KEEP = 512
"""Commits remembered."""


@dataclass(frozen=True)
class ProjectChange:
    """What commits changed in one project's rollup: UTC days of added events, merges recorded (in order)."""

    utc_days: frozenset[int] = frozenset()
    merges: tuple[tuple[int, int], ...] = ()


@dataclass
class Changes:
    """What one transaction changed, collected while it runs; ``known`` stays False unless every write of it
    reported what it changed."""

    known: bool = True
    projects: dict[int, ProjectChange] = field(default_factory=dict)

    def add(self, project_id: int, utc_days: frozenset[int], merges: tuple[tuple[int, int], ...]) -> None:
        before = self.projects.get(project_id, ProjectChange())
        self.projects[project_id] = ProjectChange(before.utc_days | utc_days, before.merges + merges)


class ChangeLog:
    """The changes of the last :data:`KEEP` commits of one database file, by the generation each ended at."""

    def __init__(self, keep: int = KEEP) -> None:
        self._lock = threading.Lock()
        self._records: deque[tuple[int, Changes | None]] = deque(maxlen=keep)

    def record(self, generation: int, changes: Changes | None) -> None:
        """The commit that ended at ``generation`` changed ``changes`` (None or not ``known``: unknown)."""
        with self._lock:
            self._records.append((generation, changes if changes is not None and changes.known else None))

    def since(self, first: int, last: int, project_id: int) -> ProjectChange | None:
        """What the commits between generations ``first`` and ``last`` (both quiet) changed in
        ``project_id``'s rollup, or None when that is not known."""
        if last < first or (last - first) % 2:
            return None
        with self._lock:
            records = [changes for generation, changes in self._records if first < generation <= last]
        if len(records) != (last - first) // 2:  # a commit older than the records kept, or not recorded yet
            return None
        days: frozenset[int] = frozenset()
        merges: tuple[tuple[int, int], ...] = ()
        for changes in records:
            if changes is None:
                return None
            part = changes.projects.get(project_id)
            if part is not None:
                days |= part.utc_days
                merges += part.merges
        return ProjectChange(days, merges)
