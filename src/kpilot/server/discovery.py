"""``server.json``: how CLI commands find a running ``kpilot serve`` for the same workspace.

At startup the server writes ``<workspace>/server.json`` (mode 0600) with its address, pid and a random
admin token; it removes the file at shutdown. While the file exists and its pid is alive, commands that
would need the DuckDB file (which the server holds) send their work to the server instead. A file left by
a killed server is recognised as stale by its dead pid and ignored (and replaced at the next start).

This module is imported by the CLI, so it stays free of FastAPI and uvicorn imports.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SERVER_FILE",
    "ServerInfo",
    "call_server",
    "post",
    "read_server_file",
    "remove_server_file",
    "write_server_file",
]

SERVER_FILE = "server.json"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    host: str
    port: int
    pid: int
    token: str

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def write_server_file(home: Path, info: ServerInfo) -> Path:
    path = home / SERVER_FILE
    tmp = home / f".{SERVER_FILE}.{os.getpid()}"
    data = {"host": info.host, "port": info.port, "pid": info.pid, "token": info.token, "url": info.url}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
    return path


def remove_server_file(home: Path, pid: int) -> None:
    """Remove ``server.json`` if it is still ours (a newer server may have replaced it)."""
    info = _load(home / SERVER_FILE)
    if info is not None and info.pid == pid:
        (home / SERVER_FILE).unlink(missing_ok=True)


def read_server_file(home: Path) -> ServerInfo | None:
    """The running server of this workspace, or None (no file, unreadable file, or a dead pid)."""
    info = _load(home / SERVER_FILE)
    if info is None or not _alive(info.pid):
        return None
    return info


def _load(path: Path) -> ServerInfo | None:
    try:
        data = json.loads(path.read_text())
        return ServerInfo(str(data["host"]), int(data["port"]), int(data["pid"]), str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def call_server(info: ServerInfo, path: str, body: Any, timeout: float = 300.0) -> tuple[int, Any]:
    """POST ``body`` as JSON to the server's admin API; the HTTP status and the decoded JSON reply."""
    status, _, raw = post(info, path, json.dumps(body).encode(), "application/json", timeout)
    if status < 300:
        return status, json.loads(raw)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"error": {"code": "server_error", "message": f"HTTP {status} from the server"}}


def post(
    info: ServerInfo, path: str, data: bytes, content_type: str, timeout: float = 300.0
) -> tuple[int, str, bytes]:
    """POST ``data`` to the server's admin API with its token: the HTTP status, content type and body.

    Connection failures raise :class:`OSError` (``urllib.error.URLError`` is one)."""
    request = urllib.request.Request(
        info.url + path,
        data=data,
        method="POST",
        headers={"Content-Type": content_type, "Authorization": f"Bearer {info.token}"},
    )
    # Never through an HTTP proxy from the environment: the server is local.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as reply:
            return reply.status, reply.headers.get_content_type(), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type() if exc.headers else "", exc.read()
