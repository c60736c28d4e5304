"""The ingestion log: records survive as written, torn tails are cut, positions never go back, and the server
replays exactly what the store lacks (per project) and sets aside what the store refuses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kpilot.keys import list_warnings, project_by_name
from kpilot.server.ingest_log import IngestLog, LogCorrupt
from kpilot.server.writer import LogRecord
from kpilot.workspace import Workspace
from tests.server_helpers import ThreadServer, make_workspace, start_thread_server


def _payloads(n: int, size: int = 100) -> list[bytes]:
    return [f"record-{i}-".encode() + b"x" * size for i in range(n)]


def test_records_round_trip_across_segments_and_applied_segments_are_deleted(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path, segment_bytes=1000)
    positions = [p for chunk in (_payloads(5), _payloads(7), _payloads(3)) for p in log.append(chunk)]
    assert positions == sorted(set(positions)) and positions[-1] == log.end
    # 116-byte records, 1000-byte segments: the append that passes 1000 bytes closes the first segment
    assert log.segment_count() == 2
    assert [p for p, _ in log.records()] == positions
    assert [payload for _, payload in log.records()] == _payloads(5) + _payloads(7) + _payloads(3)
    assert [p for p, _ in log.records(after=positions[9])] == positions[10:]
    assert log.discard_through(positions[10]) == 0  # the first segment still holds record 11
    assert log.discard_through(positions[11]) == 1
    assert [p for p, _ in log.records(after=positions[9])] == positions[12:]
    assert [p for p, _ in log.records()] == positions[12:]
    log.close()
    reopened = IngestLog.open(tmp_path, segment_bytes=1000)
    assert reopened.end == positions[-1]
    assert [p for p, _ in reopened.records()] == positions[12:]
    reopened.close()


def test_a_torn_tail_is_cut_and_appending_goes_on(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path)
    positions = log.append(_payloads(3))
    log.close()
    (segment,) = tmp_path.glob("*.log")
    with segment.open("ab") as f:  # a crash in the middle of the next append
        f.write(b"\x10\x00\x00\x00\x99\x99\x99\x99half a rec")
    log = IngestLog.open(tmp_path)
    assert segment.stat().st_size == positions[-1]
    assert log.end == positions[-1]
    more = log.append([b"after the crash"])
    assert [p for p, _ in log.records()] == [*positions, *more]
    assert [payload for _, payload in log.records()][-1] == b"after the crash"
    log.close()


def test_damage_in_an_older_segment_is_an_error_not_a_skip(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path, segment_bytes=300)
    log.append(_payloads(3))
    log.append(_payloads(3))
    log.close()
    oldest = sorted(tmp_path.glob("*.log"))[0]
    data = bytearray(oldest.read_bytes())
    data[12] ^= 0xFF  # a flipped byte inside the first payload
    oldest.write_bytes(bytes(data))
    log = IngestLog.open(tmp_path, segment_bytes=300)
    with pytest.raises(LogCorrupt, match="damaged record"):
        list(log.records())
    log.close()


def test_positions_never_go_below_what_was_applied(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path, at_least=10_000)
    (position,) = log.append([b"one"])
    assert position > 10_000
    log.close()


def test_a_failed_flush_appends_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = IngestLog.open(tmp_path)
    first = log.append([b"kept"])

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", broken)
        with pytest.raises(OSError, match="No space"):
            log.append([b"lost", b"also lost"])
    assert log.end == first[-1]
    second = log.append([b"next"])
    assert [payload for _, payload in log.records()] == [b"kept", b"next"]
    assert [p for p, _ in log.records()] == [*first, *second]
    log.close()


def _record(project_id: int, key_id: int, user: str, n: int, tag: str) -> LogRecord:
    messages: list[Any] = [
        {
            "type": "track",
            "event": "replayed",
            "userId": user,
            "messageId": f"{tag}-{i}",
            "timestamp": "2024-03-01T12:00:00Z",
        }
        for i in range(n)
    ]
    return LogRecord(project_id, key_id, "segment", datetime(2024, 3, 1, 12, 0, 1), messages)


def test_start_replays_what_the_store_lacks_per_project(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    make_workspace(home, ("alpha", "beta"))
    with Workspace.open(home) as ws:
        alpha, beta = (project_by_name(ws.meta, n) for n in ("alpha", "beta"))
    # What a server killed right after acknowledging four requests leaves behind: the log, and a store that
    # took only alpha's first request (its applied position says so).
    log = IngestLog.open(home / "ingest-log")
    records = [
        _record(alpha.id, 1, "a1", 3, "a-first"),
        _record(beta.id, 2, "b1", 2, "b-first"),
        _record(alpha.id, 1, "a2", 4, "a-second"),
        _record(beta.id, 2, "b2", 1, "b-second"),
    ]
    positions = log.append([r.encode() for r in records])
    log.close()
    with Workspace.open(home) as ws:
        cur = ws.store.cursor()
        cur.execute("CREATE TABLE ingest_log_applied (project_id INTEGER NOT NULL, position BIGINT NOT NULL)")
        cur.execute("INSERT INTO ingest_log_applied VALUES (?, ?)", [alpha.id, positions[0]])
        cur.close()

    server = start_thread_server(home)
    try:
        writer = server.app_state.writer
        assert writer.stats.replayed_requests == 3
        stored = server.sql("SELECT project_id, distinct_id, count(*) FROM events GROUP BY ALL ORDER BY ALL")
        # alpha's first request counted as applied, so it is not stored again (here: not at all)
        assert stored == [(alpha.id, "a2", 4), (beta.id, "b1", 2), (beta.id, "b2", 1)]
        assert writer.positions["logged"] == writer.positions["applied"] == positions[-1]
        assert sorted(server.sql("SELECT project_id, position FROM ingest_log_applied")) == sorted(
            [(alpha.id, positions[2]), (beta.id, positions[3])]
        )
    finally:
        server.stop()
    # A clean stop leaves the log applied and empty of records; the next start replays nothing and carries
    # on from the same position.
    server = start_thread_server(home)
    try:
        assert server.app_state.writer.stats.replayed_requests == 0
        assert server.app_state.writer.positions["logged"] >= positions[-1]
    finally:
        server.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ThreadServer, tuple[str, str]]]:
    """A server on a fresh one-project workspace, and the project's write key as Basic auth."""
    keys = make_workspace(tmp_path / "ws")
    server = start_thread_server(tmp_path / "ws")
    try:
        yield server, (keys["alpha"], "")
    finally:
        server.stop()


def test_a_request_the_store_refuses_is_set_aside_and_the_rest_goes_on(
    served: tuple[ThreadServer, tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, auth = served
    home = server.home
    store = server.ws.store
    real = store.write_arrow

    def refusing(project_id: int, table: Any, *args: Any, **kwargs: Any) -> Any:
        if "poison" in table.column("distinct_id").to_pylist():
            raise RuntimeError("refused")
        return real(project_id, table, *args, **kwargs)

    monkeypatch.setattr(store, "write_arrow", refusing)
    bad = {"batch": [{"type": "track", "event": "e", "userId": "poison", "messageId": "p1"}]}
    good = {"batch": [{"type": "track", "event": "e", "userId": "fine", "messageId": "g1"}]}
    assert httpx.post(server.url + "/v1/batch", json=bad, auth=auth).status_code == 200
    assert httpx.post(server.url + "/v1/batch", json=good, auth=auth).status_code == 200
    assert server.sql("SELECT distinct_id FROM events") == [("fine",)]
    assert server.app_state.writer.stats.failed_records == 1
    (line,) = (home / "ingest-log" / "failed.jsonl").read_bytes().splitlines()
    kept = orjson.loads(line)
    assert kept["record"]["m"][0]["userId"] == "poison" and kept["position"] > 0
    warnings = list_warnings(server.ws.meta, project_by_name(server.ws.meta, "alpha"))
    assert [w.kind for w in warnings] == ["apply_failed"]


def test_the_applier_survives_an_unexpected_error(
    served: tuple[ThreadServer, tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, auth = served
    writer = server.app_state.writer
    real = writer._apply
    calls: list[int] = []

    def flaky(prepared: Any) -> bool:
        calls.append(len(prepared))
        if len(calls) == 1:
            raise RuntimeError("unexpected")
        return bool(real(prepared))

    monkeypatch.setattr(writer, "_apply", flaky)
    body = {"batch": [{"type": "track", "event": "e", "userId": "u", "messageId": "m1"}]}
    assert httpx.post(server.url + "/v1/batch", json=body, auth=auth).status_code == 200
    assert server.sql("SELECT distinct_id FROM events") == [("u",)]
    assert len(calls) == 2  # failed once, then stored on the retry
    assert writer._apply_thread.is_alive()
