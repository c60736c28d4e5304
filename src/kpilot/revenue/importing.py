"""Importing business data files (billing, spend, surveys, support, feedback) into the DuckDB tables.

One import = one file = one transaction: every good row of the file is stored, or (on a crash) none.
Rows that cannot be read are rejected with file, line and reason and the rest is imported. Rows are
upserted on the table's natural key (:data:`kpilot.revenue.schema.NATURAL_KEYS`): a key seen twice in one
file keeps its last row, and a key already stored is replaced, so importing the same file again changes
nothing. Customers are merged instead of replaced: a later file that leaves a customer field empty keeps
the stored value.

A source is a parser from one input row to rows of one or more tables (:class:`Source`); the parsers live
in :mod:`kpilot.revenue.sources` and :mod:`kpilot.voice.sources` and are registered in :data:`SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from kpilot.collect.importer import MAX_STORED_REJECTIONS, ImportReport, Rejection
from kpilot.collect.readers import ParseFailure, detect_format, read_rows
from kpilot.errors import KpilotError
from kpilot.meta.models import ImportRejection, ImportRun
from kpilot.revenue.fields import FieldError
from kpilot.revenue.schema import NATURAL_KEYS, ensure_schema
from kpilot.workspace import ProjectInfo, Workspace

__all__ = ["SOURCES", "Source", "TableRows", "import_source", "register_source", "write_rows"]

TableRows = dict[str, list[dict[str, Any]]]
"""Rows per table name (each row a dict of column -> Python value, without ``project_id``)."""

MERGED_TABLES = ("customers",)
"""Tables whose upsert keeps stored values where the new row has none."""


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    table: str
    parse: Callable[[dict[str, Any]], TableRows]
    description: str


SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> None:
    SOURCES[source.name] = source


def _load_sources() -> None:
    # The parsers register themselves on import.
    import kpilot.revenue.sources
    import kpilot.voice.sources  # noqa: F401


def import_source(
    ws: Workspace,
    project: ProjectInfo,
    source: str,
    paths: Sequence[Path],
    *,
    fmt: str | None = None,
) -> ImportReport:
    """Import ``paths`` of ``source`` (e.g. ``"subscriptions"``); ``imported`` counts new or changed rows
    of the source's main table and ``deduplicated`` the rows that were already stored unchanged."""
    _load_sources()
    if source not in SOURCES:
        raise KpilotError(f"unknown source {source!r}; expected one of {', '.join(sorted(SOURCES))}")
    src = SOURCES[source]
    ensure_schema(ws.store)
    report = ImportReport()
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        file_format = detect_format(path, fmt)
        report.files.append(str(path))
        _import_file(ws, project, src, path, file_format, report)
    return report


def _import_file(
    ws: Workspace, project: ProjectInfo, src: Source, path: Path, fmt: str, report: ImportReport
) -> None:
    with ws.meta.session() as s:
        run = ImportRun(project_id=project.id, kind=src.name, file=str(path))
        s.add(run)
        s.commit()
        run_id = run.id
    tables: TableRows = {}
    rejections: list[ImportRejection] = []
    read = rejected = 0
    status = "interrupted"
    changed = unchanged = 0
    try:
        for line, row, _ in read_rows(path, fmt):
            read += 1
            try:
                if isinstance(row, ParseFailure):
                    raise FieldError(row.reason)
                parsed = src.parse(row)
            except (FieldError, ValueError) as exc:
                rejected += 1
                rej = Rejection(str(path), line, str(exc))
                if len(report.rejections) < MAX_STORED_REJECTIONS:
                    report.rejections.append(rej)
                    rejections.append(
                        ImportRejection(
                            run_id=run_id, project_id=project.id, file=rej.file, line=line, reason=rej.reason
                        )
                    )
                continue
            for table, rows in parsed.items():
                for r in rows:
                    r["_ord"] = read
                tables.setdefault(table, []).extend(rows)
        counts = write_rows(ws, project.id, tables)
        changed, unchanged = counts.get(src.table, (0, 0))
        status = "done"
    finally:
        report.rows_read += read
        report.imported += changed
        report.deduplicated += unchanged
        report.rejected += rejected
        with ws.meta.session() as s:
            s.add_all(rejections)
            run_row = s.get(ImportRun, run_id)
            if run_row is not None:
                run_row.status = status
                run_row.finished_at = datetime.now(UTC).replace(tzinfo=None)
                run_row.rows_read = read
                run_row.rows_imported = changed
                run_row.rows_deduplicated = unchanged
                run_row.rows_rejected = rejected
            s.commit()


def write_rows(ws: Workspace, project_id: int, tables: TableRows) -> dict[str, tuple[int, int]]:
    """Upsert rows into several tables in one transaction; per table ``(new_or_changed, unchanged)``."""
    ensure_schema(ws.store)
    out: dict[str, tuple[int, int]] = {}
    with ws.store._transaction() as cur:
        for table, rows in tables.items():
            if not rows:
                out[table] = (0, 0)
                continue
            out[table] = _upsert(cur, project_id, table, rows)
    return out


def _upsert(cur: Any, project_id: int, table: str, rows: list[dict[str, Any]]) -> tuple[int, int]:
    keys = NATURAL_KEYS[table]
    columns = [str(r[1]) for r in cur.execute(f"PRAGMA table_info('{table}')").fetchall()]
    data_cols = [c for c in columns if c != "project_id"]
    for i, r in enumerate(rows):
        r.setdefault("_ord", i)
    arrow = pa.Table.from_pylist([{c: r.get(c) for c in [*data_cols, "_ord"]} for r in rows])
    cur.register("rows_in", arrow)
    part = ", ".join(keys)
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE staged AS SELECT * FROM {table} LIMIT 0; "
        f"ALTER TABLE staged ADD COLUMN _ord BIGINT;"
    )
    cur.execute(f"INSERT INTO staged BY NAME SELECT {project_id} AS project_id, * FROM rows_in")
    cur.unregister("rows_in")
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE staged AS SELECT * EXCLUDE (_ord) FROM staged "
        f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY _ord DESC) = 1"
    )
    on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    existing = f"(SELECT * FROM {table} WHERE project_id = {project_id})"
    if table in MERGED_TABLES:
        merged = ", ".join(
            f"s.{c}" if c in keys or c == "project_id" else f"coalesce(s.{c}, t.{c}) AS {c}" for c in columns
        )
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE staged AS SELECT {merged} FROM staged s LEFT JOIN {existing} t ON {on}"
        )
    same = " AND ".join(f"t.{c} IS NOT DISTINCT FROM s.{c}" for c in columns)
    unchanged = cur.execute(
        f"SELECT count(*) FROM staged s WHERE EXISTS (SELECT 1 FROM {existing} t WHERE {same})"
    ).fetchone()[0]
    total = cur.execute("SELECT count(*) FROM staged").fetchone()[0]
    cur.execute(
        f"DELETE FROM {table} t WHERE t.project_id = {project_id} AND EXISTS (SELECT 1 FROM staged s WHERE {on})"
    )
    cur.execute(f"INSERT INTO {table} BY NAME SELECT * FROM staged")
    cur.execute("DROP TABLE staged")
    return int(total) - int(unchanged), int(unchanged)
