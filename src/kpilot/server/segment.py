"""Segment HTTP Tracking API: ``/v1/batch`` and the single-call endpoints, plus analytics.js short paths.

The write key comes from HTTP Basic auth (user part, empty password) or ``writeKey`` in the body; when both
are present they must agree. Single-call endpoints take one message whose ``type`` is implied by the path.
Batch-level ``sentAt``, ``context`` and ``integrations`` apply to messages that lack their own.
Success is ``{"success": true}``; errors are ``{"code", "message"}`` (see :mod:`kpilot.server.errors`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from kpilot.server.body import decode_json, read_body
from kpilot.server.deps import StateDep, basic_auth_user
from kpilot.server.errors import IngestError
from kpilot.server.ingest import check_event_sizes
from kpilot.server.writer import LogRecord

__all__ = ["router"]

router = APIRouter(tags=["segment"])

_OK = b'{"success":true}'
_CALLS = {
    "batch": None,
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
}
_SHORT = {"b": "batch", "t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}
_BATCH_DEFAULTS = ("sentAt", "context", "integrations")


async def ingest(request: Request, state: StateDep, call: str) -> Response:
    settings = state.settings
    received_at = datetime.now(UTC).replace(tzinfo=None)
    body = await read_body(request, settings.segment_max_request_bytes)
    payload = decode_json(
        body, request.headers.get("content-type", ""), limit=settings.segment_max_request_bytes
    )
    if not isinstance(payload, dict):
        raise IngestError(400, "invalid_payload", "the body must be a JSON object")
    owner = state.keys.owner(_write_key(request, payload))
    kind = _CALLS[call]
    defaults: dict[str, Any] = {}
    if kind is None:
        messages = payload.get("batch")
        if not isinstance(messages, list):
            raise IngestError(400, "invalid_payload", "`batch` must be an array of messages")
        defaults = {k: payload[k] for k in _BATCH_DEFAULTS if payload.get(k) is not None}
    else:
        message = {k: v for k, v in payload.items() if k != "writeKey"}
        message.setdefault("type", kind)
        messages = [message]
    if len(body) > settings.segment_max_event_bytes:
        check_event_sizes(messages, settings.segment_max_event_bytes)
    await state.writer.submit(
        LogRecord(owner.project_id, owner.key_id, "segment", received_at, messages, defaults)
    )
    return Response(_OK, media_type="application/json")


def _write_key(request: Request, payload: dict[str, Any]) -> str:
    header = basic_auth_user(request)
    body_key = payload.get("writeKey")
    if body_key is not None and not isinstance(body_key, str):
        raise IngestError(400, "invalid_payload", "`writeKey` must be a string")
    if header and body_key and header != body_key:
        raise IngestError(401, "invalid_api_key", "the Basic auth key and `writeKey` differ")
    return header or body_key or ""


def _endpoint(call: str) -> Any:
    async def endpoint(request: Request, state: StateDep) -> Response:
        return await ingest(request, state, call)

    endpoint.__name__ = f"segment_{call}"
    endpoint.__doc__ = f"Segment `{call}` call (body: JSON, optionally gzip)."
    return endpoint


for _call in _CALLS:
    router.add_api_route(f"/v1/{_call}", _endpoint(_call), methods=["POST"], response_class=Response)
for _short, _call in _SHORT.items():
    router.add_api_route(
        f"/v1/{_short}", _endpoint(_call), methods=["POST"], response_class=Response, include_in_schema=False
    )


@router.get("/v1/projects/{write_key}/settings", include_in_schema=False)
async def cdn_settings(write_key: str, request: Request, state: StateDep) -> JSONResponse:
    """What analytics.js fetches before sending: point its Segment.io destination back at this server."""
    state.keys.owner(write_key)
    host = request.headers.get("host") or f"{state.settings.host}:{state.settings.port}"
    return JSONResponse(
        {
            "integrations": {
                "Segment.io": {"apiKey": write_key, "apiHost": f"{host}/v1", "protocol": request.url.scheme}
            },
            "plan": {"track": {"__default": {"enabled": True}}},
        }
    )
