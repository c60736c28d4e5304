"""The ingestion writer: requests are acknowledged once they are in the ingestion log, then applied in bulk.

Two threads own the write path:

* The **log thread** takes every request queued since its last turn, appends them to the ingestion log
  (:mod:`kpilot.server.ingest_log`) with one ``fdatasync``, and only then resolves the requests' awaitables:
  a 2xx reply means the request is on disk. Under load many requests share one flush.
* The **apply thread** takes the logged records in order, up to ``commit_max_events`` events at a time,
  normalises them (:func:`kpilot.server.ingest.prepare`, with the receive time of each request) and stores
  each project's events with one :meth:`EventStore.write_batch`, i.e. one DuckDB transaction. The same
  transaction records the log position applied for that project (table ``ingest_log_applied``), so after a
  crash the replay at start (:meth:`IngestWriter.start`) takes exactly the records the store lacks.
  Ingestion warnings are recorded after the commit.

Queries see an event once it is applied, normally within a fraction of a second; :meth:`IngestWriter.flush`
waits for everything acknowledged so far (the CLI calls it through ``POST /api/ingestion/flush`` before
reading while a server runs). A record the store refuses even on its own is kept in
``ingest-log/failed.jsonl`` with the error and an ``apply_failed`` warning, and the applier moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from kpilot.collect.normalize import Normalized
from kpilot.keys import KeyOwner, WarningRow, record_warnings
from kpilot.meta.db import MetadataDB
from kpilot.server.errors import IngestError
from kpilot.server.ingest import prepare
from kpilot.server.ingest_log import IngestLog
from kpilot.store.duckdb_store import EventStore

__all__ = ["IngestWriter", "LogRecord", "WriterStats"]

log = logging.getLogger("kpilot.server")

_APPLIED_TABLE = """CREATE TABLE IF NOT EXISTS ingest_log_applied (
    project_id INTEGER NOT NULL, position BIGINT NOT NULL)"""
_LOG_GROUP_MAX = 4096  # requests per flush


@dataclass(slots=True)
class LogRecord:
    """One accepted request as the log keeps it: who sent which messages, when, through which protocol."""

    project_id: int
    key_id: int
    source: str
    received_at: datetime
    messages: list[Any]
    defaults: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "p": self.project_id,
                "k": self.key_id,
                "s": self.source,
                "r": self.received_at.isoformat(),
                "d": self.defaults,
                "m": self.messages,
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> LogRecord:
        data = orjson.loads(payload)
        return cls(data["p"], data["k"], data["s"], datetime.fromisoformat(data["r"]), data["m"], data["d"])


@dataclass(slots=True)
class _Job:
    payload: bytes
    record: LogRecord
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


@dataclass(slots=True)
class WriterStats:
    requests: int = 0
    events_received: int = 0
    log_flushes: int = 0
    commits: int = 0
    events_stored: int = 0
    events_deduplicated: int = 0
    failed_requests: int = 0
    failed_records: int = 0
    replayed_requests: int = 0
    largest_group: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


class IngestWriter:
    def __init__(
        self,
        store: EventStore,
        meta: MetadataDB,
        log_dir: Path,
        *,
        future_tolerance: timedelta,
        commit_max_events: int = 20_000,
        queue_max_events: int = 200_000,
        segment_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.meta = meta
        self.log_dir = log_dir
        self.future_tolerance = future_tolerance
        self.commit_max_events = commit_max_events
        self.queue_max_events = queue_max_events
        self.segment_bytes = segment_bytes
        self.stats = WriterStats()
        self._log: IngestLog | None = None
        self._log_queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._apply_queue: queue.SimpleQueue[tuple[int, LogRecord] | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._progress = threading.Condition()
        self._logged = 0  # position of the last record flushed to the log
        self._applied = 0  # every record at or below this position is applied
        self._stopping = False
        self._log_thread = threading.Thread(target=self._run_log, name="kpilot-log", daemon=True)
        self._apply_thread = threading.Thread(target=self._run_apply, name="kpilot-apply", daemon=True)

    # ---- life cycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Apply what the log holds beyond the store's applied positions, then start both threads."""
        applied = self._applied_positions()
        self._log = IngestLog.open(
            self.log_dir, at_least=max(applied.values(), default=0), segment_bytes=self.segment_bytes
        )
        group: list[tuple[int, LogRecord]] = []
        size = replayed = 0
        for position, payload in self._log.records(after=min(applied.values(), default=0)):
            record = LogRecord.decode(payload)
            if position <= applied.get(record.project_id, 0):
                continue
            group.append((position, record))
            size += len(record.messages)
            replayed += 1
            if size >= self.commit_max_events:
                self._apply(group)
                group, size = [], 0
        if group:
            self._apply(group)
        self.stats.replayed_requests = replayed
        if replayed:
            log.info("applied %d request(s) from the ingestion log", replayed)
        self._logged = self._applied = self._log.end
        self._log.discard_through(self._applied)
        self._log_thread.start()
        self._apply_thread.start()

    def stop(self) -> None:
        """Flush and apply everything accepted so far, then end both threads."""
        with self._lock:
            self._stopping = True
        self._log_queue.put(None)
        self._log_thread.join()
        self._apply_queue.put(None)
        self._apply_thread.join()
        if self._log is not None:
            self._log.discard_through(self._applied)
            self._log.close()

    @property
    def pending_events(self) -> int:
        """Events accepted but not yet applied to the store."""
        return self._pending

    @property
    def positions(self) -> dict[str, int]:
        return {"logged": self._logged, "applied": self._applied}

    # ---- request side ------------------------------------------------------------------------------
    async def submit(self, record: LogRecord) -> None:
        """Return once ``record`` is in the ingestion log on disk; :class:`IngestError` 503 if it is not."""
        n = len(record.messages)
        with self._lock:
            if self._stopping:
                raise IngestError(503, "shutting_down", "the server is shutting down; retry")
            if self._pending and self._pending + n > self.queue_max_events:
                raise IngestError(503, "overloaded", "too many events are waiting to be stored; retry")
            self._pending += n
        try:
            payload = record.encode()
        except TypeError as exc:
            self._release(n)
            raise IngestError(400, "invalid_payload", f"the messages cannot be stored: {exc}") from exc
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._log_queue.put(_Job(payload, record, loop, future))
        await future

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every request acknowledged before this call is applied; False on timeout."""
        target = self._logged
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._applied < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._apply_thread.is_alive():
                    return False
                self._progress.wait(left)
        return True

    def _release(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    # ---- log thread --------------------------------------------------------------------------------
    def _run_log(self) -> None:
        assert self._log is not None
        stop = False
        while not stop:
            first = self._log_queue.get()
            if first is None:
                break
            group = [first]
            while len(group) < _LOG_GROUP_MAX:
                try:
                    job = self._log_queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                group.append(job)
            self._flush_group(group)
        rest = []
        while True:
            try:
                job = self._log_queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                rest.append(job)
        if rest:
            self._flush_group(rest)

    def _flush_group(self, group: list[_Job]) -> None:
        assert self._log is not None
        try:
            positions = self._log.append([job.payload for job in group])
        except Exception:
            log.exception("could not append %d request(s) to the ingestion log", len(group))
            for job in group:
                self.stats.failed_requests += 1
                self._release(len(job.record.messages))
                _resolve(job, IngestError(503, "write_failed", "the events could not be stored; retry"))
            return
        self.stats.log_flushes += 1
        self.stats.requests += len(group)
        with self._progress:
            self._logged = positions[-1]
        for job, position in zip(group, positions, strict=True):
            self.stats.events_received += len(job.record.messages)
            self._apply_queue.put((position, job.record))
            _resolve(job, None)

    # ---- apply thread ------------------------------------------------------------------------------
    def _run_apply(self) -> None:
        stop = False
        while not stop:
            first = self._apply_queue.get()
            if first is None:
                break
            group = [first]
            size = len(first[1].messages)
            while size < self.commit_max_events:
                try:
                    item = self._apply_queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
                size += len(item[1].messages)
            self._apply_until_done(group)

    def _apply_until_done(self, group: list[tuple[int, LogRecord]]) -> None:
        """Apply ``group``; while the store cannot take it at all, keep it and retry (it is safe in the log)."""
        delay = 0.1
        while not self._apply(group):
            log.error("the store refused ingested events; retrying in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        size = sum(len(r.messages) for _, r in group)
        self._release(size)
        with self._progress:
            self._applied = group[-1][0]
            self._progress.notify_all()
        if self._log is not None:
            self._log.discard_through(self._applied)

    def _apply(self, group: list[tuple[int, LogRecord]]) -> bool:
        """Store ``group`` (records in log order); False if even setting bad records aside failed."""
        self.stats.largest_group = max(self.stats.largest_group, len(group))
        by_project: dict[int, list[tuple[int, LogRecord]]] = defaultdict(list)
        for item in group:
            by_project[item[1].project_id].append(item)
        for project_id, items in by_project.items():
            prepared = [(position, record, *self._prepare(record)) for position, record in items]
            if self._write(project_id, prepared):
                continue
            for one in prepared:  # one bad request must not hold back its neighbours
                if not self._write(project_id, [one]) and not self._set_aside(project_id, one):
                    return False
        return True

    def _prepare(self, record: LogRecord) -> tuple[list[Normalized], list[WarningRow]]:
        out = prepare(
            record.messages,
            source=record.source,
            owner=KeyOwner(key_id=record.key_id, project_id=record.project_id),
            received_at=record.received_at,
            max_event_bytes=0,
            future_tolerance=self.future_tolerance,
            defaults=record.defaults,
            check_sizes=False,
        )
        return out.events, out.warnings

    def _write(
        self, project_id: int, items: list[tuple[int, LogRecord, list[Normalized], list[WarningRow]]]
    ) -> bool:
        events = [e for item in items for e in item[2]]
        position = items[-1][0]
        try:
            result = self.store.write_batch(
                project_id,
                events,
                received_at=max(item[1].received_at for item in items),
                also=_mark_applied(project_id, position),
            )
        except Exception:
            log.exception("storing %d ingested event(s) of project %d failed", len(events), project_id)
            return False
        self.stats.commits += 1
        self.stats.events_stored += result.accepted
        self.stats.events_deduplicated += result.deduplicated
        self._record_warnings([w for item in items for w in item[3]])
        return True

    def _set_aside(
        self, project_id: int, item: tuple[int, LogRecord, list[Normalized], list[WarningRow]]
    ) -> bool:
        """Keep a record the store refuses in ``failed.jsonl``, warn, and mark it applied."""
        position, record = item[0], item[1]
        line = orjson.dumps({"position": position, "record": orjson.Fragment(record.encode())}) + b"\n"
        try:
            with (self.log_dir / "failed.jsonl").open("ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.store.write_batch(project_id, [], also=_mark_applied(project_id, position))
        except Exception:
            log.exception("could not set aside ingestion log record %d", position)
            return False
        self.stats.failed_records += 1
        log.error("ingestion log record %d (project %d) set aside in failed.jsonl", position, project_id)
        self._record_warnings(
            [
                WarningRow(
                    project_id=project_id,
                    key_id=record.key_id,
                    source=record.source,
                    kind="apply_failed",
                    reason=f"the store refused this request's events; kept in ingest-log/failed.jsonl "
                    f"(position {position})",
                    event=None,
                    excerpt=None,
                    created_at=record.received_at,
                )
            ]
        )
        return True

    def _record_warnings(self, warnings: list[WarningRow]) -> None:
        if not warnings:
            return
        try:
            record_warnings(self.meta, warnings)
        except Exception:  # the events are committed; losing warnings must not stop the applier
            log.exception("could not record %d ingestion warning(s)", len(warnings))

    def _applied_positions(self) -> dict[int, int]:
        cur = self.store.cursor()
        try:
            cur.execute(_APPLIED_TABLE)
            rows = cur.execute(
                "SELECT project_id, max(position) FROM ingest_log_applied GROUP BY ALL"
            ).fetchall()
        finally:
            cur.close()
        return {int(p): int(pos) for p, pos in rows}


def _mark_applied(project_id: int, position: int) -> Callable[[duckdb.DuckDBPyConnection], None]:
    def mark(cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute("DELETE FROM ingest_log_applied WHERE project_id = ?", [project_id])
        cur.execute("INSERT INTO ingest_log_applied VALUES (?, ?)", [project_id, position])

    return mark


def _resolve(job: _Job, error: IngestError | None) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        job.loop.call_soon_threadsafe(_settle, job.future, error)


def _settle(future: asyncio.Future[None], error: IngestError | None) -> None:
    if future.done():  # the client went away and the handler was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
