"""What request handlers need, as ``Annotated`` FastAPI dependencies over the app's :class:`ServerState`."""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kpilot.keys import KeyKind, KeyOwner, resolve_key
from kpilot.server.errors import IngestError
from kpilot.server.settings import ServerSettings
from kpilot.server.writer import IngestWriter
from kpilot.workspace import ProjectInfo, Workspace

__all__ = [
    "SECRET_KEY_REFUSED",
    "AdminDep",
    "KeyCache",
    "SecretKeyDep",
    "SecretProjectDep",
    "ServerState",
    "SettingsDep",
    "StateDep",
    "WriterDep",
    "basic_auth_user",
    "get_state",
    "secret_key_owner",
    "secret_key_project",
]


class KeyCache:
    """Key -> owner lookups, cached for ``ttl`` seconds (unknown keys too, so floods stay cheap)."""

    _MAX = 10_000

    def __init__(self, ws: Workspace, ttl: float) -> None:
        self.ws = ws
        self.ttl = ttl
        self._cache: dict[str, tuple[KeyOwner | None, float]] = {}
        self._lock = threading.Lock()

    def owner(self, key: str) -> KeyOwner:
        """The key's owner; 401 ``invalid_api_key`` for a missing, unknown or revoked key."""
        if not key:
            raise IngestError(401, "invalid_api_key", "no API key: send the project's write key")
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            owner = hit[0]
        else:
            owner = resolve_key(self.ws.meta, key)
            with self._lock:
                if len(self._cache) >= self._MAX:
                    self._cache.clear()
                self._cache[key] = (owner, now + self.ttl)
        if owner is None:
            raise IngestError(401, "invalid_api_key", "the API key is unknown or revoked")
        return owner


@dataclass(slots=True)
class ServerState:
    settings: ServerSettings
    ws: Workspace
    writer: IngestWriter
    keys: KeyCache
    admin_token: str


async def get_state(request: Request) -> ServerState:
    # async (like the two below) so that FastAPI calls it on the event loop: a plain function would be
    # sent to the thread pool on every request, which costs more than the rest of a small request
    state: ServerState = request.app.state.kpilot
    return state


StateDep = Annotated[ServerState, Depends(get_state)]


async def get_settings(state: StateDep) -> ServerSettings:
    return state.settings


async def get_writer(state: StateDep) -> IngestWriter:
    return state.writer


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
WriterDep = Annotated[IngestWriter, Depends(get_writer)]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


async def require_admin(request: Request, state: StateDep) -> None:
    """The local admin API: loopback clients presenting the token from ``server.json`` only."""
    client = request.client.host if request.client else ""
    if client not in _LOOPBACK and not client.removeprefix("::ffff:").startswith("127."):
        raise IngestError(403, "forbidden", "the admin API only answers loopback clients")
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not token or not secrets.compare_digest(token.encode(), state.admin_token.encode()):
        raise IngestError(401, "unauthorized", "missing or wrong admin token (see server.json)")


AdminDep = Annotated[None, Depends(require_admin)]


def basic_auth_user(request: Request) -> str | None:
    """The user part of ``Authorization: Basic base64(user:password)`` (Segment's write key), if any."""
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise IngestError(401, "invalid_api_key", "malformed Basic authorization header") from exc
    return decoded.split(":", 1)[0]


SECRET_KEY_REFUSED = "the secret key is unknown, revoked or not valid for this project"
"""The one reply to a key that cannot act on the requested project, whether the project exists or not."""

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SecretKey",
    description="A project's secret key (`kpilot keys create --kind secret`): `Authorization: Bearer kpsk_...`",
)


def secret_key_owner(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> KeyOwner:
    """The owner of the request's secret key (``Authorization: Bearer``); 401 ``invalid_api_key`` otherwise.

    Looked up on every request, not cached: a revoked secret key is refused at once. Write keys are refused
    too (they are public); whether the key may act on the project in the path is the route's check.
    """
    key = credentials.credentials.strip() if credentials is not None else ""
    if not key:
        raise IngestError(401, "invalid_api_key", "no API key: send `Authorization: Bearer <secret key>`")
    owner = resolve_key(state.ws.meta, key, kind=None)
    if owner is not None and owner.kind is KeyKind.WRITE:
        raise IngestError(
            401,
            "invalid_api_key",
            "a write key can only send events: this API needs a secret key of the project "
            "(`kpilot keys create --kind secret`)",
        )
    if owner is None:
        raise IngestError(401, "invalid_api_key", SECRET_KEY_REFUSED)
    return owner


SecretKeyDep = Annotated[KeyOwner, Depends(secret_key_owner)]


def secret_key_project(
    project: Annotated[str, Path(description="Project name; it must be the secret key's project")],
    owner: SecretKeyDep,
    state: StateDep,
) -> ProjectInfo:
    """The project named in the path (``{project}``), if the request's secret key belongs to it; else 401
    with the same reply as an unknown key, so a key of another project learns nothing about the name."""
    for p in state.ws.projects():
        if p.id == owner.project_id and p.name == project:
            return p
    raise IngestError(401, "invalid_api_key", SECRET_KEY_REFUSED)


SecretProjectDep = Annotated[ProjectInfo, Depends(secret_key_project)]
"""For routes with a ``{project}`` path parameter, called with a project's secret key."""
