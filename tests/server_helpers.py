"""Helpers for server tests: a workspace with keyed projects, and the server in a thread or a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.keys import create_key, project_by_name
from kpilot.server.app import create_app
from kpilot.server.discovery import SERVER_FILE, ServerInfo
from kpilot.server.settings import ServerSettings
from kpilot.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def make_workspace(
    home: Path, projects: tuple[str, ...] = ("alpha",), timezone: str = "UTC"
) -> dict[str, str]:
    """Create a workspace at ``home`` with ``projects``; returns project name -> a fresh write key."""
    keys: dict[str, str] = {}
    with Workspace.init(home) as ws:
        for name in projects:
            ws.create_project(name, timezone)
            keys[name] = create_key(ws.meta, project_by_name(ws.meta, name)).key
    return keys


@dataclass
class ThreadServer:
    """uvicorn serving the app on an ephemeral loopback port in a background thread (same process)."""

    home: Path
    settings: ServerSettings
    ws: Workspace = field(init=False)
    url: str = field(init=False)
    server: uvicorn.Server = field(init=False)
    thread: threading.Thread = field(init=False)

    def start(self) -> ThreadServer:
        self.ws = Workspace.open(self.home)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        app = create_app(self.settings, workspace=self.ws)
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none")
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def app_state(self) -> Any:
        return self.server.config.app.state.kpilot  # type: ignore[union-attr]

    def flush(self) -> None:
        """Wait until the server stored every event it acknowledged (it applies its log in the background)."""
        assert self.app_state.writer.flush(timeout=60), "the ingestion writer did not catch up"

    def query(self, project: str, spec: dict[str, Any]) -> dict[str, Any]:
        self.flush()
        return run_query(DuckDBEngine(self.ws.store), self.ws.project(project), parse_spec(spec))

    def sql(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        self.flush()
        return self.ws.store.fetchall(sql, params)


def start_thread_server(home: Path, **settings: Any) -> ThreadServer:
    return ThreadServer(home, ServerSettings(home=home, **settings)).start()


def kpilot_cmd(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kpilot", "--home", str(home), *args]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPILOT_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


@dataclass
class ProcServer:
    """``kpilot serve --port 0`` in a subprocess; its address is read from ``server.json``."""

    home: Path
    proc: subprocess.Popen[bytes]
    info: ServerInfo

    @property
    def url(self) -> str:
        return self.info.url

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        """SIGTERM and wait; uvicorn shuts down gracefully, then re-raises the signal (exit -15)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def log(self) -> str:
        return (self.home.parent / "serve.log").read_text()


def start_proc_server(
    home: Path,
    timeout: float = 60.0,
    args: tuple[str, ...] = ("--port", "0"),
    env: dict[str, str] | None = None,
) -> ProcServer:
    with (home.parent / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            kpilot_cmd(home, "serve", *args), env={**clean_env(), **(env or {})}, stdout=log, stderr=log
        )
    deadline = time.monotonic() + timeout
    path = home / SERVER_FILE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (home.parent / "serve.log").read_text()
            raise RuntimeError(f"kpilot serve exited with {proc.returncode}: {err}")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if data and data.get("pid") == proc.pid:
            info = ServerInfo(data["host"], data["port"], data["pid"], data["token"])
            _wait_health(info.url, deadline)
            return ProcServer(home, proc, info)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("kpilot serve did not write server.json in time")


def _wait_health(url: str, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server never became healthy")
