"""REST import API: ``POST /api/v1/projects/{project}/imports/{source}`` with a file as the request body.

The server-to-server counterpart of ``kpilot import SOURCE FILE``, authenticated with a project's *secret*
key (``Authorization: Bearer kpsk_...``; write keys are public and refused). The body is spooled to a
temporary file (gunzipped when it is gzip) and imported by the same importer as the CLI's, on a worker
thread of this process, exactly as the admin API runs the CLI's imports while serving
(:mod:`kpilot.server.operations`): same rows, same rejections, same natural-key upserts (re-importing
changes nothing), same import records for ``kpilot audit``.

The reply is the import report, the JSON ``kpilot import ... --json`` prints: 200 when every row went in,
422 (the report plus an ``error``) when some rows were rejected and the others imported, the HTTP side of
the CLI's exit code 5. Other errors use the API's one shape ``{"error": {"code", "message"}}``: 401 for a
missing, unknown, revoked or write key and for a key of another project (the same reply whether that
project exists or not), 404 for an unknown source, 413 past ``KPILOT_IMPORT_MAX_REQUEST_BYTES``, 415 for
an unsupported media type or encoding, 400 for a body that cannot be read at all (nothing is stored).
"""

from __future__ import annotations

import csv
import gzip
import shutil
import tempfile
import zlib
from pathlib import Path as FilePath
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kpilot.collect.importer import ImportReport
from kpilot.collect.readers import FORMATS
from kpilot.errors import KpilotError
from kpilot.server.deps import SecretProjectDep, StateDep
from kpilot.server.errors import IngestError
from kpilot.server.operations import _last_run_id, _OperationFailed, _record_names, _run
from kpilot.workspace import ProjectInfo, Workspace

__all__ = ["IMPORT_SOURCES", "router"]

router = APIRouter(prefix="/api/v1", tags=["imports"])

IMPORT_SOURCES = (
    "events",
    "customers",
    "subscriptions",
    "invoices",
    "fx-rates",
    "spend",
    "surveys",
    "tickets",
    "feedback",
)
"""What can be imported: events (:func:`kpilot.collect.importer.import_events`) and every business source
of :data:`kpilot.revenue.importing.SOURCES` (the ``kpilot import`` subcommands)."""

DEFAULT_FILENAME = "request body"
"""How the report and the import records name the file when the request gives no ``filename``."""

_MEDIA_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines": "jsonl",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
}
_GENERIC_TYPES = ("", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain")
"""Types that say nothing about the format (``curl --data-binary`` sends form-urlencoded): need ``format``."""
_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")
_GZIP_MAGIC = b"\x1f\x8b"
_WRITE_CHUNK = 1024 * 1024


class RejectionOut(BaseModel):
    file: str = Field(description="The `filename` parameter, or “request body”")
    line: int = Field(
        description="Physical line of a CSV/JSONL body (the CSV header is line 1); row of Parquet"
    )
    reason: str


class ImportReportOut(BaseModel):
    """The import report, as `kpilot import SOURCE FILE --json` prints it."""

    files: list[str]
    rows_read: int
    imported: int = Field(description="Rows (events) new or changed")
    deduplicated: int = Field(description="Rows already stored unchanged (events: duplicates)")
    rejected: int
    rejections: list[RejectionOut] = Field(description="The first 10,000 rejected rows")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class RejectedReportOut(ImportReportOut):
    """Some rows were rejected (the others are imported): the report plus ``error.code = rows_rejected``."""

    error: ErrorDetail


_BODY_SCHEMA = {"type": "string", "format": "binary"}
_REQUEST_BODY = {
    "required": True,
    "description": "The file (CSV with a header row, JSON Lines, or Parquet); may be gzip-compressed.",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        "application/vnd.apache.parquet": {"schema": _BODY_SCHEMA},
        "application/octet-stream": {"schema": _BODY_SCHEMA},
    },
}


@router.post(
    "/projects/{project}/imports/{source}",
    response_class=Response,
    summary="Import a file of events or business data",
    description=(
        "The body is the file; its format comes from the `format` parameter, else from the Content-Type "
        "(`text/csv`, `application/x-ndjson`/`application/jsonl`, `application/vnd.apache.parquet`). "
        "Authenticate with a secret key of the project: `Authorization: Bearer kpsk_...`. Rows are "
        "upserted on their natural key (events deduplicated on their id), so sending the same file again "
        "changes nothing. Schemas: docs/data-sources.md and docs/import.md."
    ),
    responses={
        200: {"model": ImportReportOut, "description": "Every row was imported (or already stored)"},
        400: {"model": ErrorOut, "description": "Empty or unreadable body, bad parameter: nothing stored"},
        401: {"model": ErrorOut, "description": "Missing, unknown, revoked or write key; another project's"},
        404: {"model": ErrorOut, "description": "Unknown source"},
        413: {"model": ErrorOut, "description": "Body over the size limit"},
        415: {"model": ErrorOut, "description": "Unsupported media type, charset or encoding"},
        422: {
            "model": RejectedReportOut,
            "description": "Some rows rejected (line and reason), the rest imported",
        },
    },
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def import_file(
    request: Request,
    state: StateDep,
    target: SecretProjectDep,
    source: Annotated[
        str, Path(description="What the file holds", json_schema_extra={"enum": list(IMPORT_SOURCES)})
    ],
    fmt: Annotated[
        str | None,
        Query(alias="format", description="csv, jsonl or parquet; overrides the Content-Type"),
    ] = None,
    filename: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=500,
            description="The file's name in the report, the rejections and the import records (`kpilot audit`)",
        ),
    ] = None,
) -> Response:
    if source not in IMPORT_SOURCES:
        raise IngestError(
            404, "unknown_source", f"unknown source {source!r}; expected one of {', '.join(IMPORT_SOURCES)}"
        )
    file_format = _format_of(request.headers.get("content-type", ""), fmt)
    limit = state.settings.import_max_request_bytes
    display = filename or DEFAULT_FILENAME
    directory = FilePath(tempfile.mkdtemp(prefix="kpilot-import-"))
    try:
        path = await _receive(request, directory, file_format, limit)
        report = await _import(state.ws, target, source, path, file_format, display)
    finally:
        await run_in_threadpool(shutil.rmtree, directory, True)
    body: dict[str, Any] = report.as_dict()
    if report.rejected:
        body["error"] = {
            "code": "rows_rejected",
            "message": f"{report.rejected} row(s) rejected, the other rows were imported; "
            "fix them and send the file again (re-importing is idempotent)",
        }
        return JSONResponse(body, 422)
    return JSONResponse(body)


def _format_of(content_type: str, explicit: str | None) -> str:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    for param in params.split(";"):
        key, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if key.strip().lower() == "charset" and charset not in _CHARSETS:
            raise IngestError(415, "unsupported_media_type", f"charset {charset!r}: send the file as UTF-8")
    if explicit is not None:
        if explicit.lower() not in FORMATS:
            raise IngestError(
                400, "invalid_format", f"format must be one of {', '.join(FORMATS)}, got {explicit!r}"
            )
        return explicit.lower()
    if media in _MEDIA_TYPES:
        return _MEDIA_TYPES[media]
    accepted = "text/csv, application/x-ndjson (or application/jsonl) or application/vnd.apache.parquet"
    if media in _GENERIC_TYPES:
        raise IngestError(
            400,
            "format_required",
            f"cannot tell the file's format from Content-Type {media or '(none)'!r}: "
            f"send {accepted}, or the format parameter (?format=csv|jsonl|parquet)",
        )
    raise IngestError(
        415, "unsupported_media_type", f"Content-Type {media!r} is not supported: send {accepted}"
    )


def _too_large(limit: int) -> IngestError:
    return IngestError(
        413, "request_too_large", f"the file is larger than {limit} bytes (KPILOT_IMPORT_MAX_REQUEST_BYTES)"
    )


async def _receive(request: Request, directory: FilePath, fmt: str, limit: int) -> FilePath:
    """Spool the body into ``directory`` and return the file to import (gunzipped when it was gzip)."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise IngestError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    raw = directory / "body"
    size = 0
    with raw.open("wb") as fh:
        pending = bytearray()
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            pending += chunk
            if len(pending) >= _WRITE_CHUNK:
                await run_in_threadpool(fh.write, bytes(pending))
                pending.clear()
        if pending:
            await run_in_threadpool(fh.write, bytes(pending))
    if size == 0:
        raise IngestError(400, "empty_body", "the request has no body: send the file as the body")
    data = directory / f"data.{fmt}"
    with raw.open("rb") as fh:
        compressed = encoding in ("gzip", "x-gzip") or fh.read(2) == _GZIP_MAGIC
    if compressed:
        await run_in_threadpool(_gunzip, raw, data, limit)
        raw.unlink()
    else:
        raw.rename(data)
    return data


def _gunzip(src: FilePath, dst: FilePath, limit: int) -> None:
    """Decompress ``src`` into ``dst``, stopping (413) as soon as more than ``limit`` bytes come out."""
    size = 0
    with gzip.open(src, "rb") as zin, dst.open("wb") as out:
        while True:
            try:
                chunk = zin.read(_WRITE_CHUNK)
            except (OSError, EOFError, zlib.error) as exc:
                raise IngestError(400, "invalid_compression", f"the body is not valid gzip: {exc}") from exc
            if not chunk:
                return
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.write(chunk)


async def _import(
    ws: Workspace, project: ProjectInfo, source: str, path: FilePath, fmt: str, display: str
) -> ImportReport:
    """Run the CLI's importer on ``path`` on a worker thread; name the file ``display`` everywhere."""
    from kpilot.collect.importer import import_events
    from kpilot.revenue.importing import import_source

    def run() -> ImportReport:
        before = _last_run_id(ws.meta)
        try:
            if source == "events":
                return import_events(ws, project, [path], fmt=fmt)
            return import_source(ws, project, source, [path], fmt=fmt)
        except (csv.Error, pa.ArrowException, OSError) as exc:  # readers' errors that are not ValueErrors
            # (a corrupt Parquet page is an OSError); FileNotFoundError cannot happen, the file is ours
            raise ValueError(str(exc)) from exc
        finally:
            _record_names(ws.meta, project.id, before, {str(path): display})

    def named(text: str) -> str:
        return text.replace(str(path), display).replace(str(path.parent), "(upload)")

    try:
        report = await _run(run)
    except _OperationFailed as failed:
        exc = failed.error
        code = exc.code if isinstance(exc, KpilotError) else "unreadable_body"
        message = named(str(exc))
        if not message.startswith(display):
            message = f"{display}: {message}"
        raise IngestError(400, code, message) from exc
    report.files = [named(f) for f in report.files]
    for r in report.rejections:
        r.file, r.reason = named(r.file), named(r.reason)
    return report
