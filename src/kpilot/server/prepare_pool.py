"""Normalising logged requests in a separate process, so the server's own interpreter keeps serving.

Turning request messages into canonical event rows (:func:`kpilot.server.ingest.prepare`, then
:func:`kpilot.store.duckdb_store.canonical_batch`) is pure Python and costs several microseconds per event. In
the server process it would compete for the interpreter lock with the request handlers and the store writes;
in a worker process it runs on another core while the applier stores the previous group.

:class:`PreparePool` wraps one spawned worker process (``ingest_prepare_workers = 0`` in the settings
prepares in-process instead, the same code). The worker gets the log payloads of a group and returns one
:class:`PreparedRecord` per record: its canonical events as an Arrow table, merges, person property rows and
warnings, so a record can still be stored or set aside on its own. If the worker dies, the group is prepared
in-process and a new worker is started for the next one.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa

from kpilot.keys import KeyOwner, WarningRow
from kpilot.server.ingest import prepare
from kpilot.store.duckdb_store import PropRow, canonical_batch

__all__ = ["PreparePool", "PreparedRecord", "prepare_payloads"]

log = logging.getLogger("kpilot.server")


@dataclass(slots=True)
class PreparedRecord:
    """One logged request, ready for :meth:`EventStore.write_arrow`."""

    position: int
    project_id: int
    table: pa.Table
    merges: list[tuple[str, str]]
    prop_rows: list[PropRow]
    warnings: list[WarningRow]
    payload: bytes

    @property
    def events(self) -> int:
        return int(self.table.num_rows)


def prepare_payloads(items: Sequence[tuple[int, bytes]], future_tolerance_s: float) -> list[PreparedRecord]:
    """Decode and normalise log records ``(position, payload)``; runs in the worker or in-process."""
    from kpilot.server.writer import LogRecord  # the worker imports this module first

    tolerance = timedelta(seconds=future_tolerance_s)
    out: list[PreparedRecord] = []
    for position, payload in items:
        record = LogRecord.decode(payload)
        prepared = prepare(
            record.messages,
            source=record.source,
            owner=KeyOwner(key_id=record.key_id, project_id=record.project_id),
            received_at=record.received_at,
            max_event_bytes=0,
            future_tolerance=tolerance,
            defaults=record.defaults,
            check_sizes=False,
        )
        table, merges, prop_rows = canonical_batch(
            prepared.events, [record.received_at] * len(prepared.events)
        )
        out.append(
            PreparedRecord(position, record.project_id, table, merges, prop_rows, prepared.warnings, payload)
        )
    return out


def _warm() -> None:
    """Run in a new worker so the first real group does not pay for the imports."""


def _follow_server(server_pid: int) -> None:
    """Worker initializer: exit when the server process is gone (a SIGKILLed server cannot stop its pool)."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # the pid was reused by another user's process: ours is gone
                os._exit(0)

    threading.Thread(target=watch, name="kpilot-follow-server", daemon=True).start()


class PreparePool:
    def __init__(self, workers: int, future_tolerance: timedelta) -> None:
        self.workers = workers
        self.tolerance_s = future_tolerance.total_seconds()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Not a plain fork: the server process holds threads and an open DuckDB database. The fork
            # server is a clean process, started once with this module imported, that forks workers quickly.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_follow_server, initargs=(os.getpid(),)
            )
            self._pool.submit(_warm)
        return self._pool

    def submit(self, items: list[tuple[int, bytes]]) -> Future[list[PreparedRecord]]:
        """Start preparing ``items``; the future's result is the prepared records in the same order."""
        if self.workers <= 0:
            done: Future[list[PreparedRecord]] = Future()
            try:
                done.set_result(prepare_payloads(items, self.tolerance_s))
            except Exception as exc:
                done.set_exception(exc)
            return done
        try:
            return self._executor().submit(prepare_payloads, items, self.tolerance_s)
        except (BrokenProcessPool, RuntimeError):
            self._restart()
            return self._executor().submit(prepare_payloads, items, self.tolerance_s)

    def result(
        self, future: Future[list[PreparedRecord]], items: list[tuple[int, bytes]]
    ) -> list[PreparedRecord]:
        """The prepared records; prepared in-process when the worker failed."""
        try:
            return future.result()
        except BrokenProcessPool:
            log.error("the prepare worker died; preparing %d record(s) in the server process", len(items))
            self._restart()
            return prepare_payloads(items, self.tolerance_s)

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
