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

import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa

from kpilot.collect.normalize import Normalized
from kpilot.keys import KeyOwner, WarningRow
from kpilot.server.ingest import prepare
from kpilot.store.duckdb_store import PropRow, canonical_batch, identity_rows

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
    """Decode and normalise log records ``(position, payload)``, in-process."""
    return _assemble(items, _prepare_group([payload for _, payload in items], future_tolerance_s))


_Group = tuple[
    pa.Table, list[int], list[int], list[list[tuple[str, str]]], list[list[PropRow]], list[list[WarningRow]]
]
"""What the worker sends back for a group: one event table for all records, and per record its number of
events, project, merges, person property rows and warnings (one table pickles far smaller than many)."""


def _prepare_group(payloads: Sequence[bytes], future_tolerance_s: float) -> _Group:
    from kpilot.server.writer import LogRecord  # the worker imports this module first

    tolerance = timedelta(seconds=future_tolerance_s)
    events: list[Normalized] = []
    received: list[datetime] = []
    counts: list[int] = []
    projects: list[int] = []
    merges: list[list[tuple[str, str]]] = []
    props: list[list[PropRow]] = []
    warnings: list[list[WarningRow]] = []
    for payload in payloads:
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
        record_merges, record_props = identity_rows(prepared.events)
        events.extend(prepared.events)
        received.extend([record.received_at] * len(prepared.events))
        counts.append(len(prepared.events))
        projects.append(record.project_id)
        merges.append(record_merges)
        props.append(record_props)
        warnings.append(prepared.warnings)
    table = canonical_batch(events, received)[0]
    return table, counts, projects, merges, props, warnings


def _assemble(items: Sequence[tuple[int, bytes]], group: _Group) -> list[PreparedRecord]:
    table, counts, projects, merges, props, warnings = group
    out: list[PreparedRecord] = []
    offset = 0
    for i, (position, payload) in enumerate(items):
        out.append(
            PreparedRecord(
                position,
                projects[i],
                table.slice(offset, counts[i]),
                merges[i],
                props[i],
                warnings[i],
                payload,
            )
        )
        offset += counts[i]
    return out


def _warm() -> None:
    """Run in a new worker so the first real group does not pay for the imports."""


def _follow_server(server_pid: int) -> None:
    """Worker initializer: exit when the server process is gone (a SIGKILLed server cannot stop its pool),
    and collect cyclic garbage rarely. A group is tens of thousands of parsed, acyclic JSON objects; with
    the default thresholds the collector walks them again and again (parsing alone took 5x longer)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

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

    def submit(self, items: list[tuple[int, bytes]]) -> Future[_Group]:
        """Start preparing ``items`` (position, payload); :meth:`result` gives the prepared records."""
        payloads = [payload for _, payload in items]
        if self.workers <= 0:
            done: Future[_Group] = Future()
            try:
                done.set_result(_prepare_group(payloads, self.tolerance_s))
            except Exception as exc:
                done.set_exception(exc)
            return done
        try:
            return self._executor().submit(_prepare_group, payloads, self.tolerance_s)
        except (BrokenProcessPool, RuntimeError):
            self._restart()
            return self._executor().submit(_prepare_group, payloads, self.tolerance_s)

    def result(self, future: Future[_Group], items: list[tuple[int, bytes]]) -> list[PreparedRecord]:
        """The prepared records, in the order of ``items``; prepared in-process when the worker failed."""
        try:
            return _assemble(items, future.result())
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
