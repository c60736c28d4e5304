"""PostHog capture: ``/batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/`` (with and without the trailing slash).

The body is one event, ``{"batch": [...]}`` or a bare array of events. The project key is ``api_key`` or
``token`` at the top of the body, else the ``token`` query parameter, else the events' own ``api_key``,
``token`` or ``properties.token``; events of one request must all carry the same key. Batch-level
``sent_at`` applies to events without their own. Success is ``{"status": 1}``; errors carry ``detail``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from kpilot.server.body import decode_json, read_body
from kpilot.server.deps import StateDep
from kpilot.server.errors import IngestError
from kpilot.server.ingest import check_event_sizes
from kpilot.server.writer import LogRecord

__all__ = ["router"]

router = APIRouter(tags=["posthog"])

_OK = b'{"status":1}'
_PATHS = ("/batch", "/capture", "/e", "/i/v0/e", "/track")


async def capture(request: Request, state: StateDep) -> Response:
    settings = state.settings
    received_at = datetime.now(UTC).replace(tzinfo=None)
    limit = settings.posthog_max_request_bytes
    body = await read_body(request, limit)
    payload = decode_json(body, request.headers.get("content-type", ""), limit=limit)
    defaults: dict[str, Any] = {}
    if isinstance(payload, list):
        messages: list[Any] = payload
        top: dict[str, Any] = {}
    elif isinstance(payload, dict):
        top = payload
        if "batch" in payload:
            if not isinstance(payload["batch"], list):
                raise IngestError(400, "invalid_payload", "`batch` must be an array of events")
            messages = payload["batch"]
            if payload.get("sent_at") is not None:
                defaults["sent_at"] = payload["sent_at"]
        else:
            messages = [{k: v for k, v in payload.items() if k not in ("api_key", "token")}]
    else:
        raise IngestError(400, "invalid_payload", 'the body must be an event, an array or {"batch": [...]}')
    owner = state.keys.owner(_project_key(request, top, messages))
    if len(body) > settings.posthog_max_event_bytes:
        check_event_sizes(messages, settings.posthog_max_event_bytes)
    await state.writer.submit(
        LogRecord(owner.project_id, owner.key_id, "posthog", received_at, messages, defaults)
    )
    return Response(_OK, media_type="application/json")


def _project_key(request: Request, top: dict[str, Any], messages: list[Any]) -> str:
    for name in ("api_key", "token"):
        value = top.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise IngestError(400, "invalid_payload", f"`{name}` must be a string")
            return value
    query_key = request.query_params.get("token") or request.query_params.get("api_key")
    if query_key:
        return query_key
    found: set[str] = set()
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        props = msg.get("properties")
        for value in (
            msg.get("api_key"),
            msg.get("token"),
            props.get("token") if isinstance(props, dict) else None,
        ):
            if isinstance(value, str) and value:
                found.add(value)
                break
    if len(found) > 1:
        raise IngestError(400, "invalid_payload", "events of one request carry different project keys")
    return found.pop() if found else ""


for _path in _PATHS:
    router.add_api_route(
        f"{_path}/", capture, methods=["POST"], response_class=Response, name=f"posthog{_path}/"
    )
    router.add_api_route(
        _path,
        capture,
        methods=["POST"],
        response_class=Response,
        include_in_schema=False,
        name=f"posthog{_path}",
    )
