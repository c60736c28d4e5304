"""Local admin API: the CLI's writes (and the lake export) on the live store, while the server holds it.

Only loopback clients with the admin token from ``server.json`` are answered; paths in requests are
absolute paths on this machine (the CLI resolves them). Each operation runs on a worker thread in this
process, where the store's own write lock serialises it with the ingestion writer's group commits.

* ``POST /api/batches/{project_id}``: an event batch as Arrow IPC (:func:`kpilot.store.remote.encode_batch`),
  stored with one ``EventStore.write_batch`` (one transaction, deduplicated as every write). Replies
  ``{"received", "accepted", "deduplicated"}``. ``kpilot import events`` sends one request per batch.
* ``POST /api/projects/{name}/imports/{source}``: ``{"files": [...], "names": [...], "format": ...}``, a
  business-source import run here exactly as ``kpilot import SOURCE`` runs it (its metadata records the
  files under ``names``, as the user gave them); replies the import report.
* ``POST /api/projects/{name}/feedback/merge`` (``{"item", "into"}``) and ``.../feedback/status``
  (``{"item", "status"}``): the feature request pipeline.
* ``POST /api/lake``: ``{"directory", "project"}``, ``kpilot export lake``; replies the lake manifest.
* ``POST /api/rollups/{project_id}``: ``{"timezone"}``, ``EventStore.ensure_rollups`` (what opening a
  workspace and creating a project do); replies ``{"built": bool}``.

An error of the operation itself (a missing file, an unknown project...) is replied as
``{"error": {"code", "message", "exit_code"}}``: the CLI raises it again as the command would have without a
server (:func:`kpilot.store.remote.error_from_reply`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import orjson
import pyarrow as pa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import func, select, update
from starlette.concurrency import run_in_threadpool

from kpilot.errors import KpilotError, NotFoundError
from kpilot.meta.db import MetadataDB
from kpilot.meta.models import ImportRejection, ImportRun
from kpilot.server.body import read_body
from kpilot.server.deps import AdminDep, StateDep
from kpilot.server.errors import IngestError
from kpilot.store.remote import decode_batch

__all__ = ["error_reply", "router"]

router = APIRouter(prefix="/api", tags=["api"])

_MAX_BATCH_BYTES = 2 * 1024 * 1024 * 1024 - 1
T = TypeVar("T")


class _OperationFailed(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


def error_reply(exc: Exception) -> JSONResponse:
    """The reply for an error of the operation itself, with what the CLI needs to raise it again."""
    if isinstance(exc, KpilotError):
        code, exit_code = exc.code, exc.exit_code
        status = 404 if isinstance(exc, NotFoundError) else 400
    elif isinstance(exc, duckdb.Error):
        code, exit_code, status = f"duckdb.{type(exc).__name__}", 1, 400
    else:
        code, exit_code, status = type(exc).__name__, 1, 400
    return JSONResponse({"error": {"code": code, "message": str(exc), "exit_code": exit_code}}, status)


async def _run(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a worker thread; errors a user can cause become :class:`_OperationFailed`."""

    def guarded() -> T:
        try:
            return fn()
        except (KpilotError, FileNotFoundError, ValueError, duckdb.Error) as exc:
            raise _OperationFailed(exc) from exc

    return await run_in_threadpool(guarded)


@router.post("/batches/{project_id}", response_class=Response)
async def batch(project_id: int, request: Request, state: StateDep, _admin: AdminDep) -> Response:
    body = await read_body(request, _MAX_BATCH_BYTES)
    try:
        events, received_at = decode_batch(body)
    except (ValueError, TypeError, pa.ArrowException, orjson.JSONDecodeError) as exc:
        raise IngestError(400, "invalid_batch", f"not an event batch: {exc}") from exc

    def write() -> dict[str, int]:
        if not any(p.id == project_id for p in state.ws.projects()):
            raise NotFoundError(f"no project with id {project_id}")
        result = state.ws.store.write_batch(project_id, events, received_at)
        return {"received": result.received, "accepted": result.accepted, "deduplicated": result.deduplicated}

    try:
        return JSONResponse(await _run(write))
    except _OperationFailed as failed:
        return error_reply(failed.error)


@router.post("/ingestion/flush")
async def flush(state: StateDep, _admin: AdminDep) -> dict[str, Any]:
    """Wait (up to 30 s) until every event acknowledged before this call is in the store.

    The CLI calls this before it works through a running server, so it sees every acknowledged event."""
    done = await run_in_threadpool(state.writer.flush)
    return {"flushed": done, **state.writer.positions}


class RollupRequest(BaseModel):
    timezone: str


@router.post("/rollups/{project_id}", response_class=Response)
async def rollups(project_id: int, body: RollupRequest, state: StateDep, _admin: AdminDep) -> Response:
    def run() -> dict[str, bool]:
        if not any(p.id == project_id for p in state.ws.projects()):
            raise NotFoundError(f"no project with id {project_id}")
        return {"built": state.ws.store.ensure_rollups(project_id, body.timezone)}

    try:
        return JSONResponse(await _run(run))
    except _OperationFailed as failed:
        return error_reply(failed.error)


class ImportRequest(BaseModel):
    files: list[str]
    names: list[str] | None = None
    """The files as the user named them, recorded in the import's metadata in place of ``files``."""
    format: str | None = None


@router.post("/projects/{name}/imports/{source}", response_class=Response)
async def import_source(
    name: str, source: str, body: ImportRequest, state: StateDep, _admin: AdminDep
) -> Response:
    from kpilot.revenue.importing import import_source as run_import

    def run() -> dict[str, object]:
        project = state.ws.project(name)
        files = [_absolute(f) for f in body.files]
        before = _last_run_id(state.ws.meta)
        try:
            return run_import(state.ws, project, source, files, fmt=body.format).as_dict()
        finally:
            if body.names is not None:
                named = dict(zip(body.files, body.names, strict=True))
                _record_names(state.ws.meta, project.id, before, named)

    try:
        return JSONResponse(await _run(run))
    except _OperationFailed as failed:
        return error_reply(failed.error)


class MergeRequest(BaseModel):
    item: str
    into: str


class StatusRequest(BaseModel):
    item: str
    status: str


@router.post("/projects/{name}/feedback/merge", response_class=Response)
async def feedback_merge(name: str, body: MergeRequest, state: StateDep, _admin: AdminDep) -> Response:
    from kpilot.voice.feature_requests import merge_request

    def run() -> dict[str, str]:
        return {"root": merge_request(state.ws, state.ws.project(name), body.item, body.into)}

    try:
        return JSONResponse(await _run(run))
    except _OperationFailed as failed:
        return error_reply(failed.error)


@router.post("/projects/{name}/feedback/status", response_class=Response)
async def feedback_status(name: str, body: StatusRequest, state: StateDep, _admin: AdminDep) -> Response:
    from kpilot.voice.feature_requests import set_status

    def run() -> dict[str, str]:
        return {"status": set_status(state.ws, state.ws.project(name), body.item, body.status)}

    try:
        return JSONResponse(await _run(run))
    except _OperationFailed as failed:
        return error_reply(failed.error)


class LakeRequest(BaseModel):
    directory: str
    project: str | None = None


@router.post("/lake", response_class=Response)
async def lake(body: LakeRequest, state: StateDep, _admin: AdminDep) -> Response:
    from kpilot.engines.lake import export_lake

    def run() -> bytes:
        return export_lake(state.ws, _absolute(body.directory), body.project).to_json()

    try:
        return Response(await _run(run), media_type="application/json")
    except _OperationFailed as failed:
        return error_reply(failed.error)


def _last_run_id(meta: MetadataDB) -> int:
    with meta.session() as s:
        return int(s.scalar(select(func.coalesce(func.max(ImportRun.id), 0))) or 0)


def _record_names(meta: MetadataDB, project_id: int, after: int, names: dict[str, str]) -> None:
    """Name the files of the import runs after ``after`` as the user did (as a direct import records them)."""
    with meta.session() as s:
        for absolute, given in names.items():
            runs = (
                (ImportRun.id > after) & (ImportRun.project_id == project_id) & (ImportRun.file == absolute)
            )
            s.execute(
                update(ImportRejection)
                .where(ImportRejection.run_id.in_(select(ImportRun.id).where(runs)))
                .where(ImportRejection.file == absolute)
                .values(file=given)
            )
            s.execute(update(ImportRun).where(runs).values(file=given))
        s.commit()


def _absolute(path: str) -> Path:
    p = Path(path)
    if not p.is_absolute():
        raise ValueError(f"{path}: the server needs an absolute path")
    return p
