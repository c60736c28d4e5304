"""``kpilot export lake DIR``: the event store as Parquet files any cluster engine reads.

Layout (Hive-style partitions, so Spark, Trino, Athena or DuckDB discover ``project_id`` and ``date``)::

    DIR/manifest.json
    DIR/events/project_id=1/date=2024-03-01/data_0.parquet
    DIR/person_distinct_ids/project_id=1/data_0.parquet
    DIR/person_property_writes/project_id=1/data_0.parquet
    DIR/rollup_projects/project_id=1/data_0.parquet
    DIR/rollup_persons/project_id=1/data_0.parquet
    DIR/rollup_merges/project_id=1/data_0.parquet

``date`` is the UTC calendar date of the event timestamp. Timestamps are written as UTC instants (Parquet
``isAdjustedToUTC=true``), event properties as JSON text. Person properties are exported as the raw writes
(``$set``/``$set_once`` with their timestamps) so a reader resolves them with the same rule as the store.

The three ``rollup_*`` tables are the store's rollups (:mod:`kpilot.store.rollup_store`) copied as they are:
``rollup_persons`` holds ``day`` (local date in the rollup's timezone), ``event`` (NULL: any event) and
``persons``, a roaring bitmap in the portable serialization (``BitMap.serialize()`` of pyroaring, the
``serialize`` of Java's RoaringBitmap), sorted by day and event in small row groups so a reader skips by
the Parquet statistics of ``day``. A key may have several rows (deltas; readers union them), and the merges
of ``rollup_merges`` apply at read time. A project without a rollup has no files there and no ``rollup``
entry in the manifest; the Spark engine can build one from the lake's events
(:meth:`kpilot.engines.spark_engine.SparkEngine.build_rollups`).

Every table of an exported project is replaced as a whole: each file is first written to a staging folder
inside ``DIR`` and then moved into place, so re-running the export gives the same lake (idempotent) and a
partition of a day that lost all its events disappears. All tables are read in one DuckDB transaction, so
they are a consistent snapshot.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from kpilot import __version__
from kpilot.compute.dialect import lit
from kpilot.errors import NotFoundError, WorkspaceError
from kpilot.workspace import ProjectInfo, Workspace

__all__ = [
    "LAKE_FORMAT",
    "LAKE_VERSION",
    "MANIFEST",
    "ROLLUP_TABLES",
    "TABLES",
    "LakeManifest",
    "LakeProject",
    "LakeRollup",
    "export_lake",
]

LAKE_FORMAT = "kpilot-lake"
LAKE_VERSION = 1
MANIFEST = "manifest.json"
_STAGING = ".staging-"

# table -> (SELECT list, partition columns). Partition columns come first and are not stored in the files.
_TABLE_SQL: dict[str, tuple[str, tuple[str, ...]]] = {
    "events": (
        "project_id, CAST(timestamp AS DATE) AS date, uuid, event, distinct_id, "
        "timestamp AT TIME ZONE 'UTC' AS timestamp, CAST(properties AS VARCHAR) AS properties, "
        "received_at AT TIME ZONE 'UTC' AS received_at",
        ("project_id", "date"),
    ),
    "person_distinct_ids": ("project_id, distinct_id, person_id", ("project_id",)),
    "person_property_writes": (
        "project_id, distinct_id, key, value, ts AT TIME ZONE 'UTC' AS ts, set_once",
        ("project_id",),
    ),
    "rollup_projects": ("project_id, timezone, built_at AT TIME ZONE 'UTC' AS built_at", ("project_id",)),
    "rollup_persons": ("project_id, day, event, persons", ("project_id",)),
    "rollup_merges": ("project_id, absorbed, survivor", ("project_id",)),
}
_ORDER = {
    "events": "project_id, timestamp",
    "person_distinct_ids": "project_id, distinct_id",
    "rollup_persons": "project_id, day, event NULLS FIRST",
    "rollup_merges": "project_id, absorbed",
}
# DuckDB's smallest row group: about 40 days of a project with 50 event names, so day filters skip groups
_COPY_OPTIONS = {"rollup_persons": ", ROW_GROUP_SIZE 2048"}
TABLES = tuple(_TABLE_SQL)
ROLLUP_TABLES = ("rollup_projects", "rollup_persons", "rollup_merges")
LAYOUT = {
    "events": "events/project_id=<id>/date=<YYYY-MM-DD, UTC>/*.parquet",
    "person_distinct_ids": "person_distinct_ids/project_id=<id>/*.parquet",
    "person_property_writes": "person_property_writes/project_id=<id>/*.parquet",
    "rollup_projects": "rollup_projects/project_id=<id>/*.parquet",
    "rollup_persons": "rollup_persons/project_id=<id>/*.parquet (sorted by day, event)",
    "rollup_merges": "rollup_merges/project_id=<id>/*.parquet",
}


@dataclass(frozen=True, slots=True)
class LakeRollup:
    """A project's rollup in the lake: its timezone, when it was built and by whom ("store" or "spark")."""

    timezone: str
    built_at: str
    built_by: str

    def to_dict(self) -> dict[str, str]:
        return {"timezone": self.timezone, "built_at": self.built_at, "built_by": self.built_by}


@dataclass(frozen=True, slots=True)
class LakeProject:
    """One exported project: its settings (queries need them) and the rows of each table."""

    id: int
    name: str
    timezone: str
    week_start: str
    exported_at: str
    rows: dict[str, int] = field(default_factory=dict)
    rollup: LakeRollup | None = None
    """The project's rollup in the lake, or None (queries on Spark then read raw events)."""

    def info(self) -> ProjectInfo:
        return ProjectInfo(self.id, self.name, self.timezone, self.week_start)


@dataclass(frozen=True, slots=True)
class LakeManifest:
    """``manifest.json``: what the lake holds. ``exported_at`` is the time of the latest export run."""

    exported_at: str
    projects: list[LakeProject]

    def project(self, name: str | None) -> LakeProject:
        """The named project, or the only one when ``name`` is None (same rule as the workspace)."""
        if name is None:
            if len(self.projects) == 1:
                return self.projects[0]
            if not self.projects:
                raise NotFoundError("the lake holds no project (run `kpilot export lake DIR` first)")
            names = ", ".join(p.name for p in self.projects)
            raise WorkspaceError(f"the lake holds several projects ({names}): choose one with --project")
        for p in self.projects:
            if p.name == name:
                return p
        raise NotFoundError(f"the lake holds no project named {name!r}")

    def by_id(self, project_id: int) -> LakeProject | None:
        return next((p for p in self.projects if p.id == project_id), None)

    def with_project(self, project: LakeProject) -> LakeManifest:
        """This manifest with ``project``'s entry (same id) replaced."""
        return LakeManifest(self.exported_at, [project if p.id == project.id else p for p in self.projects])

    def to_json(self) -> bytes:
        data = {
            "format": LAKE_FORMAT,
            "version": LAKE_VERSION,
            "kpilot_version": __version__,
            "exported_at": self.exported_at,
            "layout": LAYOUT,
            "projects": [
                {
                    "id": p.id,
                    "name": p.name,
                    "timezone": p.timezone,
                    "week_start": p.week_start,
                    "exported_at": p.exported_at,
                    "rows": p.rows,
                    "rollup": None if p.rollup is None else p.rollup.to_dict(),
                }
                for p in sorted(self.projects, key=lambda p: p.id)
            ],
        }
        return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = MANIFEST) -> LakeManifest:
        try:
            data: Any = orjson.loads(text)
            if data.get("format") != LAKE_FORMAT:
                raise WorkspaceError(f"{where} is not a kpilot lake manifest")
            if int(data["version"]) > LAKE_VERSION:
                raise WorkspaceError(
                    f"{where} has lake format version {data['version']}; this kpilot reads up to {LAKE_VERSION}"
                )
            projects = [
                LakeProject(
                    int(p["id"]),
                    str(p["name"]),
                    str(p["timezone"]),
                    str(p["week_start"]),
                    str(p["exported_at"]),
                    {str(k): int(v) for k, v in p["rows"].items()},
                    _rollup(p.get("rollup")),
                )
                for p in data["projects"]
            ]
            return cls(str(data["exported_at"]), projects)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WorkspaceError(f"{where} is not a valid kpilot lake manifest: {exc}") from exc


def _rollup(data: Any) -> LakeRollup | None:
    if data is None:
        return None
    return LakeRollup(str(data["timezone"]), str(data["built_at"]), str(data["built_by"]))


def read_manifest(lake: Path) -> LakeManifest | None:
    """The manifest of a local lake directory, or None when there is none yet."""
    path = lake / MANIFEST
    if not path.is_file():
        return None
    return LakeManifest.from_json(path.read_bytes(), str(path))


def export_lake(ws: Workspace, lake: Path, project: str | None = None) -> LakeManifest:
    """Write every project (or only ``project``) of ``ws`` to ``lake``, replacing what was there for them.

    The store's rollups go along (as they are, deltas and merges included); a project without one gets none.
    """
    existing = _check_target(lake)
    chosen = [ws.project(project)] if project is not None else ws.projects()
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    staging = lake / f"{_STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        rows, rollups = _write_tables(ws, chosen, staging)
        _move_into_place(lake, staging, [p.id for p in chosen], whole=project is None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    exported = {
        p.id: LakeProject(p.id, p.name, p.timezone, p.week_start, now, rows[p.id], rollups.get(p.id))
        for p in chosen
    }
    kept = (
        [] if project is None or existing is None else [p for p in existing.projects if p.id not in exported]
    )
    manifest = LakeManifest(now, sorted([*kept, *exported.values()], key=lambda p: p.id))
    write_manifest(lake, manifest)
    return manifest


def write_manifest(lake: Path, manifest: LakeManifest) -> None:
    """Replace the manifest of a local lake directory atomically."""
    tmp = lake / f"{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_bytes(manifest.to_json())
    os.replace(tmp, lake / MANIFEST)


def utc_text(ts: datetime) -> str:
    """A naive UTC (or aware) datetime as ``YYYY-MM-DDTHH:MM:SSZ``, the manifest's spelling of instants."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts.replace(microsecond=0).isoformat() + "Z"


def _check_target(lake: Path) -> LakeManifest | None:
    if lake.exists() and not lake.is_dir():
        raise WorkspaceError(f"{lake} exists and is not a directory")
    manifest = read_manifest(lake) if lake.is_dir() else None
    if manifest is None and lake.is_dir():
        others = [p.name for p in lake.iterdir() if not p.name.startswith(_STAGING)]
        if others:
            raise WorkspaceError(
                f"{lake} is not empty and has no {MANIFEST}: refusing to overwrite it (choose an empty directory)"
            )
    return manifest


def _write_tables(
    ws: Workspace, projects: Sequence[ProjectInfo], staging: Path
) -> tuple[dict[int, dict[str, int]], dict[int, LakeRollup]]:
    """COPY each table of ``projects`` to ``staging`` in one read transaction.

    Returns the rows per project and table, and the rollup of each project that has one.
    """
    ids = ", ".join(str(p.id) for p in projects) or "NULL"
    rows: dict[int, dict[str, int]] = {p.id: dict.fromkeys(TABLES, 0) for p in projects}
    rollups: dict[int, LakeRollup] = {}
    cur = ws.store.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        present = {
            str(r[0])
            for r in cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        for table, (select, partitions) in _TABLE_SQL.items():
            if table not in present:  # a store older than its rollups, opened read-only: nothing to copy
                continue
            where = f"project_id IN ({ids})"
            for pid, n in cur.execute(
                f"SELECT project_id, count(*) FROM {table} WHERE {where} GROUP BY 1"
            ).fetchall():
                rows[int(pid)][table] = int(n)
            order = f" ORDER BY {_ORDER[table]}" if table in _ORDER else ""
            target = staging / table
            cur.execute(
                f"COPY (SELECT {select} FROM {table} WHERE {where}{order}) TO {lit(str(target))} "
                f"(FORMAT PARQUET, PARTITION_BY ({', '.join(partitions)}), OVERWRITE_OR_IGNORE"
                f"{_COPY_OPTIONS.get(table, '')})"
            )
        if "rollup_projects" in present:
            for pid, tz, built_at in cur.execute(
                f"SELECT project_id, timezone, built_at FROM rollup_projects WHERE project_id IN ({ids})"
            ).fetchall():
                rollups[int(pid)] = LakeRollup(str(tz), utc_text(built_at), "store")
        cur.execute("COMMIT")
    finally:
        cur.close()
    return rows, rollups


def _move_into_place(lake: Path, staging: Path, project_ids: Sequence[int], *, whole: bool) -> None:
    for table in TABLES:
        written = staging / table
        target = lake / table
        if whole:
            if target.exists():
                shutil.rmtree(target)
            if written.is_dir():
                os.replace(written, target)
            else:
                target.mkdir()
            continue
        target.mkdir(exist_ok=True)
        for pid in project_ids:
            part = f"project_id={pid}"
            if (target / part).exists():
                shutil.rmtree(target / part)
            if (written / part).is_dir():
                os.replace(written / part, target / part)
