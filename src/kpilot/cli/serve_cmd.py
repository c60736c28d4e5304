"""``kpilot serve``: run the HTTP server (ingestion endpoints and local API) under uvicorn."""

from __future__ import annotations

import socket
import sys
from typing import Annotated

import typer

from kpilot.cli.common import err_console, fail, state
from kpilot.errors import KpilotError, WorkspaceError
from kpilot.server.discovery import read_server_file


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option("--host", envvar="KPILOT_HOST", help="Interface [default: 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", envvar="KPILOT_PORT", help="TCP port, 0 for any free one [default: 8000]"),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level")] = "warning",
) -> None:
    """Serve the ingestion endpoints (Segment and PostHog protocols) and the local API until stopped."""
    import uvicorn

    from kpilot.server.app import create_app
    from kpilot.server.settings import ServerSettings
    from kpilot.workspace import Workspace

    st = state(ctx)
    overrides = {"home": st.home, "metadata_url": st.metadata_url, "host": host, "port": port}
    settings = ServerSettings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    try:
        running = read_server_file(settings.home)
        if running is not None:
            raise WorkspaceError(
                f"a kpilot server (pid {running.pid}) already serves {settings.home} at {running.url}"
            )
        sock = _bind(settings.host, settings.port)
        ws = Workspace.open(settings.home, settings.metadata_url)
    except (KpilotError, OSError) as exc:
        raise fail(exc) from exc
    bound_port = sock.getsockname()[1]
    app = create_app(settings, workspace=ws, advertise=(settings.host, bound_port))
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="on", ws="none", timeout_graceful_shutdown=30
    )
    server = uvicorn.Server(config)
    _tune_gc()
    err_console.print(
        f"kpilot serving {settings.home} on http://{settings.host}:{bound_port}", highlight=False
    )
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(1)


def _tune_gc() -> None:
    """Fewer cyclic-GC passes: request handling allocates many short-lived, acyclic objects (parsed
    JSON); startup objects are frozen out of collections and the young generation is collected less often."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
