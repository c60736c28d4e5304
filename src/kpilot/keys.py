"""Project keys (write keys for ingestion, secret keys for the REST API) and the ingestion warnings log;
both live in the metadata database.

Two kinds of key, both belonging to exactly one project:

* a **write key** (``kp_`` + 32 random URL-safe characters, 192 bits) is public: tracking clients embed it
  in web pages and apps, and it can only send events. The server derives the target project from the key
  alone, so a key of one project can never write into another.
* a **secret key** (``kpsk_`` + 43 random URL-safe characters, 256 bits) is for server-to-server calls of
  the REST API (imports of billing and other business data); it must stay on servers. A secret key is not
  a write key: the ingestion endpoints refuse it, so it is never tempting to ship it to a browser.

Only the SHA-256 of a key is stored: the key is high-entropy, so a plain hash cannot be reversed by guessing,
and the clear text is shown once, at creation.

These functions need only the metadata database, never the event store: the CLI can manage keys and read
warnings while ``kpilot serve`` holds the DuckDB file.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import delete, func, select

from kpilot.errors import NotFoundError, WorkspaceError
from kpilot.meta.db import MetadataDB
from kpilot.meta.models import ApiKey, IngestionWarning, Project, utcnow

__all__ = [
    "KEY_PREFIX",
    "SECRET_KEY_PREFIX",
    "KeyInfo",
    "KeyKind",
    "KeyOwner",
    "NewKey",
    "WarningInfo",
    "WarningRow",
    "create_key",
    "hash_key",
    "list_keys",
    "list_warnings",
    "open_metadata",
    "project_by_name",
    "record_warnings",
    "resolve_key",
    "revoke_key",
]

KEY_PREFIX = "kp_"
"""Start of a write key."""
SECRET_KEY_PREFIX = "kpsk_"
"""Start of a secret key."""
_SHOWN_RANDOM = 7
"""How many random characters after the kind's prefix are kept in clear to recognise a key in listings."""


class KeyKind(StrEnum):
    WRITE = "write"
    """Public: sends events to the ingestion endpoints, nothing else."""
    SECRET = "secret"
    """Server-to-server: calls the REST API (imports); never accepted for ingestion."""


_PREFIXES = {KeyKind.WRITE: KEY_PREFIX, KeyKind.SECRET: SECRET_KEY_PREFIX}
_RANDOM_BYTES = {KeyKind.WRITE: 24, KeyKind.SECRET: 32}
MAX_WARNINGS_PER_PROJECT = 100_000
"""The warnings log keeps at most this many rows per project; older ones are pruned."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    project: str
    prefix: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    kind: KeyKind = KeyKind.WRITE

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "project": self.project,
            "kind": self.kind.value,
            "prefix": self.prefix,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True, slots=True)
class NewKey:
    info: KeyInfo
    key: str
    """The clear-text key; it is not stored and cannot be shown again."""


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """What the server learns from a valid key."""

    key_id: int
    project_id: int
    kind: KeyKind = KeyKind.WRITE


@dataclass(frozen=True, slots=True)
class WarningRow:
    """One warning to record (built by the server, written by the writer thread)."""

    project_id: int
    key_id: int | None
    source: str
    kind: str
    reason: str
    event: str | None = None
    excerpt: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WarningInfo:
    id: int
    created_at: datetime
    project: str
    key_prefix: str | None
    source: str
    kind: str
    reason: str
    event: str | None
    excerpt: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "project": self.project,
            "key_prefix": self.key_prefix,
            "source": self.source,
            "kind": self.kind,
            "reason": self.reason,
            "event": self.event,
            "excerpt": self.excerpt,
        }


def open_metadata(home: Path, metadata_url: str | None) -> MetadataDB:
    """Open (and migrate) the workspace's metadata database without touching the event store."""
    from kpilot.workspace import _MARKER, _marker_url

    if not (home / _MARKER).exists():
        raise WorkspaceError(f"no kpilot workspace at {home} (run `kpilot init --home {home}` first)")
    url = metadata_url or _marker_url(home) or f"sqlite:///{(home / 'metadata.sqlite').resolve()}"
    meta = MetadataDB(url)
    meta.migrate()
    return meta


def project_by_name(meta: MetadataDB, name: str | None) -> Project:
    """The named project, or the only one when ``name`` is None (same rule as the rest of the CLI)."""
    with meta.session() as s:
        projects = list(s.scalars(select(Project).order_by(Project.id)))
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


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(meta: MetadataDB, project: Project, name: str = "", kind: KeyKind = KeyKind.WRITE) -> NewKey:
    kind = KeyKind(kind)
    start = _PREFIXES[kind]
    key = start + secrets.token_urlsafe(_RANDOM_BYTES[kind])
    row = ApiKey(
        project_id=project.id,
        kind=kind.value,
        key_hash=hash_key(key),
        prefix=key[: len(start) + _SHOWN_RANDOM],
        name=name,
    )
    with meta.session() as s:
        s.add(row)
        s.commit()
        return NewKey(_key_info(row, project.name), key)


def list_keys(meta: MetadataDB, project: Project | None = None) -> list[KeyInfo]:
    with meta.session() as s:
        query = select(ApiKey, Project.name).join(Project, Project.id == ApiKey.project_id)
        if project is not None:
            query = query.where(ApiKey.project_id == project.id)
        return [_key_info(k, pname) for k, pname in s.execute(query.order_by(ApiKey.id))]


def revoke_key(meta: MetadataDB, project: Project, ref: str) -> KeyInfo:
    """Revoke the project's key whose id, prefix or full text is ``ref``; revoking twice is harmless."""
    with meta.session() as s:
        keys = list(s.scalars(select(ApiKey).where(ApiKey.project_id == project.id)))
        matches = [
            k
            for k in keys
            if ref in (str(k.id), k.prefix)
            or (ref.startswith(tuple(_PREFIXES.values())) and hash_key(ref) == k.key_hash)
        ]
        if not matches:
            raise NotFoundError(f"project {project.name!r} has no key {ref!r} (see `kpilot keys list`)")
        if len(matches) > 1:
            raise WorkspaceError(f"{ref!r} matches several keys: give the key id instead")
        key = matches[0]
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            s.commit()
        return _key_info(key, project.name)


def resolve_key(meta: MetadataDB, key: str, kind: KeyKind | None = KeyKind.WRITE) -> KeyOwner | None:
    """The owner of an active key of ``kind`` (any kind when None), or None for an unknown or revoked key
    or one of another kind. The default, write keys only, is what the ingestion endpoints accept."""
    if not key or len(key) > 200:
        return None
    query = select(ApiKey.id, ApiKey.project_id, ApiKey.kind).where(
        ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
    )
    if kind is not None:
        query = query.where(ApiKey.kind == KeyKind(kind).value)
    with meta.session() as s:
        row = s.execute(query).first()
    return KeyOwner(row[0], row[1], KeyKind(row[2])) if row else None


def record_warnings(meta: MetadataDB, rows: Sequence[WarningRow]) -> None:
    """Append warnings in one transaction, then prune each touched project to its newest rows."""
    if not rows:
        return
    now = utcnow()
    with meta.session() as s:
        s.add_all(
            IngestionWarning(
                project_id=r.project_id,
                key_id=r.key_id,
                created_at=r.created_at or now,
                source=r.source,
                kind=r.kind,
                reason=r.reason[:2000],
                event=r.event[:400] if r.event else None,
                excerpt=r.excerpt[:1000] if r.excerpt else None,
            )
            for r in rows
        )
        s.commit()
        for pid in {r.project_id for r in rows}:
            newest = s.scalar(select(func.max(IngestionWarning.id)).where(IngestionWarning.project_id == pid))
            if newest is not None and newest > MAX_WARNINGS_PER_PROJECT:
                s.execute(
                    delete(IngestionWarning).where(
                        IngestionWarning.project_id == pid,
                        IngestionWarning.id <= newest - MAX_WARNINGS_PER_PROJECT,
                    )
                )
        s.commit()


def list_warnings(meta: MetadataDB, project: Project | None = None, limit: int = 100) -> list[WarningInfo]:
    """The newest ``limit`` warnings, newest first."""
    with meta.session() as s:
        query = (
            select(IngestionWarning, Project.name, ApiKey.prefix)
            .join(Project, Project.id == IngestionWarning.project_id)
            .outerjoin(ApiKey, ApiKey.id == IngestionWarning.key_id)
        )
        if project is not None:
            query = query.where(IngestionWarning.project_id == project.id)
        query = query.order_by(IngestionWarning.id.desc()).limit(limit)
        return [
            WarningInfo(w.id, w.created_at, pname, prefix, w.source, w.kind, w.reason, w.event, w.excerpt)
            for w, pname, prefix in s.execute(query)
        ]


def _key_info(k: ApiKey, project: str) -> KeyInfo:
    return KeyInfo(k.id, project, k.prefix, k.name, k.created_at, k.revoked_at, KeyKind(k.kind))
