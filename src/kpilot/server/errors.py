"""Error replies. Each protocol gets the body shape its clients parse, with the same status codes.

- Segment endpoints (``/v1/...``): ``{"code": ..., "message": ...}``, what Segment's libraries read.
- PostHog endpoints (``/batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/``): ``{"type", "code", "detail"}``;
  PostHog's libraries read ``detail``.
- Everything else (the kpilot API): ``{"error": {"code": ..., "message": ...}}``, the shape the CLI prints
  with ``--json``.

Status codes: 400 for a malformed or oversize request, 401 for a missing, unknown or revoked key, 404/405
for unknown routes, 503 when the writer is overloaded or a write failed (clients retry 5xx).
"""

from __future__ import annotations

from enum import Enum
from typing import assert_never

from fastapi.responses import JSONResponse

__all__ = ["IngestError", "Protocol", "error_response", "protocol_of"]


class Protocol(Enum):
    SEGMENT = "segment"
    POSTHOG = "posthog"
    API = "api"


_POSTHOG_PREFIXES = ("/batch", "/capture", "/e/", "/i/v0/e", "/track")


def protocol_of(path: str) -> Protocol:
    if path.startswith("/v1/"):
        return Protocol.SEGMENT
    if path == "/e" or path.startswith(_POSTHOG_PREFIXES):
        return Protocol.POSTHOG
    return Protocol.API


class IngestError(Exception):
    """An error reply: HTTP ``status``, a stable machine ``code`` and a human ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_POSTHOG_TYPES = {400: "validation_error", 401: "authentication_error", 404: "not_found"}


def error_response(protocol: Protocol, status: int, code: str, message: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    match protocol:
        case Protocol.SEGMENT:
            return JSONResponse({"code": code, "message": message}, status, headers)
        case Protocol.POSTHOG:
            kind = _POSTHOG_TYPES.get(status, "server_error" if status >= 500 else "validation_error")
            return JSONResponse({"type": kind, "code": code, "detail": message}, status, headers)
        case Protocol.API:
            return JSONResponse({"error": {"code": code, "message": message}}, status, headers)
        case _:
            assert_never(protocol)
