"""Bulk import of event files: normalise, reject bad rows with file/line/reason, store atomic batches.

Each batch of rows is one store transaction, so an interrupted import leaves only whole batches behind,
and re-running it adds nothing (events are deduplicated on messageId/uuid).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kpilot.collect.normalize import Normalized, RowError, normalize
from kpilot.collect.readers import ParseFailure, detect_format, read_rows
from kpilot.meta.models import ImportRejection, ImportRun
from kpilot.workspace import ProjectInfo, Workspace

__all__ = ["MAX_STORED_REJECTIONS", "ImportReport", "Rejection", "import_events"]

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
) -> ImportReport:
    """Import ``paths`` into ``project``. ``progress(path, bytes_done, bytes_total)`` is called per batch."""
    report = ImportReport()
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        file_format = detect_format(path, fmt)
        report.files.append(str(path))
        _import_file(ws, project, path, file_format, batch_rows, report, progress)
    return report


def _import_file(
    ws: Workspace,
    project: ProjectInfo,
    path: Path,
    fmt: str,
    batch_rows: int,
    report: ImportReport,
    progress: Callable[[Path, int, int], None] | None,
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
