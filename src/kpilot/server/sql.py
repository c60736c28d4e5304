"""Local admin API: read-only SQL on the live store, for CLI commands that run while the server does.

``POST /api/sql`` takes one SELECT and its parameters as Arrow IPC (:func:`kpilot.store.remote.encode_query`)
and replies with the rows as Arrow IPC. Only loopback clients with the admin token from ``server.json`` are
answered. The statement must be exactly one SELECT (DuckDB's own parser decides); it runs on a worker
thread with a cursor of its own, inside a transaction that is rolled back, so it can change nothing and sees
one snapshot while ingestion goes on. Results use DuckDB's lossless Arrow types (HUGEINT, UUID, JSON keep
their identity), which :class:`kpilot.store.remote.RemoteStore` turns back into what ``fetchall`` returns.
"""

from __future__ import annotations

import contextlib
from typing import Any

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from kpilot.server.body import read_body
from kpilot.server.deps import AdminDep, StateDep
from kpilot.server.errors import IngestError
from kpilot.server.operations import error_reply
from kpilot.store.remote import ARROW_STREAM, decode_query, write_ipc

__all__ = ["check_read_only", "router"]

router = APIRouter(prefix="/api", tags=["api"])

_MAX_QUERY_BYTES = 16 * 1024 * 1024


def check_read_only(sql: str) -> None:
    """Raise :class:`IngestError` (400 ``read_only``) unless ``sql`` is exactly one SELECT statement."""
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        raise IngestError(400, "read_only", f"expected one SELECT statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise IngestError(400, "read_only", f"only SELECT statements are accepted, not {kind.name}")


@router.post("/sql", response_class=Response)
async def sql(request: Request, state: StateDep, _admin: AdminDep) -> Response:
    """Run one read-only SELECT; the rows as Arrow IPC, errors as ``{"error": {...}}``."""
    body = await read_body(request, _MAX_QUERY_BYTES)
    try:
        text, params = decode_query(body)
    except (ValueError, pa.ArrowException) as exc:
        raise IngestError(400, "invalid_request", f"not a query: {exc}") from exc
    try:
        check_read_only(text)
    except duckdb.Error as exc:  # a syntax error: reported as DuckDB's own error
        return error_reply(exc)

    def run() -> bytes:
        return write_ipc(_select(state.ws.store.cursor(), text, params))

    try:
        data = await run_in_threadpool(run)
    except duckdb.Error as exc:
        return error_reply(exc)
    return Response(data, media_type=ARROW_STREAM)


def _select(cur: duckdb.DuckDBPyConnection, text: str, params: Any) -> pa.Table:
    try:
        cur.execute("SET SESSION arrow_lossless_conversion = true")
        cur.execute("BEGIN TRANSACTION")
        try:
            return cur.sql(text, params=params).to_arrow_table()
        finally:
            with contextlib.suppress(duckdb.Error):  # never hide the statement's own error
                cur.execute("ROLLBACK")
    finally:
        cur.close()
