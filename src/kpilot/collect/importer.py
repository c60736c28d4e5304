"""Bulk import of event files: normalise, reject bad rows with file/line/reason, store atomic batches.

Each batch of rows is one store transaction, so an interrupted import leaves only whole batches behind,
and re-running it adds nothing (events are deduplicated on messageId/uuid).

Rows are normalised in two ways with the same result: the columnar fast path
(:mod:`kpilot.collect.columnar`) takes whole chunks of simple rows at once, and every other row goes through
:func:`kpilot.collect.normalize.normalize` one by one. Both feed the same batches, in file order.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kpilot.collect.normalize import Normalized, RowError, normalize
from kpilot.collect.readers import ParseFailure, detect_format, read_rows
from kpilot.meta.models import ImportRejection, ImportRun
from kpilot.workspace import ProjectInfo, Workspace

__all__ = [
    "COLUMNAR_ENV",
    "MAX_STORED_REJECTIONS",
    "UPKEEP_ENV",
    "ImportReport",
    "Rejection",
    "import_events",
]

COLUMNAR_ENV = "KPILOT_IMPORT_COLUMNAR"
"""Set to 0 to normalise every row one by one (the columnar fast path is on otherwise)."""

UPKEEP_ENV = "KPILOT_IMPORT_UPKEEP"
"""``auto`` (default): build the rollup and sessions once at the end when the import is at least as large as
the project, else keep them current batch by batch; ``incremental`` or ``rebuild`` force one way."""
UPKEEP_CHOICES = ("auto", "incremental", "deferred", "rebuild")

MAX_STORED_REJECTIONS = 10_000
"""Per run, at most this many rejected rows are kept with their reason (all are counted)."""

ProgressFn = Callable[[int], None]


@dataclass(slots=True)
class Rejection:
    file: str
    line: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    imported: int = 0
    deduplicated: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "rows_read": self.rows_read,
            "imported": self.imported,
            "deduplicated": self.deduplicated,
            "rejected": self.rejected,
            "rejections": [{"file": r.file, "line": r.line, "reason": r.reason} for r in self.rejections],
        }


def import_events(
    ws: Workspace,
    project: ProjectInfo,
    paths: Sequence[Path],
    *,
    fmt: str | None = None,
    batch_rows: int = 200_000,
    progress: Callable[[Path, int, int], None] | None = None,
    columnar: bool | None = None,
) -> ImportReport:
    """Import ``paths`` into ``project``. ``progress(path, bytes_done, bytes_total)`` is called per batch.

    ``columnar`` chooses the columnar fast path for simple rows (default: on unless ``KPILOT_IMPORT_COLUMNAR``
    is 0); the stored events, persons, rejections and counts are the same either way. It needs the event
    store itself (not a server's), otherwise every row is normalised one by one.
    """
    if columnar is None:
        columnar = os.environ.get(COLUMNAR_ENV, "1").strip() not in ("0", "false", "no", "off")
    from kpilot.store.duckdb_store import EventStore

    columnar = columnar and isinstance(ws.store, EventStore)
    report = ImportReport()
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    formats = [detect_format(path, fmt) for path in paths]
    with _upkeep(ws, project, paths, formats):
        for path, file_format in zip(paths, formats, strict=True):
            report.files.append(str(path))
            _import_file(ws, project, path, file_format, batch_rows, report, progress, columnar)
    return report


BYTES_PER_TEXT_ROW = 250
"""For the upkeep choice, a JSONL or CSV file is taken to hold one row per this many bytes."""


@contextmanager
def _upkeep(ws: Workspace, project: ProjectInfo, paths: Sequence[Path], formats: list[str]) -> Iterator[None]:
    """Choose how the import keeps the project's rollup and sessions (``KPILOT_IMPORT_UPKEEP``; ``auto`` by
    size): an import at least as large as what the project holds defers both to one build at the end
    (``rebuild``, :meth:`~kpilot.store.duckdb_store.EventStore.bulk_upkeep`); a smaller one keeps the
    rollup batch by batch and catches the sessions up in one pass at the end (``deferred``,
    :meth:`~kpilot.store.duckdb_store.EventStore.deferred_sessions`); ``incremental`` keeps both batch by
    batch."""
    from kpilot.store.duckdb_store import EventStore

    choice = os.environ.get(UPKEEP_ENV, "auto").strip().lower() or "auto"
    if choice not in UPKEEP_CHOICES:
        raise ValueError(f"{UPKEEP_ENV} must be one of {', '.join(UPKEEP_CHOICES)}, got {choice!r}")
    store = ws.store
    if not isinstance(store, EventStore) or choice == "incremental":
        yield
        return
    if choice == "auto":
        incoming = sum(_estimated_rows(p, f) for p, f in zip(paths, formats, strict=True))
        stored = int(store.fetchall("SELECT count(*) FROM events WHERE project_id = ?", [project.id])[0][0])
        choice = "deferred" if incoming < max(stored, 1) else "rebuild"
    if choice == "deferred":
        with store.deferred_sessions(project.id):
            yield
        return
    with store.bulk_upkeep(project.id):
        yield


def _estimated_rows(path: Path, fmt: str) -> int:
    """Rows in ``path``: exact for Parquet (its footer), estimated from the size for text formats."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, pa.ArrowException):
            pass  # not readable as Parquet: the import itself reports why
    ratio = 8 if path.suffix.lower() == ".gz" else 1  # a typical compression ratio of JSON text
    return path.stat().st_size * ratio // BYTES_PER_TEXT_ROW


def _import_file(
    ws: Workspace,
    project: ProjectInfo,
    path: Path,
    fmt: str,
    batch_rows: int,
    report: ImportReport,
    progress: Callable[[Path, int, int], None] | None,
    columnar: bool = False,
) -> None:
    total = path.stat().st_size
    with ws.meta.session() as s:
        run = ImportRun(project_id=project.id, kind="events", file=str(path))
        s.add(run)
        s.commit()
        run_id = run.id
    batch: list[Normalized] = []
    pending_rejections: list[ImportRejection] = []
    stats = {"read": 0, "imported": 0, "dedup": 0, "rejected": 0}
    status = "failed"
    if columnar:
        try:
            _import_columnar(ws, project, path, fmt, batch_rows, report, progress, run_id, stats)
            status = "done"
        finally:
            _finish_run(ws, run_id, report, stats, status)
        return

    def flush(done: int) -> None:
        if batch:
            result = ws.store.write_batch(project.id, batch)
            stats["imported"] += result.accepted
            stats["dedup"] += result.deduplicated
            batch.clear()
        if pending_rejections:
            with ws.meta.session() as s:
                s.add_all(pending_rejections)
                s.commit()
            pending_rejections.clear()
        if progress is not None:
            progress(path, done, total)

    consumed = 0
    try:
        for line, row, consumed in read_rows(path, fmt):
            stats["read"] += 1
            try:
                if isinstance(row, ParseFailure):
                    raise RowError(row.reason)
                batch.append(normalize(row))
            except RowError as exc:
                stats["rejected"] += 1
                rej = Rejection(str(path), line, str(exc))
                if len(report.rejections) < MAX_STORED_REJECTIONS:
                    report.rejections.append(rej)
                    pending_rejections.append(_rejection_row(run_id, project.id, rej, row))
            if len(batch) >= batch_rows:
                flush(consumed)
        flush(total)
        status = "done"
    finally:
        _finish_run(ws, run_id, report, stats, status)


def _finish_run(ws: Workspace, run_id: int, report: ImportReport, stats: dict[str, int], status: str) -> None:
    report.rows_read += stats["read"]
    report.imported += stats["imported"]
    report.deduplicated += stats["dedup"]
    report.rejected += stats["rejected"]
    with ws.meta.session() as s:
        run_row = s.get(ImportRun, run_id)
        if run_row is not None:
            run_row.status = status if status == "done" else "interrupted"
            run_row.finished_at = datetime.now(UTC).replace(tzinfo=None)
            run_row.rows_read = stats["read"]
            run_row.rows_imported = stats["imported"]
            run_row.rows_deduplicated = stats["dedup"]
            run_row.rows_rejected = stats["rejected"]
            s.commit()


# ---- the columnar path --------------------------------------------------------------------------------------
_EVENT_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("properties", pa.string()),
    ]
)
PropRow = tuple[str, str, str | None, datetime, bool]


class _Batches:
    """Accepted rows in file order, cut into store batches of exactly ``batch_rows`` rows (as the per-row path
    cuts them), each written with the merges and person properties of its rows in one ``write_arrow``.

    Rows are numbered by their place among the file's accepted rows; a rejection is stored with the batch
    written right after it, as the per-row path does.
    """

    def __init__(
        self,
        ws: Workspace,
        project: ProjectInfo,
        path: Path,
        batch_rows: int,
        report: ImportReport,
        run_id: int,
        stats: dict[str, int],
        progress: Callable[[Path, int, int], None] | None,
    ) -> None:
        self.ws, self.project, self.path = ws, project, path
        self.size = max(batch_rows, 1)
        self.report, self.run_id, self.stats, self.progress = report, run_id, stats, progress
        self.tables: list[pa.Table] = []
        self.pending = 0  # accepted rows not yet written
        self.written = 0  # accepted rows written (the number of the first pending row)
        self.merges: list[tuple[int, tuple[str, str]]] = []
        self.props: list[tuple[int, PropRow]] = []
        self.rejections: list[tuple[int, ImportRejection]] = []

    def reject(self, accepted_before: int, line: int, reason: str, row: object) -> None:
        self.stats["rejected"] += 1
        rej = Rejection(str(self.path), line, reason)
        if len(self.report.rejections) < MAX_STORED_REJECTIONS:
            self.report.rejections.append(rej)
            self.rejections.append((accepted_before, _rejection_row(self.run_id, self.project.id, rej, row)))

    def add(self, table: pa.Table, side: list[tuple[int, Normalized]]) -> None:
        """Append accepted rows (``side``: the per-row events among them, by their number)."""
        from kpilot.store.duckdb_store import _prop_text

        for seq, e in side:
            self.merges.extend((seq, m) for m in e.merges)
            for key, value in e.set_props.items():
                self.props.append((seq, (e.distinct_id, str(key), _prop_text(value), e.timestamp, False)))
            for key, value in e.set_once_props.items():
                self.props.append((seq, (e.distinct_id, str(key), _prop_text(value), e.timestamp, True)))
        if table.num_rows:
            self.tables.append(table)
            self.pending += table.num_rows

    @property
    def accepted(self) -> int:
        return self.written + self.pending

    def write_full(self, done: int) -> None:
        while self.pending >= self.size:
            self._write(self.size, done, last=False)

    def finish(self, total: int) -> None:
        self._write(self.pending, total, last=True)

    def _write(self, count: int, done: int, *, last: bool) -> None:
        end = self.written + count
        if count:
            table = pa.concat_tables(self.tables) if len(self.tables) > 1 else self.tables[0]
            batch, rest = table.slice(0, count), table.slice(count)
            self.tables = [rest] if rest.num_rows else []
            now = datetime.now(UTC).replace(tzinfo=None)
            batch = batch.append_column(
                "received_at", pa.array(np.full(count, np.datetime64(now, "us")), pa.timestamp("us"))
            )
            merges = [m for seq, m in self.merges if seq < end]
            props = [p for seq, p in self.props if seq < end]
            result = self.ws.store.write_arrow(self.project.id, batch, merges, props)
            self.stats["imported"] += result.accepted
            self.stats["dedup"] += result.deduplicated
            self.merges = [x for x in self.merges if x[0] >= end]
            self.props = [x for x in self.props if x[0] >= end]
            self.pending -= count
            self.written = end
        stored = [r for before, r in self.rejections if last or before < end]
        if stored:
            with self.ws.meta.session() as s:
                s.add_all(stored)
                s.commit()
            self.rejections = [x for x in self.rejections if not (last or x[0] < end)]
        if self.progress is not None:
            self.progress(self.path, done, self.path.stat().st_size)


@dataclass(slots=True)
class _Prepared:
    """One chunk, normalised: its accepted rows in file order, and its rejections."""

    rows_read: int
    table: pa.Table
    side: list[tuple[int, Normalized]]
    """The per-row events among the accepted rows, by their place in ``table``."""
    failures: list[tuple[int, int, str, Any]]
    """(accepted rows before it in the chunk, line, reason, row) of each rejected row."""
    done_bytes: int


def _prepare(chunk: Any) -> _Prepared:
    from kpilot.collect import columnar

    plan = columnar.plan_chunk(chunk)
    fast_rows = np.flatnonzero(plan.fast)
    slow_rows = np.flatnonzero(~plan.fast)
    events: list[tuple[int, Normalized]] = []
    rejected: list[tuple[int, str, Any]] = []
    for pos, row in zip(slow_rows.tolist(), chunk.slow_rows(slow_rows), strict=True):
        try:
            if isinstance(row, ParseFailure):
                raise RowError(row.reason)
            events.append((pos, normalize(row)))
        except RowError as exc:
            rejected.append((pos, str(exc), row))
    # Accepted rows in file order: the fast rows' table and the per-row events interleaved by position.
    accepted = np.concatenate([fast_rows, np.array([p for p, _ in events], np.int64)])
    order = np.argsort(accepted, kind="stable")
    ordered = accepted[order]
    failures = [
        (int(np.searchsorted(ordered, pos)), int(chunk.lines[pos]), reason, row)
        for pos, reason, row in rejected
    ]
    slow_table = pa.Table.from_pydict(
        {
            "uuid": [e.uuid for _, e in events],
            "event": [e.event for _, e in events],
            "distinct_id": [e.distinct_id for _, e in events],
            "timestamp": [e.timestamp for _, e in events],
            "properties": [e.properties_json() for _, e in events],
        },
        schema=_EVENT_SCHEMA,
    )
    table = pa.concat_tables([plan.table.cast(_EVENT_SCHEMA), slow_table])
    if len(events) and len(fast_rows):
        table = table.take(pa.array(order))
    rank = np.empty(len(accepted), np.int64)
    rank[order] = np.arange(len(accepted))
    side = [(int(rank[len(fast_rows) + i]), e) for i, (_, e) in enumerate(events)]
    return _Prepared(chunk.n, table, side, failures, chunk.done_bytes)


_END = object()


def _prepared_chunks(path: Path, fmt: str) -> Iterator[_Prepared]:
    """Read and normalise the file's chunks in a thread of their own, a chunk or two ahead of the caller
    (who writes batches meanwhile: DuckDB, Arrow and numpy release the GIL for most of the work)."""
    from kpilot.collect import columnar

    ahead: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in columnar.read_chunks(path, fmt):
                if chunk.n and not put(_prepare(chunk)):
                    return
            put(_END)
        except BaseException as exc:  # handed to the caller, who raises it after the chunks before it
            put(exc)

    worker = threading.Thread(target=produce, name="kpilot-import-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = ahead.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _import_columnar(
    ws: Workspace,
    project: ProjectInfo,
    path: Path,
    fmt: str,
    batch_rows: int,
    report: ImportReport,
    progress: Callable[[Path, int, int], None] | None,
    run_id: int,
    stats: dict[str, int],
) -> None:
    total = path.stat().st_size
    out = _Batches(ws, project, path, batch_rows, report, run_id, stats, progress)
    for prepared in _prepared_chunks(path, fmt):
        stats["read"] += prepared.rows_read
        base = out.accepted
        for before, line, reason, row in prepared.failures:
            out.reject(base + before, line, reason, row)
        out.add(prepared.table, [(base + rank, e) for rank, e in prepared.side])
        out.write_full(prepared.done_bytes)
    out.finish(total)


def _rejection_row(run_id: int, project_id: int, rej: Rejection, row: object) -> ImportRejection:
    event: str | None = None
    day: str | None = None
    if isinstance(row, dict):
        name = row.get("event") or row.get("type")
        event = str(name)[:400] if name else None
        ts = row.get("timestamp")
        if isinstance(ts, str) and len(ts) >= 10:
            day = ts[:10]
    return ImportRejection(
        run_id=run_id,
        project_id=project_id,
        file=rej.file,
        line=rej.line,
        reason=rej.reason,
        event=event,
        day=day,
    )
