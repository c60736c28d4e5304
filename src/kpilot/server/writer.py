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
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from kpilot.keys import WarningRow, record_warnings
from kpilot.meta.db import MetadataDB
from kpilot.server.errors import IngestError
from kpilot.server.ingest_log import IngestLog
from kpilot.server.prepare_pool import PreparedRecord, PreparePool, prepare_payloads
from kpilot.store.duckdb_store import EventStore, canonical_batch

__all__ = ["IngestWriter", "LogRecord", "WriterStats"]

log = logging.getLogger("kpilot.server")

_APPLIED_TABLE = """CREATE TABLE IF NOT EXISTS ingest_log_applied (
    project_id INTEGER NOT NULL, position BIGINT NOT NULL)"""
_LOG_GROUP_MAX = 4096  # requests per flush

_EMPTY = canonical_batch([], [])[0]  # the events of a record that could not be prepared

_Item = tuple[int, bytes, int]
"""A logged record waiting to be applied: position, payload, number of messages."""


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
    events: int
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
    prepare_wait_ms: int = 0  # the applier waiting for the prepare worker
    store_ms: int = 0  # the applier storing (transactions)

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
        commit_max_events: int = 100_000,
        queue_max_events: int = 400_000,
        overload_wait: float = 10.0,
        segment_bytes: int = 64 * 1024 * 1024,
        prepare_workers: int = 1,
    ) -> None:
        self.store = store
        self.meta = meta
        self.log_dir = log_dir
        self.future_tolerance = future_tolerance
        self.commit_max_events = commit_max_events
        self.queue_max_events = queue_max_events
        self.overload_wait = overload_wait
        self.segment_bytes = segment_bytes
        self.stats = WriterStats()
        self._pool = PreparePool(prepare_workers, future_tolerance)
        self._log: IngestLog | None = None
        self._log_queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Logged records wait for the applier as their encoded bytes: a third of the memory of the decoded
        # messages, so a full backlog stays small.
        self._apply_queue: queue.SimpleQueue[tuple[int, bytes, int] | None] = queue.SimpleQueue()
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
        items: list[_Item] = []
        size = replayed = 0
        for position, payload in self._log.records(after=min(applied.values(), default=0)):
            record = LogRecord.decode(payload)
            if position <= applied.get(record.project_id, 0):
                continue
            items.append((position, payload, len(record.messages)))
            size += len(record.messages)
            replayed += 1
            if size >= self.commit_max_events:
                self._replay(items)
                items, size = [], 0
        if items:
            self._replay(items)
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
        self._pool.close()
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
        """Return once ``record`` is in the ingestion log on disk; :class:`IngestError` 503 if it is not.

        While more than ``queue_max_events`` events wait to be stored, the request waits for room (up to
        ``overload_wait`` seconds, then 503 ``overloaded``): slowing clients down beats making them retry.
        """
        n = len(record.messages)
        deadline = time.monotonic() + self.overload_wait
        while True:
            with self._lock:
                if self._stopping:
                    raise IngestError(503, "shutting_down", "the server is shutting down; retry")
                if not self._pending or self._pending + n <= self.queue_max_events:
                    self._pending += n
                    break
            if time.monotonic() >= deadline:
                raise IngestError(503, "overloaded", "too many events are waiting to be stored; retry")
            await asyncio.sleep(0.005)
        try:
            payload = record.encode()
        except TypeError as exc:
            self._release(n)
            raise IngestError(400, "invalid_payload", f"the messages cannot be stored: {exc}") from exc
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._log_queue.put(_Job(payload, n, loop, future))
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
                self._release(job.events)
                _resolve(job, IngestError(503, "write_failed", "the events could not be stored; retry"))
            return
        self.stats.log_flushes += 1
        self.stats.requests += len(group)
        with self._progress:
            self._logged = positions[-1]
        for job, position in zip(group, positions, strict=True):
            self.stats.events_received += job.events
            self._apply_queue.put((position, job.payload, job.events))
            _resolve(job, None)

    # ---- apply thread ------------------------------------------------------------------------------
    def _run_apply(self) -> None:
        """Store groups in log order. While group ``k`` is being stored, the next groups (one per prepare
        worker) are being prepared."""
        inflight: deque[tuple[Future[Any], list[_Item]]] = deque()
        ahead = max(1, self._pool.workers) + 1  # the group stored next, and one being prepared per worker
        stop = False
        while True:
            while len(inflight) < ahead and not stop:
                items, stop = self._take(block=not inflight, stop=stop)
                if not items:
                    break
                inflight.append((self._pool.submit([(p, b) for p, b, _ in items]), items))
            if inflight:
                self._apply_guarded(*inflight.popleft())
            elif stop:
                break

    def _apply_guarded(self, future: Future[Any], items: list[_Item]) -> None:
        """:meth:`_apply_until_done`, retried after anything unexpected: the apply thread must not end while
        the log holds records (a retry may store a request twice; the second copy is deduplicated)."""
        while True:
            try:
                self._apply_until_done(future, items)
                return
            except Exception:
                log.exception(
                    "applying %d logged request(s) failed unexpectedly; retrying in 1 s", len(items)
                )
                time.sleep(1.0)
                future = self._pool.submit([(p, b) for p, b, _ in items])

    def _take(self, *, block: bool, stop: bool) -> tuple[list[_Item], bool]:
        """Queued records up to ``commit_max_events`` events (waiting for the first when ``block``), and
        whether the stop marker was seen."""
        items: list[_Item] = []
        size = 0
        while not stop and size < self.commit_max_events:
            try:
                item = self._apply_queue.get() if block and not items else self._apply_queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            items.append(item)
            size += item[2]
        return items, stop

    def _replay(self, items: list[_Item]) -> None:
        if not self._apply(self._prepared(self._pool.submit([(p, b) for p, b, _ in items]), items)):
            raise RuntimeError("the event store refuses the ingestion log's records; see the log above")
        with self._progress:
            self._applied = items[-1][0]

    def _apply_until_done(self, future: Future[Any], items: list[_Item]) -> None:
        """Store a group; while the store cannot take it at all, keep it and retry (it is safe in the log)."""
        t0 = time.perf_counter()
        prepared = self._prepared(future, items)
        t1 = time.perf_counter()
        delay = 0.1
        while not self._apply(prepared):
            log.error("the store refused ingested events; retrying in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        self.stats.prepare_wait_ms += round((t1 - t0) * 1000)
        self.stats.store_ms += round((time.perf_counter() - t1) * 1000)
        self._release(sum(n for _, _, n in items))
        with self._progress:
            self._applied = items[-1][0]
            self._progress.notify_all()
        if self._log is not None:
            self._log.discard_through(self._applied)

    def _prepared(self, future: Future[Any], items: list[_Item]) -> list[PreparedRecord]:
        try:
            return self._pool.result(future, [(p, b) for p, b, _ in items])
        except Exception:
            log.exception("preparing %d logged request(s) failed; preparing them one by one", len(items))
        out: list[PreparedRecord] = []
        for position, payload, _ in items:
            try:
                out.extend(prepare_payloads([(position, payload)], self._pool.tolerance_s))
            except Exception as exc:
                record = LogRecord.decode(payload)
                failed = PreparedRecord(position, record.project_id, _EMPTY, [], [], [], payload)
                self._set_aside(failed, f"the request could not be normalised: {exc}")
        return out

    def _apply(self, prepared: list[PreparedRecord]) -> bool:
        """Store prepared records (in log order); False if even setting bad records aside failed."""
        self.stats.largest_group = max(self.stats.largest_group, len(prepared))
        by_project: dict[int, list[PreparedRecord]] = defaultdict(list)
        for record in prepared:
            by_project[record.project_id].append(record)
        for project_id, records in by_project.items():
            if self._write(project_id, records):
                continue
            for one in records:  # one bad request must not hold back its neighbours
                if not self._write(project_id, [one]) and not self._set_aside(
                    one, "the store refused this request's events"
                ):
                    return False
        return True

    def _write(self, project_id: int, records: list[PreparedRecord]) -> bool:
        tables = [r.table for r in records if r.events]
        mark = _mark_applied(project_id, records[-1].position)
        try:
            if tables:
                result = self.store.write_arrow(
                    project_id,
                    pa.concat_tables(tables),
                    [m for r in records for m in r.merges],
                    [row for r in records for row in r.prop_rows],
                    also=mark,
                )
            else:  # only dropped messages: nothing to store but the position
                result = self.store.write_batch(project_id, [], also=mark)
        except Exception:
            n = sum(r.events for r in records)
            log.exception("storing %d ingested event(s) of project %d failed", n, project_id)
            return False
        self.stats.commits += 1
        self.stats.events_stored += result.accepted
        self.stats.events_deduplicated += result.deduplicated
        self._record_warnings([w for r in records for w in r.warnings])
        return True

    def _set_aside(self, item: PreparedRecord, why: str) -> bool:
        """Keep a record the store refuses in ``failed.jsonl``, warn, and mark it applied."""
        position, project_id = item.position, item.project_id
        record = LogRecord.decode(item.payload)
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
                    reason=f"{why}; kept in ingest-log/failed.jsonl (position {position})",
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
