"""The store's hook for the materialised sessions: keeps each project's sessions current on every write.

:class:`Upkeep` is what :class:`~kpilot.store.duckdb_store.EventStore` calls in each write's transaction:
batch by batch (:func:`kpilot.store.session_store.maintain`), or, while an import defers it
(:meth:`EventStore.deferred_sessions`), by keeping the writes' events (:mod:`kpilot.store.session_pending`)
for one pass at the end. It also builds a project's sessions when they are missing, or were left pending by
a process that stopped before catching up.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from kpilot.store import session_store
from kpilot.store.batch_rows import BatchRows
from kpilot.store.session_pending import FLUSH_EVENTS, Pending
from kpilot.store.session_store import SessionParams

__all__ = ["Deferred", "Upkeep"]

Deferred = dict[int, tuple[SessionParams, Pending]]
"""Per project whose session upkeep is deferred: its parameters and pending events."""


class Upkeep:
    """What :class:`~kpilot.store.duckdb_store.EventStore` calls: keeps each project's sessions current, batch
    by batch or, while an import defers it (:meth:`defer`), in one pass at its end."""

    def __init__(self, pending: Deferred | None = None) -> None:
        self._params: dict[int, SessionParams | None] = {}
        self._timezone: dict[int, str | None] = {}
        self._pending: Deferred = {} if pending is None else pending
        """The projects whose upkeep is deferred (shared by the stores of one file in a process)."""

    def forget(self) -> None:
        """Drop cached knowledge (after a rolled-back write), and what the write added to pending upkeep."""
        self._params.clear()
        self._timezone.clear()
        for _, pending in self._pending.values():
            pending.rollback()

    def committed(self) -> None:
        """The write's transaction committed: what it added to pending upkeep is kept."""
        for _, pending in self._pending.values():
            pending.commit()

    def maintain(
        self,
        cur: duckdb.DuckDBPyConnection,
        project_id: int,
        remap: dict[int, int],
        keep: bool,
        batch: BatchRows | None = None,
    ) -> None:
        if project_id in self._pending and keep:
            pending = self._pending[project_id][1]
            batch = batch or BatchRows(cur)
            pending.add(batch.events(), batch.event_names(), remap)
            if pending.events >= FLUSH_EVENTS:
                self._catch_up(cur, project_id)
            return
        if project_id not in self._params:
            self._params[project_id] = session_store.params_of(cur, project_id)
        params = self._params[project_id]
        if params is None and project_id not in self._pending:
            return
        if not keep:  # writing without upkeep: drop them rather than let them go stale
            session_store.drop(cur, project_id)
            self._pending.pop(project_id, None)
            self._params[project_id] = None
            self._timezone[project_id] = None
            return
        if project_id not in self._timezone:
            self._timezone[project_id] = session_store.day_timezone(cur, project_id)
        assert params is not None
        session_store.maintain(cur, project_id, remap, params, self._timezone[project_id], batch)

    # ---- deferred upkeep (imports) ---------------------------------------------------------------------
    def defer(self, cur: duckdb.DuckDBPyConnection, project_id: int) -> SessionParams | None:
        """Mark ``project_id``'s sessions as pending upkeep (in ``cur``'s transaction); returns their
        parameters, or None when it has none (or is marked already). Call :meth:`start` once it commits."""
        params = session_store.params_of(cur, project_id)
        if params is None or project_id in self._pending:
            return None
        cur.execute(
            "INSERT INTO session_pending VALUES (?, ?)", [project_id, datetime.now(UTC).replace(tzinfo=None)]
        )
        return params

    def start(self, project_id: int, params: SessionParams) -> None:
        """From now on, keep ``project_id``'s writes' events for one catch-up (:meth:`catch_up`)."""
        self._pending[project_id] = (params, Pending())

    def catch_up(self, cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
        """Bring ``project_id``'s sessions up to date with its pending events and lift the mark (in ``cur``'s
        transaction); call :meth:`stop` after it, whether it committed or not."""
        if project_id in self._pending:
            self._catch_up(cur, project_id)
            cur.execute("DELETE FROM session_pending WHERE project_id = ?", [project_id])

    def stop(self, project_id: int) -> None:
        """Stop deferring ``project_id``'s upkeep (a mark left in the store makes the next opening rebuild)."""
        self._pending.pop(project_id, None)
        self._params.pop(project_id, None)

    def _catch_up(self, cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
        params, pending = self._pending[project_id]
        rows, merged = pending.take()
        if project_id not in self._timezone:
            self._timezone[project_id] = session_store.day_timezone(cur, project_id)
        session_store.maintain(cur, project_id, merged, params, self._timezone[project_id], rows)

    def ensure(self, cur: duckdb.DuckDBPyConnection, project_id: int, timezone: str | None = None) -> bool:
        """Build ``project_id``'s sessions when it has none (or their upkeep was left pending by a process that
        stopped), and its day aggregates when it has none in ``timezone`` (when given); True if anything was
        built. Nothing is built for a project whose upkeep this store is deferring."""
        if project_id in self._pending:
            return False
        built = False
        if session_store.params_of(cur, project_id) is None:
            session_store.build(cur, project_id)
            self._params[project_id] = session_store.DEFAULT
            self._timezone[project_id] = None
            built = True
        if timezone is not None and session_store.day_timezone(cur, project_id) != timezone:
            session_store.build_days(cur, project_id, timezone)
            self._timezone[project_id] = timezone
            built = True
        return built
