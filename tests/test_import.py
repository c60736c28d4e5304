"""Bulk import: formats, shapes, rejected rows, dedupe and atomic batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kpilot.cli.main import app
from kpilot.collect.importer import import_events
from kpilot.meta.models import ImportRejection, ImportRun
from tests.conftest import Env, values

DAY = {"kind": "trends", "date_from": "2024-05-01", "date_to": "2024-05-02"}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


SEGMENT_ROWS = [
    {
        "type": "track",
        "event": "signup",
        "anonymousId": "anon",
        "messageId": "s1",
        "timestamp": "2024-05-01T08:00:00Z",
        "properties": {"plan": "free"},
        "context": {"campaign": {"source": "google"}},
    },
    {
        "type": "identify",
        "anonymousId": "anon",
        "userId": "u1",
        "messageId": "s2",
        "timestamp": "2024-05-01T08:01:00Z",
        "traits": {"email": "a@example.com"},
    },
    {"type": "page", "userId": "u1", "name": "Home", "messageId": "s3", "timestamp": "2024-05-02T08:00:00Z"},
    {
        "type": "screen",
        "anonymousId": "anon2",
        "anonymousId_extra": 1,
        "messageId": "s4",
        "timestamp": "2024-05-02T09:00:00Z",
    },
]


def test_jsonl_segment_import_maps_calls_and_merges(env: Env, tmp_path: Path) -> None:
    report = import_events(env.ws, env.project, [write_jsonl(tmp_path / "seg.jsonl", SEGMENT_ROWS)])
    assert (report.rows_read, report.imported, report.rejected) == (4, 4, 0)
    names = env.ws.store.fetchall("SELECT event FROM events ORDER BY timestamp")
    assert [n[0] for n in names] == ["signup", "$identify", "$pageview", "$screen"]
    assert values(env.query({**DAY, "math": "dau"})) == [1, 2]
    utm = env.query({**DAY, "event": "signup", "filters": [{"key": "utm_source", "value": "google"}]})
    assert values(utm) == [1, 0]
    email = env.query(
        {**DAY, "math": "dau", "filters": [{"key": "email", "type": "person", "operator": "is_set"}]}
    )
    assert values(email) == [1, 1]


def test_reimport_adds_nothing(env: Env, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "seg.jsonl", SEGMENT_ROWS)
    import_events(env.ws, env.project, [path])
    again = import_events(env.ws, env.project, [path])
    assert (again.imported, again.deduplicated) == (0, 4)
    assert env.ws.store.fetchall("SELECT count(*) FROM events")[0][0] == 4


def test_bad_rows_are_reported_with_line_and_reason_and_good_rows_kept(env: Env, tmp_path: Path) -> None:
    rows: list[Any] = [
        {"event": "ok", "distinct_id": "a", "timestamp": "2024-05-01T10:00:00Z"},
        "{not json",
        {"event": "", "distinct_id": "a", "timestamp": "2024-05-01T10:00:00Z"},
        {"event": "x", "timestamp": "2024-05-01T10:00:00Z"},
        {"event": "x", "distinct_id": "a", "timestamp": "yesterday"},
        {"type": "track", "userId": "a", "timestamp": "2024-05-01T10:00:00Z"},
        {"type": "identify", "timestamp": "2024-05-01T10:00:00Z"},
        {"event": "ok", "distinct_id": "b", "timestamp": "2024-05-01T11:00:00Z"},
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    report = import_events(env.ws, env.project, [path])
    assert (report.imported, report.rejected) == (2, 6)
    reasons = {r.line: r.reason for r in report.rejections}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7]
    assert "invalid JSON" in reasons[2]
    assert "event name is missing" in reasons[3]
    assert "distinct_id is missing" in reasons[4]
    assert "not an ISO 8601 timestamp" in reasons[5]
    assert "no event name" in reasons[6]
    assert "neither userId nor anonymousId" in reasons[7]
    with env.ws.meta.session() as s:
        stored = s.query(ImportRejection).order_by(ImportRejection.line).all()
        assert [(r.file, r.line) for r in stored] == [(str(path), n) for n in (2, 3, 4, 5, 6, 7)]
        run = s.query(ImportRun).one()
        assert (run.status, run.rows_imported, run.rows_rejected) == ("done", 2, 6)


def test_csv_with_flattened_properties(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event,distinct_id,timestamp,uuid,properties.plan,properties.seats,$set\n"
        'signup,a,2024-05-01T10:00:00Z,c1,pro,3,"{""country"": ""FR""}"\n'
        "signup,b,2024-05-01T10:00:00Z,c2,free,1,\n"
        "signup,,2024-05-01T10:00:00Z,c3,free,1,\n"
    )
    report = import_events(env.ws, env.project, [path])
    assert (report.imported, report.rejected) == (2, 1)
    assert report.rejections[0].line == 4
    big = env.query({**DAY, "filters": [{"key": "seats", "operator": "gte", "value": 2}]})
    assert values(big) == [1, 0]
    fr = env.query({**DAY, "filters": [{"key": "country", "type": "person", "value": "FR"}]})
    assert values(fr) == [1, 0]


def test_parquet_posthog_shape(env: Env, tmp_path: Path) -> None:
    table = pa.table(
        {
            "event": ["$pageview", "$identify", "$pageview", None],
            "distinct_id": ["anon", "u1", "u1", "u2"],
            "uuid": ["p1", "p2", "p3", "p4"],
            "timestamp": [
                "2024-05-01T10:00:00Z",
                "2024-05-01T10:05:00Z",
                "2024-05-02T10:00:00Z",
                "2024-05-02T10:00:00Z",
            ],
            "properties": [
                json.dumps({}),
                json.dumps({"$anon_distinct_id": "anon"}),
                json.dumps({}),
                json.dumps({}),
            ],
        }
    )
    pq.write_table(table, tmp_path / "ph.parquet")
    report = import_events(env.ws, env.project, [tmp_path / "ph.parquet"])
    assert (report.imported, report.rejected) == (3, 1)
    assert report.rejections[0].line == 4
    assert values(env.query({**DAY, "math": "dau"})) == [1, 1]


def test_interrupted_import_keeps_only_whole_batches_and_resumes(env: Env, tmp_path: Path) -> None:
    rows = [
        {"event": "e", "distinct_id": f"u{i}", "uuid": f"id{i}", "timestamp": "2024-05-01T10:00:00Z"}
        for i in range(10)
    ]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    calls = {"n": 0}

    def progress(_path: Path, _done: int, _total: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second batch committed

    with pytest.raises(KeyboardInterrupt):
        import_events(env.ws, env.project, [path], batch_rows=3, progress=progress)
    stored = env.ws.store.fetchall("SELECT count(*) FROM events")[0][0]
    assert stored == 6  # two whole batches of 3, nothing of the third
    with env.ws.meta.session() as s:
        assert s.query(ImportRun).one().status == "interrupted"
    report = import_events(env.ws, env.project, [path], batch_rows=3)
    assert (report.imported, report.deduplicated) == (4, 6)
    assert env.ws.store.fetchall("SELECT count(*) FROM events")[0][0] == 10


def test_failed_batch_writes_nothing(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_jsonl(
        tmp_path / "x.jsonl", [{"event": "e", "distinct_id": "u", "timestamp": "2024-05-01T10:00:00Z"}]
    )
    store = env.ws.store

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_resolve_identity", boom)
    with pytest.raises(RuntimeError):
        import_events(env.ws, env.project, [path])
    monkeypatch.undo()
    assert store.fetchall("SELECT count(*) FROM events")[0][0] == 0
    assert store.fetchall("SELECT count(*) FROM person_distinct_ids")[0][0] == 0


def test_cli_import_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    home = ["--home", str(tmp_path / "ws")]
    assert runner.invoke(app, [*home, "init"]).exit_code == 0
    assert runner.invoke(app, [*home, "project", "create", "p"]).exit_code == 0
    good = write_jsonl(
        tmp_path / "good.jsonl", [{"event": "e", "distinct_id": "u", "timestamp": "2024-05-01T10:00:00Z"}]
    )
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"event": "e", "timestamp": "2024-05-01T10:00:00Z"}])
    ok = runner.invoke(app, [*home, "import", "events", str(good), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["imported"] == 1
    rejected = runner.invoke(app, [*home, "import", "events", str(bad)])
    assert rejected.exit_code == 5
    assert "bad.jsonl:1: distinct_id is missing" in rejected.output
    missing = runner.invoke(app, [*home, "import", "events", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code != 0
    assert "no such file" in missing.output


@pytest.mark.parametrize("columnar", [True, False])
def test_timestamps_at_the_ends_of_the_calendar_are_stored_or_rejected_never_crash(
    env: Env, tmp_path: Path, columnar: bool
) -> None:
    rows = [
        {"event": "a", "distinct_id": "u", "uuid": "1", "timestamp": "0001-01-01T00:00:00Z"},
        {"event": "a", "distinct_id": "u", "uuid": "2", "timestamp": "9999-12-31T23:59:59Z"},
        {"event": "a", "distinct_id": "u", "uuid": "3", "timestamp": "0001-01-01T00:00:00+01:00"},
        {"event": "a", "distinct_id": "u", "uuid": "4", "timestamp": "2024-03-01T00:00:00Z"},
    ]
    path = tmp_path / "ends.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = import_events(env.ws, env.project, [path], columnar=columnar)
    assert (report.imported, report.rejected) == (3, 1)
    assert report.rejections[0].line == 3 and "out of range" in report.rejections[0].reason
    again = import_events(env.ws, env.project, [path], columnar=columnar)
    assert (again.imported, again.deduplicated) == (0, 3)  # the dedupe window clamps at both ends


def test_rows_with_one_id_and_one_timestamp_keep_the_first_in_the_batch(env: Env, tmp_path: Path) -> None:
    rows = [
        {"event": f"e{i}", "distinct_id": "u", "uuid": "same", "timestamp": "2024-03-01T00:00:00Z"}
        for i in range(50)
    ]
    path = tmp_path / "ties.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    import_events(env.ws, env.project, [path])
    assert env.ws.store.fetchall("SELECT event FROM events") == [("e0",)]
