"""The single writer: one thread owns every write to the event store and commits requests in groups.

Request handlers call :meth:`GroupCommitWriter.submit` and await it. The writer thread takes the first
queued job, then every job queued behind it (up to ``commit_max_events`` events), and stores each
project's events of the group with one :meth:`EventStore.write_batch` call, i.e. one DuckDB transaction.
Only after that transaction committed are the jobs' awaitables resolved, so a 2xx reply always means the
events are on disk. No timer is involved: while one commit runs, new requests queue up and form the next
group, so under load many requests share a commit, and an idle server commits a lone request at once.

If a group's write fails, each of its jobs is retried alone so one bad request cannot fail its
neighbours; a job that still fails gets an error (the client sees 503 and retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from kpilot.collect.normalize import Normalized
from kpilot.keys import WarningRow, record_warnings
from kpilot.meta.db import MetadataDB
from kpilot.server.errors import IngestError
from kpilot.store.duckdb_store import EventStore

__all__ = ["GroupCommitWriter", "WriterStats"]

log = logging.getLogger("kpilot.server")


@dataclass(slots=True)
class _Job:
    project_id: int
    events: Sequence[Normalized]
    warnings: Sequence[WarningRow]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


@dataclass(slots=True)
class WriterStats:
    commits: int = 0
    requests: int = 0
    events_received: int = 0
    events_stored: int = 0
    events_deduplicated: int = 0
    failed_requests: int = 0
    largest_group: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "commits": self.commits,
            "requests": self.requests,
            "events_received": self.events_received,
            "events_stored": self.events_stored,
            "events_deduplicated": self.events_deduplicated,
            "failed_requests": self.failed_requests,
            "largest_group": self.largest_group,
        }


class GroupCommitWriter:
    def __init__(
        self,
        store: EventStore,
        meta: MetadataDB,
        *,
        commit_max_events: int = 20_000,
        queue_max_events: int = 200_000,
    ) -> None:
        self.store = store
        self.meta = meta
        self.commit_max_events = commit_max_events
        self.queue_max_events = queue_max_events
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="kpilot-writer", daemon=True)
        self._stopping = False

    @property
    def pending_events(self) -> int:
        return self._pending

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Commit everything queued so far, then end the thread."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join()

    async def submit(
        self, project_id: int, events: Sequence[Normalized], warnings: Sequence[WarningRow] = ()
    ) -> None:
        """Return once ``events`` and ``warnings`` are committed; raise :class:`IngestError` (503) if not."""
        if not events and not warnings:
            return
        with self._lock:
            if self._stopping:
                raise IngestError(503, "shutting_down", "the server is shutting down; retry")
            if self._pending and self._pending + len(events) > self.queue_max_events:
                raise IngestError(503, "overloaded", "too many events are waiting to be written; retry")
            self._pending += len(events)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Job(project_id, events, warnings, loop, future))
        await future

    # ---- writer thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            size = len(first.events)
            while size < self.commit_max_events:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                group.append(job)
                size += len(job.events)
            self._commit_group(group)
        # Anything still queued after the stop marker (a race with shutdown) is committed too.
        rest: list[_Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                rest.append(job)
        if rest:
            self._commit_group(rest)

    def _commit_group(self, group: list[_Job]) -> None:
        by_project: dict[int, list[_Job]] = defaultdict(list)
        for job in group:
            by_project[job.project_id].append(job)
        done: list[_Job] = []
        for project_id, jobs in by_project.items():
            if self._write(project_id, jobs):
                done.extend(jobs)
            elif len(jobs) > 1:
                for job in jobs:
                    if self._write(project_id, [job]):
                        done.append(job)
                    else:
                        self._fail(job)
            else:
                self._fail(jobs[0])
        warnings = [w for job in done for w in job.warnings]
        if warnings:
            try:
                record_warnings(self.meta, warnings)
            except Exception:  # the events are committed; losing warnings must not fail the requests
                log.exception("could not record %d ingestion warning(s)", len(warnings))
        self.stats.largest_group = max(self.stats.largest_group, len(group))
        for job in done:
            self._resolve(job, None)

    def _write(self, project_id: int, jobs: list[_Job]) -> bool:
        events = [e for job in jobs for e in job.events]
        if not events:  # only warnings to record
            return True
        try:
            result = self.store.write_batch(
                project_id, events, received_at=datetime.now(UTC).replace(tzinfo=None)
            )
        except Exception:
            log.exception("write of %d event(s) for project %d failed", len(events), project_id)
            return False
        self.stats.commits += 1
        self.stats.requests += len(jobs)
        self.stats.events_received += result.received
        self.stats.events_stored += result.accepted
        self.stats.events_deduplicated += result.deduplicated
        return True

    def _fail(self, job: _Job) -> None:
        self.stats.failed_requests += 1
        self._resolve(job, IngestError(503, "write_failed", "the events could not be stored; retry"))

    def _resolve(self, job: _Job, error: IngestError | None) -> None:
        with self._lock:
            self._pending -= len(job.events)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            job.loop.call_soon_threadsafe(_settle, job.future, error)


def _settle(future: asyncio.Future[None], error: IngestError | None) -> None:
    if future.done():  # the client went away and the handler was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
