"""The embedded event store on DuckDB: one writer, many concurrent readers.

Writes go through :meth:`EventStore.write_batch`, which deduplicates, resolves identities, appends events
and records ingest statistics in a single transaction: a batch is either fully stored or not at all.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kpilot.collect.normalize import Normalized
from kpilot.errors import WorkspaceError
from kpilot.store import identity, rollup_store, session_upkeep
from kpilot.store.batch_rows import BatchRows
from kpilot.store.change_log import ChangeLog, Changes, ProjectChange
from kpilot.store.id_index import IdIndex, days_of
from kpilot.store.schema import MIGRATIONS, SCHEMA_SQL, SCHEMA_VERSION

__all__ = [
    "COMPACT_AFTER",
    "DEDUP_WINDOW",
    "BatchResult",
    "EventStore",
    "InTransaction",
    "PropRow",
    "canonical_batch",
    "event_columns",
    "identity_rows",
    "uuid_hash",
]

InTransaction = Callable[[duckdb.DuckDBPyConnection], None]
"""Extra work a caller runs inside a write's transaction (see :meth:`EventStore.write_batch`)."""

DEDUP_WINDOW = timedelta(days=1)
"""A message id counts as a duplicate of a stored event whose timestamp is within this window of it."""

CLUSTER_MIN_ROWS = 65_536
"""Batches of at least this many rows are stored sorted by event name (about half a DuckDB row group)."""

COMPACT_AFTER = 4096
"""Rollup delta rows a project may gather (in this process) before a write batch compacts them."""

_EVENT_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("properties", pa.string()),
        ("received_at", pa.timestamp("us")),
    ]
)


@dataclass(slots=True)
class BatchResult:
    received: int
    accepted: int
    deduplicated: int


class EventStore:
    """A DuckDB database file holding every project's events, persons and ingest statistics."""

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        rollups: bool = True,
        memory_limit: str | None = None,
        id_index_mb: int = 64,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.maintain_rollups = rollups
        """Keep the rollups of projects that have one current on every write (off: they are dropped)."""
        self._rollup_tz: dict[int, str | None] = {}
        self._rollup_deltas: dict[int, int] = {}
        self._bulk: set[int] = set()
        """Projects written without upkeep until their bulk write ends (:meth:`bulk_upkeep`)."""
        config: dict[str, str | bool | int | float | list[str]] = {}
        if memory_limit:
            config["memory_limit"] = memory_limit
        try:
            self.conn = duckdb.connect(str(self.path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            raise WorkspaceError(f"cannot open event store {self.path}: {exc}") from exc
        except (duckdb.InvalidInputException, duckdb.ParserException) as exc:
            raise WorkspaceError(f"KPILOT_STORE_MEMORY_LIMIT {memory_limit!r} is not valid: {exc}") from exc
        self._shared: _Writer | None = None
        self._after_commit: list[Callable[[], None]] = []
        self._changes = Changes(known=False)
        """What the running transaction changed in rollups (:mod:`kpilot.store.change_log`)."""
        self._staged_days: frozenset[int] = frozenset()
        if read_only:
            self._write_lock = threading.Lock()
            self._ids = IdIndex(0)
        else:
            # Every writing EventStore of one file in this process shares a lock and the id index, so the
            # index sees every committed write (DuckDB gives such connections one database instance).
            self._shared = _Writer.attach(self.path, id_index_mb * 2**20)
            self._write_lock, self._ids = self._shared.lock, self._shared.ids
            self._upgrade()
        # deferred session upkeep is shared too: a write of a deferred project through any store of the file
        # joins the catch-up, and no store rebuilds the project's sessions meanwhile
        self._sessions = session_upkeep.Upkeep({} if self._shared is None else self._shared.pending)

    def _upgrade(self) -> None:
        """Create the schema, or bring an older store up to :data:`SCHEMA_VERSION` (one transaction each)."""
        self.conn.execute("CREATE TABLE IF NOT EXISTS kpilot_schema (version INTEGER NOT NULL)")
        row = self.conn.execute("SELECT max(version) FROM kpilot_schema").fetchone()
        current = row[0] if row else None
        if current is None:
            self.conn.execute(SCHEMA_SQL)
            self.conn.execute("INSERT INTO kpilot_schema VALUES (?)", [SCHEMA_VERSION])
            return
        for version in range(int(current) + 1, SCHEMA_VERSION + 1):
            self.conn.execute("BEGIN TRANSACTION")
            try:
                self.conn.execute(MIGRATIONS[version])
                self.conn.execute("DELETE FROM kpilot_schema")
                self.conn.execute("INSERT INTO kpilot_schema VALUES (?)", [version])
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        self.conn.execute(SCHEMA_SQL)  # new tables and views of this version (all IF NOT EXISTS / OR REPLACE)

    def close(self) -> None:
        if self._shared is not None:
            self._shared.detach(self.path)
            self._shared = None
        self.conn.close()

    @property
    def id_index_bytes(self) -> int:
        """Memory held by the id index of this store's file (:mod:`kpilot.store.id_index`)."""
        return self._ids.nbytes

    @property
    def id_index_disk_bytes(self) -> int:
        """Bytes of the id index's run files (hashes of busy days past its memory budget)."""
        return self._ids.disk_bytes

    # ---- reads -------------------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one reader thread (DuckDB cursors share the database, not the transaction)."""
        return self.conn.cursor()

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self.cursor()
        try:
            return cur.execute(sql, params or []).fetchall()
        finally:
            cur.close()

    # ---- writes ------------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._write_lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN TRANSACTION")
            self._changes = changes = Changes(known=False)  # unknown unless a write says what it changed
            try:
                yield cur
            except BaseException:
                self._after_commit.clear()
                cur.execute("ROLLBACK")
                cur.close()
                self._rollup_tz.clear()  # what the rolled-back work cached may not hold
                self._sessions.forget()
                raise
            rollup_store.commit_begins(self)  # readers' rollup caches stop trusting what they hold
            committed = False
            try:
                cur.execute("COMMIT")
                committed = True
                self._sessions.committed()
            finally:
                rollup_store.commit_ended(self)
                if self._shared is not None:
                    # commits are serialised by the write lock, so the generation now is this one's
                    generation = rollup_store.write_generation(self)[0]
                    self._shared.changes.record(generation, changes if committed else None)
                cur.close()
                done, self._after_commit = self._after_commit, []
            for fn in done:
                fn()

    def write_batch(
        self,
        project_id: int,
        events: Sequence[Normalized],
        received_at: datetime | None = None,
        *,
        also: InTransaction | None = None,
    ) -> BatchResult:
        """Store ``events`` atomically; duplicates (same uuid within :data:`DEDUP_WINDOW`) are dropped.

        ``also`` runs inside the same transaction after the events are written (the server records how far
        it has applied its ingestion log there, so the log position and the events commit together).
        """
        if not events:
            if also is not None:
                with self._transaction() as cur:
                    also(cur)
            return BatchResult(0, 0, 0)
        now = received_at or datetime.now(UTC).replace(tzinfo=None)
        table, merges, prop_rows = canonical_batch(events, [now] * len(events))
        return self.write_arrow(project_id, table, merges, prop_rows, also=also)

    def write_arrow(
        self,
        project_id: int,
        table: pa.Table,
        merges: Sequence[tuple[str, str]],
        prop_rows: Sequence[tuple[str, str, str | None, datetime, bool]],
        *,
        also: InTransaction | None = None,
    ) -> BatchResult:
        """Store a canonical event table (columns of ``_EVENT_SCHEMA``) with its identity side effects."""
        received = table.num_rows
        with self._transaction() as cur:
            self._changes.known = True  # what follows reports what it changes in rollups
            # the id hash comes with the table (canonical_batch) or is computed here
            add_hash = "" if "uuid_hash" in table.column_names else ", md5_number_lower(uuid) AS uuid_hash"
            if pc.count_distinct(table["uuid"]).as_py() == received:  # the usual case: ids are unique
                cur.register("batch_in", table)
                cur.execute(f"CREATE OR REPLACE TEMP TABLE staged AS SELECT *{add_hash} FROM batch_in")
            else:
                # Several rows with one id: the earliest timestamp wins, then the first in the batch.
                ordinal = pa.array(np.arange(table.num_rows, dtype=np.int64))
                cur.register("batch_in", table.append_column("ordinal", ordinal))
                cur.execute(
                    f"""CREATE OR REPLACE TEMP TABLE staged AS
                        SELECT * EXCLUDE (ordinal){add_hash} FROM batch_in
                        QUALIFY row_number() OVER (PARTITION BY uuid ORDER BY timestamp, ordinal) = 1"""
                )
            cur.unregister("batch_in")
            self._drop_stored_duplicates(cur, project_id)
            remap = self._resolve_identity(cur, project_id, merges, prop_rows)
            # A bulk batch is stored sorted by event name (then time): its row groups then each hold a few
            # names, so a query for some events skips the others' row groups by their min/max.
            order = " ORDER BY event, timestamp" if received >= CLUSTER_MIN_ROWS else ""
            cur.execute(
                f"""INSERT INTO events (project_id, uuid, event, distinct_id, timestamp, properties, received_at, uuid_hash)
                    SELECT ?, uuid, event, distinct_id, timestamp, properties, received_at, uuid_hash FROM staged{order}""",
                [project_id],
            )
            upkeep = self.maintain_rollups and project_id not in self._bulk
            batch = BatchRows(cur)  # the batch's events and persons, read once for both upkeeps
            self._maintain_rollups(cur, project_id, remap, upkeep, batch)
            self._sessions.maintain(cur, project_id, remap, keep=upkeep, batch=batch)
            cur.execute("DROP TABLE IF EXISTS batch_persons")
            cur.register("batch_all", table.select(["event", "timestamp"]))
            cur.execute(
                """INSERT INTO ingest_stats
                   SELECT ?, a.day, a.event, coalesce(s.n, 0), a.n - coalesce(s.n, 0)
                   FROM (SELECT CAST(timestamp AS DATE) AS day, event, count(*) AS n FROM batch_all GROUP BY ALL) a
                   LEFT JOIN (SELECT CAST(timestamp AS DATE) AS day, event, count(*) AS n FROM staged GROUP BY ALL) s
                   USING (day, event)""",
                [project_id],
            )
            cur.unregister("batch_all")
            accepted = cur.execute("SELECT count(*) FROM staged").fetchone()[0]  # type: ignore[index]
            cur.execute("DROP TABLE staged")
            if also is not None:
                also(cur)
        return BatchResult(received, int(accepted), received - int(accepted))

    def _drop_stored_duplicates(self, cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
        """Remove staged rows whose id is already stored within :data:`DEDUP_WINDOW` of the row's timestamp.

        The in-memory id index (:mod:`kpilot.store.id_index`) names the candidates; only those are compared
        with stored rows (id text and timestamps). The rows left are recorded in the index after the commit.
        """
        got = cur.execute("SELECT uuid_hash, timestamp FROM staged").fetchnumpy()
        hashes = np.asarray(got["uuid_hash"], dtype=np.uint64)
        days = days_of(np.asarray(got["timestamp"]))
        hit = self._ids.candidates(cur, project_id, hashes, days)
        if hit.any():
            cur.register("dup_candidates", pa.table({"uuid_hash": pa.array(np.unique(hashes[hit]))}))
            # the candidates' outer window bounds the scan (zone maps skip the rest of the events)
            lo, hi = cur.execute(
                "SELECT min(timestamp), max(timestamp) FROM staged SEMI JOIN dup_candidates USING (uuid_hash)"
            ).fetchone()  # type: ignore[misc]
            low = lo - DEDUP_WINDOW if lo > datetime.min + DEDUP_WINDOW else datetime.min
            high = hi + DEDUP_WINDOW if hi < datetime.max - DEDUP_WINDOW else datetime.max
            cur.execute(
                """DELETE FROM staged WHERE uuid_hash IN (SELECT uuid_hash FROM dup_candidates) AND EXISTS (
                       SELECT 1 FROM events e
                       WHERE e.project_id = ? AND e.timestamp BETWEEN ? AND ?
                         AND e.uuid_hash = staged.uuid_hash AND e.uuid = staged.uuid
                         AND abs(epoch_us(e.timestamp) - epoch_us(staged.timestamp)) <= ?)""",
                [project_id, low, high, DEDUP_WINDOW // timedelta(microseconds=1)],
            )
            cur.unregister("dup_candidates")
            got = cur.execute("SELECT uuid_hash, timestamp FROM staged").fetchnumpy()
            hashes = np.asarray(got["uuid_hash"], dtype=np.uint64)
            days = days_of(np.asarray(got["timestamp"]))
        self._staged_days = frozenset(int(d) for d in np.unique(days))
        ids = self._ids
        self._after_commit.append(lambda: ids.add(project_id, hashes, days))

    def _resolve_identity(
        self,
        cur: duckdb.DuckDBPyConnection,
        project_id: int,
        merges: Sequence[tuple[str, str]],
        prop_rows: Sequence[tuple[str, str, str | None, datetime, bool]],
    ) -> dict[int, int]:
        """Give every distinct id of the batch a person and apply merges (:func:`identity.resolve`)."""
        return identity.resolve(cur, project_id, merges, prop_rows)

    # ---- rollups -----------------------------------------------------------------------------------
    def _maintain_rollups(
        self,
        cur: duckdb.DuckDBPyConnection,
        project_id: int,
        remap: dict[int, int],
        keep: bool,
        batch: BatchRows | None = None,
    ) -> None:
        if project_id not in self._rollup_tz:
            self._rollup_tz[project_id] = rollup_store.rollup_timezone(cur, project_id)
        tz = self._rollup_tz[project_id]
        if tz is None:
            return
        if not keep:
            # Writing without maintaining: the rollup would go stale, so it is dropped (rebuilt on demand).
            rollup_store.drop(cur, project_id)
            self._rollup_tz[project_id] = None
            self._changes.known = False
            return
        rollup_store.add_merges(cur, project_id, remap.items())
        appended: rollup_store.Sink = []
        added = rollup_store.add_staged(cur, project_id, tz, appended, batch)
        merges = tuple((int(a), int(b)) for a, b in remap.items() if a != b)
        self._changes.add(project_id, self._staged_days, merges, tuple(appended))
        deltas = self._rollup_deltas.get(project_id, 0) + added
        if deltas > COMPACT_AFTER:
            rollup_store.compact(cur, project_id)
            deltas = 0
        self._rollup_deltas[project_id] = deltas

    def rollup_changes(self, first: int, last: int, project_id: int) -> ProjectChange | None:
        """What commits between write generations ``first`` and ``last`` changed in ``project_id``'s rollup,
        or None when not known (:mod:`kpilot.store.change_log`)."""
        return None if self._shared is None else self._shared.changes.since(first, last, project_id)

    def rollup_timezone(self, project_id: int) -> str | None:
        """The timezone of ``project_id``'s rollup, or None when it has none (queries use raw events)."""
        cur = self.cursor()
        try:
            return rollup_store.rollup_timezone(cur, project_id)
        finally:
            cur.close()

    def ensure_rollups(self, project_id: int, timezone: str) -> bool:
        """Build ``project_id``'s rollup in ``timezone`` unless it exists in that timezone; True if built."""
        if self.read_only or not self.maintain_rollups:
            return False
        with self._transaction() as cur:
            self._sessions.ensure(
                cur, project_id, timezone
            )  # sessions and their day aggregates, when missing
            if rollup_store.rollup_timezone(cur, project_id) == timezone:
                return False
            rollup_store.build(cur, project_id, timezone)
        self._rollup_tz[project_id] = timezone
        self._rollup_deltas[project_id] = 0
        return True

    @contextmanager
    def bulk_upkeep(self, project_id: int) -> Iterator[bool]:
        """Write ``project_id`` without rollup and session upkeep, then build them once at the end.

        For a bulk import at least as large as what the project holds, one build from all of its events is
        cheaper than keeping them current batch by batch (docs/rollups.md, "Bulk imports"). The first write
        inside drops the project's rollup and sessions (queries read raw events meanwhile, as for any
        project without them); every write of the project while the block runs, from any thread, skips the
        upkeep; the block's end builds them again in the timezone they had. When the block ends with an
        error the build still runs (the events written so far are stored); on an interrupt it is left to the
        next opening of the workspace. Yields whether the upkeep is deferred (False: the project had no
        rollup to keep, or upkeep is off).
        """
        if self.read_only or not self.maintain_rollups or project_id in self._bulk:
            yield False
            return
        timezone = self.rollup_timezone(project_id)
        if timezone is None:
            yield False
            return
        self._bulk.add(project_id)
        try:
            yield True
        except Exception:
            self._bulk.discard(project_id)
            self.ensure_rollups(project_id, timezone)
            raise
        finally:
            self._bulk.discard(project_id)
        self.ensure_rollups(project_id, timezone)

    @contextmanager
    def deferred_sessions(self, project_id: int) -> Iterator[bool]:
        """Write ``project_id`` with its session upkeep put off until the block ends, then caught up in one
        pass (:mod:`kpilot.store.session_pending`); its rollup is kept batch by batch as usual.

        For an import smaller than the project, one pass at the end costs less than keeping the sessions
        current batch by batch (docs/rollups.md, "Bulk imports"). Meanwhile queries read raw events for
        session statistics. When the block ends with an error the catch-up still runs (the events written so
        far are stored); on an interrupt the project stays marked, and the next opening of the workspace
        rebuilds its sessions. Yields whether the upkeep is deferred (False: the project has no sessions,
        upkeep is off, or a bulk import or another deferral holds it).
        """
        if self.read_only or not self.maintain_rollups or project_id in self._bulk:
            yield False
            return
        with self._transaction() as cur:
            self._changes.known = True  # the mark changes no rollup
            params = self._sessions.defer(cur, project_id)
        if params is None:
            yield False
            return
        self._sessions.start(project_id, params)
        try:
            yield True
        except Exception:
            self._catch_up_sessions(project_id)
            raise
        except BaseException:
            self._sessions.stop(project_id)
            raise
        self._catch_up_sessions(project_id)

    def _catch_up_sessions(self, project_id: int) -> None:
        try:
            with self._transaction() as cur:
                self._changes.known = True  # sessions are not part of the rollup
                self._sessions.catch_up(cur, project_id)
        finally:
            self._sessions.stop(project_id)

    def compact_rollups(self, project_id: int) -> int:
        """Merge ``project_id``'s rollup delta rows (one row per day and event); returns keys merged."""
        with self._transaction() as cur:
            merged = rollup_store.compact(cur, project_id)
        self._rollup_deltas[project_id] = 0
        return merged

    def delete_project(self, project_id: int) -> None:
        """Delete every row of ``project_id`` from every table that has a ``project_id`` column, in one write."""
        tables = self.fetchall(
            """SELECT c.table_name FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_schema, table_name)
               WHERE c.column_name = 'project_id' AND t.table_type = 'BASE TABLE' AND t.table_schema = 'main'
               ORDER BY 1"""
        )
        with self._transaction() as cur:
            for (name,) in tables:
                cur.execute(f'DELETE FROM "{name}" WHERE project_id = ?', [project_id])
            self._after_commit.append(lambda: self._ids.forget_project(project_id))
        self._rollup_tz.pop(project_id, None)
        self._rollup_deltas.pop(project_id, None)
        self._sessions.stop(project_id)
        self._sessions.forget()

    def checkpoint(self) -> None:
        with self._write_lock:
            self.conn.execute("CHECKPOINT")


class _Writer:
    """What every writing :class:`EventStore` of one database file in this process shares."""

    def __init__(self, path: Path, budget_bytes: int) -> None:
        self.lock = threading.Lock()
        self.ids = IdIndex(budget_bytes, spill_to=path.parent)
        self.changes = ChangeLog()
        self.pending: session_upkeep.Deferred = {}
        """Projects whose session upkeep a write of this file defers (:meth:`EventStore.deferred_sessions`)."""
        self.users = 0

    @classmethod
    def attach(cls, path: Path, budget_bytes: int) -> _Writer:
        with _WRITERS_GUARD:
            key = path.resolve()
            shared = _WRITERS.get(key)
            if shared is None:
                shared = _WRITERS[key] = _Writer(key, budget_bytes)
            shared.users += 1
            return shared

    def detach(self, path: Path) -> None:
        with _WRITERS_GUARD:
            self.users -= 1
            if self.users == 0:
                _WRITERS.pop(path.resolve(), None)
                self.ids.close()


_WRITERS: dict[Path, _Writer] = {}
_WRITERS_GUARD = threading.Lock()


PropRow = tuple[str, str, str | None, datetime, bool]
"""A person property set by an event: distinct id, key, value as text, event time, set-once."""


def canonical_batch(
    events: Sequence[Normalized], received_at: Sequence[datetime]
) -> tuple[pa.Table, list[tuple[str, str]], list[PropRow]]:
    """What :meth:`EventStore.write_arrow` takes for ``events``: the event table (``received_at`` per event),
    the merges and the person property rows, in event order."""
    columns = event_columns(events)
    hashes = pa.array([uuid_hash(u) for u in columns["uuid"]], pa.uint64())
    table = pa.Table.from_pydict({**columns, "received_at": received_at}, schema=_EVENT_SCHEMA)
    return (table.append_column("uuid_hash", hashes), *identity_rows(events))


def uuid_hash(uuid: str) -> int:
    """The 64-bit id hash stored in ``events.uuid_hash``: DuckDB's ``md5_number_lower(uuid)``, in Python so
    that the server's prepare worker computes it instead of the single writer."""
    return int.from_bytes(hashlib.md5(uuid.encode()).digest()[8:], "little")


def event_columns(events: Sequence[Normalized]) -> dict[str, list[Any]]:
    """The stored columns of ``events`` that come from the events themselves, as Python lists."""
    return {
        "uuid": [e.uuid for e in events],
        "event": [e.event for e in events],
        "distinct_id": [e.distinct_id for e in events],
        "timestamp": [e.timestamp for e in events],
        "properties": [e.properties_json() for e in events],
    }


def identity_rows(events: Sequence[Normalized]) -> tuple[list[tuple[str, str]], list[PropRow]]:
    """The merges and person property rows of ``events``, in event order."""
    merges = [m for e in events for m in e.merges]
    prop_rows: list[PropRow] = []
    for e in events:
        for key, value in e.set_props.items():
            prop_rows.append((e.distinct_id, str(key), _prop_text(value), e.timestamp, False))
        for key, value in e.set_once_props.items():
            prop_rows.append((e.distinct_id, str(key), _prop_text(value), e.timestamp, True))
    return merges, prop_rows


def _prop_text(value: Any) -> str | None:
    """Person property values are stored as text: strings as-is, everything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    import orjson

    return orjson.dumps(value, default=str).decode()
