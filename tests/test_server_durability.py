"""Durability and the single writer: acknowledged events survive SIGKILL; replies wait for the ingestion
log, and the store takes logged requests in bulk;
``kpilot query`` and the metadata commands work while ``kpilot serve`` holds the store."""

from __future__ import annotations

import json
import stat
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.server_helpers import clean_env, kpilot_cmd, make_workspace, start_proc_server, start_thread_server

SPEC = {"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-02", "math": "total"}


def _batch(n: int, day: str = "2024-03-01") -> dict[str, object]:
    return {
        "batch": [
            {
                "type": "track",
                "event": "e",
                "userId": f"u{i % 7}",
                "messageId": str(uuid.uuid4()),
                "timestamp": f"{day}T12:00:00Z",
            }
            for i in range(n)
        ]
    }


def _cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        kpilot_cmd(home, *args), env=clean_env(), input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_acknowledged_events_survive_sigkill_and_query_works_while_serving(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    keys = make_workspace(home, ("alpha", "beta"))
    server = start_proc_server(home)
    info = json.loads((home / "server.json").read_text())
    assert stat.S_IMODE((home / "server.json").stat().st_mode) == 0o600
    assert info["pid"] == server.proc.pid

    # 12 concurrent clients, 50 events each; SIGKILL the moment the last reply arrived.
    def send(_: int) -> int:
        r = httpx.post(server.url + "/v1/batch", json=_batch(50), auth=(keys["alpha"], ""), timeout=60)
        return 50 if r.status_code == 200 else 0

    with ThreadPoolExecutor(12) as pool:
        acknowledged = sum(pool.map(send, range(12)))
    server.kill()
    assert acknowledged == 600
    assert (home / "server.json").exists()  # left behind by the killed server: stale, pid is dead

    # Restart: the stale server.json is replaced; `kpilot query` goes through the server.
    server = start_proc_server(home)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    through_server = _cli(home, "query", str(spec_file), "--project", "alpha")
    assert through_server.returncode == 0, through_server.stderr
    assert json.loads(through_server.stdout)["series"] == [
        {"date": "2024-03-01", "value": 600},
        {"date": "2024-03-02", "value": 0},
    ]
    # Errors come back in the CLI's shape, with its exit code.
    bad = _cli(home, "query", "-", "--project", "nope", stdin=json.dumps(SPEC))
    assert bad.returncode == 3
    assert json.loads(bad.stdout) == {"error": {"code": "not_found", "message": "no project named 'nope'"}}
    # Metadata commands do not need the store: they work while serving.
    keys_out = _cli(home, "keys", "list", "--json")
    assert keys_out.returncode == 0, keys_out.stderr
    assert {k["project"] for k in json.loads(keys_out.stdout)} == {"alpha", "beta"}
    r = httpx.post(
        server.url + "/v1/batch", json={"batch": [{"type": "track", "userId": "x"}]}, auth=(keys["beta"], "")
    )
    assert r.status_code == 200
    warnings = _cli(home, "ingestion", "warnings", "--json", "--project", "beta")
    assert warnings.returncode == 0, warnings.stderr
    assert [(w["kind"], w["project"], w["key_prefix"]) for w in json.loads(warnings.stdout)] == [
        ("invalid_event", "beta", keys["beta"][:10])
    ]

    # A graceful stop removes server.json; the same query then runs directly with identical output.
    assert server.terminate() in (0, -15), server.log()
    assert not (home / "server.json").exists()
    direct = _cli(home, "query", str(spec_file), "--project", "alpha")
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == through_server.stdout


def _applied(url: str) -> dict[str, object]:
    """/health once everything acknowledged is stored."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        health = httpx.get(url + "/health").json()
        if health["pending_events"] == 0:
            return health  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("the server did not store what it acknowledged")


@pytest.mark.slow
def test_retries_after_sigkill_are_deduplicated_with_the_id_index_in_run_files(tmp_path: Path) -> None:
    """With no memory for the id index, every id the writes need lives in run files beside the store; a
    killed server leaves them behind, the next one removes them, rebuilds what it needs from the store, and
    client retries of acknowledged events are still dropped."""
    home = tmp_path / "ws"
    keys = make_workspace(home, ("alpha",))
    env = {"KPILOT_ID_INDEX_MB": "0"}
    first, retried = _batch(200), _batch(100)
    server = start_proc_server(home, env=env)
    for body in (first, retried):
        assert httpx.post(server.url + "/v1/batch", json=body, auth=(keys["alpha"], "")).status_code == 200
    health = _applied(server.url)
    assert health["id_index_bytes"] == 0 and health["id_index_disk_bytes"] == 300 * 8
    (left,) = home.glob(".kpilot-ids-*")
    server.kill()
    assert left.exists()

    server = start_proc_server(home, env=env)
    fresh = _batch(50)
    for body in (retried, fresh, first):  # the client retries what it sent before the crash
        assert httpx.post(server.url + "/v1/batch", json=body, auth=(keys["alpha"], "")).status_code == 200
    health = _applied(server.url)
    assert health["writer"]["events_deduplicated"] == 300  # type: ignore[index]
    assert health["id_index_bytes"] == 0 and health["id_index_disk_bytes"] == 350 * 8
    assert not left.exists() and len(list(home.glob(".kpilot-ids-*"))) == 1
    assert server.terminate() in (0, -15), server.log()
    assert not list(home.glob(".kpilot-ids-*"))  # removed with the store's last writer
    spec = {**SPEC, "date_to": "2024-03-01"}
    out = _cli(home, "query", "-", "--project", "alpha", stdin=json.dumps(spec))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["series"] == [{"date": "2024-03-01", "value": 350}]


def test_serve_refuses_a_second_server_on_the_same_workspace(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    make_workspace(home)
    server = start_proc_server(home)
    try:
        second = _cli(home, "serve", "--port", "0")
        assert second.returncode == 2
        assert "already serves" in second.stderr
    finally:
        server.terminate()
    assert "Traceback" not in server.log()


def test_replies_wait_for_the_log_and_the_store_applies_requests_in_bulk(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    keys = make_workspace(home)
    server = start_thread_server(home)
    try:
        writer = server.app_state.writer
        replies: list[int] = []
        with server.ws.store._write_lock:  # the store takes nothing: the applier blocks in its first write
            threads = [
                threading.Thread(
                    target=lambda: replies.append(
                        httpx.post(
                            server.url + "/v1/batch", json=_batch(10), auth=(keys["alpha"], ""), timeout=60
                        ).status_code
                    )
                )
                for _ in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # Every request is acknowledged (it is in the log on disk) although none is in the store yet.
            assert replies == [200] * 8
            assert writer.pending_events == 80
            assert writer.positions["logged"] > writer.positions["applied"]
            assert server.ws.store.fetchall("SELECT count(*) FROM events") == [(0,)]
        assert writer.flush(timeout=60)
        assert server.ws.store.fetchall("SELECT count(*) FROM events") == [(80,)]
        assert writer.stats.requests == 8 and 1 <= writer.stats.log_flushes <= 8
        # The applier holds at most two groups while the store is locked: the one it is storing and the
        # one being prepared. Everything logged after those forms one more group: 8 requests, <= 3 commits.
        assert 1 <= writer.stats.commits <= 3
        assert writer.stats.largest_group >= 3
        assert writer.pending_events == 0
    finally:
        server.stop()


def test_host_and_port_from_environment(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    make_workspace(home)
    server = start_proc_server(home, args=(), env={"KPILOT_HOST": "127.0.0.1", "KPILOT_PORT": "0"})
    try:
        assert server.info.host == "127.0.0.1" and server.info.port > 0
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
    finally:
        server.terminate()
