"""Local admin API: run a query spec against the live store (what ``kpilot query`` uses while serving).

``POST /api/projects/{name}/query`` with a query spec as the JSON body. Only loopback clients with the
admin token from ``server.json`` are answered. The result is serialised exactly as the CLI prints it
(``json.dumps`` with ``default=str``), so the CLI output is the same whether it ran the query itself or
asked the server. Queries run on a worker thread with their own DuckDB cursor, concurrently with ingestion.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.errors import KpilotError, NotFoundError
from kpilot.server.deps import AdminDep, StateDep
from kpilot.server.errors import IngestError

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["api"])

_MAX_SPEC_BYTES = 1024 * 1024


@router.post("/projects/{name}/query", response_class=Response)
async def query(name: str, request: Request, state: StateDep, _admin: AdminDep) -> Response:
    """Run the query spec in the body for project ``name``; errors are ``{"error": {"code", "message"}}``."""
    body = await request.body()
    if len(body) > _MAX_SPEC_BYTES:
        raise IngestError(400, "request_too_large", f"query spec is larger than {_MAX_SPEC_BYTES} bytes")

    def run() -> dict[str, Any]:
        project = state.ws.project(name)
        return run_query(DuckDBEngine(state.ws.store), project, parse_spec(body))

    try:
        result = await run_in_threadpool(run)
    except KpilotError as exc:
        raise IngestError(404 if isinstance(exc, NotFoundError) else 400, exc.code, str(exc)) from exc
    text = json.dumps(result, indent=None, default=str, ensure_ascii=False)
    return Response(text, media_type="application/json")
