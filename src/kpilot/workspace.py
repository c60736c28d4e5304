"""A workspace: one directory with the DuckDB event store, plus a metadata database (SQLite or PostgreSQL)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kpilot.config import get_settings
from kpilot.errors import NotFoundError, WorkspaceError
from kpilot.meta.db import MetadataDB
from kpilot.meta.models import Project
from kpilot.store.duckdb_store import EventStore

__all__ = ["WEEK_STARTS", "ProjectInfo", "Workspace"]

WEEK_STARTS = ("monday", "sunday")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_MARKER = "kpilot.workspace"


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    id: int
    name: str
    timezone: str
    week_start: str


class Workspace:
    """Open with :meth:`init` (create) or :meth:`open` (must exist). Use as a context manager.

    ``store``: an event store to use instead of opening ``events.duckdb`` (the CLI passes a
    :class:`kpilot.store.remote.RemoteStore` while ``kpilot serve`` holds the file)."""

    def __init__(
        self,
        home: Path,
        metadata_url: str | None,
        *,
        read_only: bool = False,
        store: EventStore | None = None,
    ) -> None:
        self.home = home
        self.metadata_url = metadata_url or f"sqlite:///{(home / 'metadata.sqlite').resolve()}"
        self.meta = MetadataDB(self.metadata_url)
        self.store = (
            store
            if store is not None
            else EventStore(
                home / "events.duckdb",
                read_only=read_only,
                rollups=get_settings().rollups,
                memory_limit=get_settings().store_memory_limit,
                id_index_mb=get_settings().id_index_mb,
            )
        )

    @classmethod
    def init(cls, home: Path, metadata_url: str | None = None) -> Workspace:
        home.mkdir(parents=True, exist_ok=True)
        marker = home / _MARKER
        if not marker.exists():
            marker.write_text(f"kpilot workspace\nmetadata_url={metadata_url or ''}\n")
        ws = cls(home, metadata_url or _marker_url(home))
        ws.meta.migrate()
        ws.ensure_rollups()
        return ws

    @classmethod
    def open(
        cls,
        home: Path,
        metadata_url: str | None = None,
        *,
        read_only: bool = False,
        store: EventStore | None = None,
    ) -> Workspace:
        if not (home / _MARKER).exists():
            raise WorkspaceError(f"no kpilot workspace at {home} (run `kpilot init --home {home}` first)")
        ws = cls(home, metadata_url or _marker_url(home), read_only=read_only, store=store)
        if not read_only:
            ws.meta.migrate()
            ws.ensure_rollups()
        return ws

    def ensure_rollups(self) -> None:
        """Give every project a rollup in its timezone (built from its events when missing or outdated)."""
        for project in self.projects():
            self.store.ensure_rollups(project.id, project.timezone)

    def close(self) -> None:
        self.store.close()
        self.meta.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.close()

    # ---- projects ----------------------------------------------------------------------------------
    def create_project(self, name: str, timezone: str = "UTC", week_start: str = "monday") -> ProjectInfo:
        if not _NAME.match(name):
            raise WorkspaceError(
                f"project name {name!r} is invalid: use letters, digits, '_', '.', '-' (max 100, starting alphanumeric)"
            )
        validate_timezone(timezone)
        if week_start not in WEEK_STARTS:
            raise WorkspaceError(f"week_start must be one of {', '.join(WEEK_STARTS)}, got {week_start!r}")
        with self.meta.session() as s:
            project = Project(name=name, timezone=timezone, week_start=week_start)
            s.add(project)
            try:
                s.commit()
            except IntegrityError as exc:
                raise WorkspaceError(f"project {name!r} already exists") from exc
            info = _info(project)
        self.store.ensure_rollups(info.id, info.timezone)
        return info

    def projects(self) -> list[ProjectInfo]:
        with self.meta.session() as s:
            return [_info(p) for p in s.scalars(select(Project).order_by(Project.id))]

    def project(self, name: str | None) -> ProjectInfo:
        """The named project, or the only project when ``name`` is None."""
        projects = self.projects()
        if name is None:
            if len(projects) == 1:
                return projects[0]
            if not projects:
                raise NotFoundError("the workspace has no project yet (run `kpilot project create NAME`)")
            names = ", ".join(p.name for p in projects)
            raise WorkspaceError(f"several projects exist ({names}): choose one with --project")
        for p in projects:
            if p.name == name:
                return p
        raise NotFoundError(f"no project named {name!r}")


def validate_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise WorkspaceError(
            f"unknown timezone {name!r}: expected an IANA name such as 'Europe/Paris'"
        ) from exc


def _info(p: Project) -> ProjectInfo:
    return ProjectInfo(p.id, p.name, p.timezone, p.week_start)


def _marker_url(home: Path) -> str | None:
    marker = home / _MARKER
    if not marker.exists():
        return None
    for line in marker.read_text().splitlines():
        if line.startswith("metadata_url="):
            return line.split("=", 1)[1] or None
    return None
