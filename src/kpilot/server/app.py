"""The ASGI application factory: routers, error shapes, and the lifespan that owns the workspace.

At startup the lifespan opens the workspace read-write (unless one is handed in), starts the ingestion
writer (which first stores whatever its log holds that the store lacks) and, when the server's address is
known, writes ``server.json``. At shutdown it stops accepting writes, lets the writer store everything
acknowledged, removes ``server.json`` and closes the store.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kpilot import __version__
from kpilot.server import health, imports_api, operations, posthog, query, segment, sql
from kpilot.server.cors import IngestionCORS
from kpilot.server.deps import KeyCache, ServerState
from kpilot.server.discovery import ServerInfo, remove_server_file, write_server_file
from kpilot.server.errors import IngestError, error_response, protocol_of
from kpilot.server.settings import ServerSettings
from kpilot.server.writer import IngestWriter
from kpilot.workspace import Workspace

__all__ = ["create_app"]

log = logging.getLogger("kpilot.server")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def create_app(
    settings: ServerSettings,
    *,
    workspace: Workspace | None = None,
    advertise: tuple[str, int] | None = None,
) -> FastAPI:
    """Build the app. ``workspace``: an open workspace to serve (closed at shutdown); else it is opened
    from ``settings.home``. ``advertise``: the bound (host, port) to publish in ``server.json``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ws = workspace or Workspace.open(settings.home, settings.metadata_url)
        writer = IngestWriter(
            ws.store,
            ws.meta,
            ws.home / "ingest-log",
            future_tolerance=timedelta(hours=settings.future_tolerance_hours),
            commit_max_events=settings.commit_max_events,
            queue_max_events=settings.queue_max_events,
            overload_wait=settings.overload_wait_seconds,
            prepare_workers=settings.prepare_workers,
        )
        writer.start()  # first applies what a previous run acknowledged but had not stored
        token = secrets.token_urlsafe(32)
        app.state.kpilot = ServerState(settings, ws, writer, KeyCache(ws, settings.key_cache_seconds), token)
        pid = os.getpid()
        if advertise is not None:
            write_server_file(ws.home, ServerInfo(advertise[0], advertise[1], pid, token))
        try:
            yield
        finally:
            writer.stop()
            if advertise is not None:
                remove_server_file(ws.home, pid)
            ws.store.checkpoint()
            ws.close()

    app = FastAPI(
        title="kpilot",
        version=__version__,
        description=(
            "Ingestion endpoints for Segment- and PostHog-compatible clients (write keys), the REST import "
            "API (secret keys), and the local API."
        ),
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.include_router(segment.router)
    app.include_router(posthog.router)
    app.include_router(health.router)
    app.include_router(query.router)
    app.include_router(sql.router)
    app.include_router(operations.router)
    app.include_router(imports_api.router)
    _install_error_handlers(app)
    app.add_middleware(IngestionCORS)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def ingest_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, IngestError)
        return error_response(protocol_of(request.url.path), exc.status, exc.code, exc.message)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(protocol_of(request.url.path), exc.status_code, code, str(exc.detail))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        return error_response(protocol_of(request.url.path), 400, "invalid_request", message)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path, exc_info=exc)
        return error_response(protocol_of(request.url.path), 500, "internal_error", "internal server error")

    app.add_exception_handler(IngestError, ingest_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
