"""Shared CLI plumbing: global options, opening the workspace, JSON output and error exits.

While ``kpilot serve`` runs on the workspace (``server.json`` names a live pid) the server holds the DuckDB
file: :func:`open_workspace` then gives the command a workspace whose store is a
:class:`~kpilot.store.remote.RemoteStore`, so reads and event batches go through the server, and commands
whose work needs the file itself send it to the server (see :func:`remote_store`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console

from kpilot.config import get_settings
from kpilot.errors import KpilotError, WorkspaceError
from kpilot.server.discovery import ServerInfo, read_server_file
from kpilot.store.duckdb_store import EventStore
from kpilot.store.remote import RemoteStore
from kpilot.workspace import ProjectInfo, Workspace

__all__ = [
    "JsonOpt",
    "ProjectOpt",
    "ServerPaths",
    "State",
    "console",
    "emit_json",
    "err_console",
    "fail",
    "open_workspace",
    "remote_store",
]

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project name (default: KPILOT_PROJECT or the only one)."),
]


@dataclass
class State:
    home: Path
    metadata_url: str | None
    project: str | None


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if isinstance(obj, State):
        return obj
    settings = get_settings()
    return State(settings.home, settings.metadata_url, settings.project)


@contextmanager
def open_workspace(
    ctx: typer.Context, *, create: bool = False, read_only: bool = False
) -> Iterator[Workspace]:
    st = state(ctx)
    server = read_server_file(st.home)
    if server is None:
        try:
            ws = (
                Workspace.init(st.home, st.metadata_url)
                if create
                else Workspace.open(st.home, st.metadata_url, read_only=read_only)
            )
        except WorkspaceError as exc:
            server = _server_starting(st.home, exc)
            if server is None:
                raise
    if server is not None:
        # RemoteStore offers EventStore's read interface and write_batch; anything else raises an error
        # that names the server.
        remote = RemoteStore(server, st.home / "events.duckdb", read_only=read_only)
        remote.flush_ingestion()  # read every event the server acknowledged before this command
        store = cast(EventStore, remote)
        ws = Workspace.open(st.home, st.metadata_url, read_only=read_only, store=store)
    try:
        yield ws
    finally:
        ws.close()


def _server_starting(home: Path, exc: WorkspaceError, wait: float = 5.0) -> ServerInfo | None:
    """After a lock conflict on the store: the server that is starting on ``home``, if one shows up soon
    (it opens the store before it writes ``server.json``)."""
    if "lock" not in str(exc).lower():
        return None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        server = read_server_file(home)
        if server is not None:
            return server
        time.sleep(0.1)
    return None


def remote_store(ws: Workspace) -> RemoteStore | None:
    """The running server's store when ``ws`` was opened through it, else None."""
    store: object = ws.store
    return store if isinstance(store, RemoteStore) else None


class ServerPaths:
    """Paths a command sends to the server, absolute (the server has another working directory), and
    the way back: the server's messages and reports name them as the user wrote them."""

    def __init__(self, paths: Sequence[Path | str]) -> None:
        self.given = [str(p) for p in paths]
        self.absolute = [os.path.abspath(p) for p in self.given]
        self._back = dict(zip(self.absolute, self.given, strict=True))

    def back(self, text: str) -> str:
        """``text`` with each absolute path replaced by the path as given (longest first)."""
        for absolute in sorted(self._back, key=len, reverse=True):
            if absolute != self._back[absolute]:
                text = text.replace(absolute, self._back[absolute])
        return text


def pick_project(ctx: typer.Context, ws: Workspace, name: str | None) -> ProjectInfo:
    return ws.project(name or state(ctx).project)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def fail(exc: KpilotError | Exception, as_json: bool = False) -> typer.Exit:
    code = exc.exit_code if isinstance(exc, KpilotError) else 1
    kind = exc.code if isinstance(exc, KpilotError) else type(exc).__name__
    if as_json:
        sys.stdout.write(json.dumps({"error": {"code": kind, "message": str(exc)}}) + "\n")
    else:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
    return typer.Exit(code)
