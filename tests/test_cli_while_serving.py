"""Every CLI command works while ``kpilot serve`` holds the workspace's DuckDB file, with the same output.

A real ``kpilot serve`` subprocess on an ephemeral loopback port; CLI commands run in this process (the
test never opens the store while the server runs, and checks that it could not). Each command's output
while serving is compared with the same command after the server stopped, or with a twin workspace that
never had a server.
"""

from __future__ import annotations

import difflib
import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from pyroaring import BitMap
from typer.testing import CliRunner

from kpilot.cli.main import app
from kpilot.errors import WorkspaceError
from kpilot.server.discovery import read_server_file
from kpilot.store.duckdb_store import EventStore
from kpilot.store.remote import ARROW_STREAM, RemoteStore, encode_query, read_ipc
from tests.server_helpers import ProcServer, make_workspace, start_proc_server

runner = CliRunner()


def _cli(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output.replace(str(home.resolve()), "<home>")


def _events(seed: int, n: int, *, bad: bool = True) -> str:
    """JSONL of Segment messages: tracks over several days, identifies with traits, aliases (person merges),
    an in-file duplicate and (optionally) a row that is rejected."""
    rnd = random.Random(seed)
    lines: list[dict[str, Any]] = []
    for i in range(n):
        user = rnd.randrange(25)
        ts = datetime(2024, 3, 1) + timedelta(minutes=rnd.randrange(10 * 24 * 60))
        who = {"userId": f"u{user}"} if rnd.random() < 0.6 else {"anonymousId": f"a{user}"}
        kind = rnd.choice(["track"] * 8 + ["identify", "alias"])
        msg: dict[str, Any] = {"type": kind, "messageId": f"s{seed}-{i}", "timestamp": ts.isoformat() + "Z"}
        if kind == "track":
            msg |= who | {
                "event": rnd.choice(["signup", "pageview", "purchase"]),
                "properties": {
                    "plan": rnd.choice(["free", "pro", None]),
                    "n": rnd.randrange(5),
                    "x": [1, {"y": 2}],
                },
            }
        elif kind == "identify":
            msg |= {"userId": f"u{user}", "anonymousId": f"a{user}", "traits": {"plan": "pro", "age": user}}
        else:
            msg |= {"userId": f"u{user}", "previousId": f"a{user}"}
        lines.append(msg)
    lines.append(dict(lines[0]))  # the same message id twice in one file
    text = "\n".join(json.dumps(m) for m in lines) + "\n"
    return text + ('{"type": "track", "userId": "u1"}\n' if bad else "")


@contextmanager
def _serving(home: Path) -> Iterator[ProcServer]:
    # the server runs with this process's settings that change results (the CLI here reads them too)
    same = {k: v for k, v in os.environ.items() if k == "KPILOT_ROLLUPS"}
    server = start_proc_server(home, env=same)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.terminate()


def _diff(args: tuple[str, ...], served: tuple[int, str], direct: tuple[int, str]) -> str:
    lines = difflib.unified_diff(
        direct[1].splitlines(), served[1].splitlines(), "without server", "while serving", lineterm=""
    )
    return (
        f"kpilot {' '.join(args)} differs while serving (exit {served[0]}, not {direct[0]}):\n"
        + "\n".join(lines)
    )


def _assert_store_locked(home: Path) -> None:
    """While serving, the store cannot be opened directly: the commands above really used the server."""
    with pytest.raises(WorkspaceError, match="lock"):
        EventStore(home / "events.duckdb", read_only=True)


READS: list[tuple[str, ...]] = [
    ("audit", "--json"),
    ("audit",),
    ("audit", "--by-day", "--from", "2024-03-02", "--to", "2024-03-05"),
    ("audit", "--project", "nope", "--json"),
    ("metrics", "eval", "dau", "--from", "2024-03-01", "--to", "2024-03-10", "--json"),
    ("metrics", "eval", "wau", "--from", "2024-03-01", "--to", "2024-03-10"),
    ("metrics", "eval", "dau_mau_stickiness", "--from", "2024-03-01", "--to", "2024-03-10", "--json"),
    ("metrics", "eval", "day_7_retention", "--from", "2024-03-01", "--to", "2024-03-03", "--json"),
    ("metrics", "eval", "marketing_spend", "--from", "2024-03-01", "--to", "2024-03-10", "--json"),
    ("metrics", "show", "dau"),
    ("project", "list", "--json"),
    ("project", "list"),
    ("keys", "list", "--json"),
    ("ingestion", "warnings", "--json"),
    ("query", "spec.json"),
]

SPEC = {
    "kind": "funnel",
    "steps": [{"event": "signup"}, {"event": "purchase"}],
    "date_from": "2024-03-01",
    "date_to": "2024-03-10",
    "breakdown": {"type": "event", "key": "plan"},
}

TYPES_SQL = """SELECT 12::HUGEINT AS h, sum(x) AS s, 1.25::DECIMAL(10, 2) AS d, DATE '2024-03-01' AS dt,
    TIMESTAMP '2024-03-01 10:11:12.123456' AS ts, INTERVAL 3 DAY AS iv, '{"a": [1]}'::JSON AS j,
    '0b0e4ad5-9e1f-4a3a-a0a4-5c6b1c2d3e4f'::UUID AS u, [1, 2] AS l, {'a': 1, 'b': 'x'} AS st, MAP {'k': 1} AS m,
    'bytes'::BLOB AS b, NULL AS n, true AS t, 3::UBIGINT AS ub, 'a'::ENUM('a', 'b') AS e, 2.5::DOUBLE AS f,
    $when + $gap AS later, $day AS day, $amount AS amount, $names AS names, $nothing AS nothing
    FROM (SELECT 1 AS x)"""
TYPES_PARAMS = {
    "when": datetime(2024, 3, 1, 12),
    "gap": timedelta(hours=36),
    "day": date(2024, 3, 2),
    "amount": Decimal("12.50"),
    "names": ["a", "b"],
    "nothing": None,
}


def _lake_contents(lake: Path) -> dict[str, Any]:
    manifest = json.loads((lake / "manifest.json").read_text())
    manifest.pop("exported_at")
    for p in manifest["projects"]:
        p.pop("exported_at")
    con = duckdb.connect()
    tables = {
        t: con.execute(
            f"SELECT * FROM read_parquet('{lake}/{t}/**/*.parquet', hive_partitioning = true) ORDER BY ALL"
        ).fetchall()
        for t in ("events", "person_distinct_ids", "person_property_writes")
    }
    con.close()
    return {"manifest": manifest, "tables": tables}


@pytest.mark.slow
def test_reads_while_serving_match_reads_without_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "ws"
    make_workspace(home, ("alpha",))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "events.jsonl").write_text(_events(1, 400))
    assert _cli(home, "import", "events", "events.jsonl", "-q")[0] == 5  # one row rejected
    Path("spec.json").write_text(json.dumps(SPEC))

    with _serving(home) as server:
        served = {args: _cli(home, *args) for args in READS}
        lake_served = _cli(home, "export", "lake", "lake-served", "--json")
        remote = RemoteStore(server.info, home / "events.duckdb", read_only=True)
        typed_served = remote.fetchall(TYPES_SQL, TYPES_PARAMS)
        remote.close()
        _assert_store_locked(home)
    assert read_server_file(home) is None

    direct = {args: _cli(home, *args) for args in READS}
    lake_direct = _cli(home, "export", "lake", "lake-direct", "--json")
    store = EventStore(home / "events.duckdb", read_only=True)
    typed_direct = store.fetchall(TYPES_SQL, TYPES_PARAMS)
    store.close()

    for args in READS:
        assert served[args] == direct[args], f"kpilot {' '.join(args)} differs while serving: {served[args]}"
    assert direct[("audit", "--json")][0] == 0
    assert json.loads(direct[("audit", "--json")][1])["totals"]["rejected"] == 1
    assert direct[("audit", "--project", "nope", "--json")][0] == 3
    assert json.loads(direct[("query", "spec.json")][1])["results"][0]["steps"]  # a real funnel

    assert lake_served[0] == lake_direct[0] == 0
    assert _lake_contents(tmp_path / "lake-served") == _lake_contents(tmp_path / "lake-direct")
    assert _lake_contents(tmp_path / "lake-direct")["tables"]["events"]

    assert typed_served == typed_direct
    assert [type(v) for v in typed_served[0]] == [type(v) for v in typed_direct[0]]


def _rollup_sets(store: EventStore) -> dict[tuple[Any, ...], list[int]]:
    """The persons of each (project, day, event) rollup set, whatever delta rows hold them, with absorbed
    persons replaced by their survivors (a rollup kept batch by batch holds the ids a person had when its
    events were written, plus the merges; one built at the end of a bulk import holds current ids)."""
    survivor: dict[tuple[int, int], int] = {
        (int(pid), int(a)): int(b)
        for pid, a, b in store.fetchall("SELECT project_id, absorbed, survivor FROM rollup_merges")
    }

    def current(pid: int, person: int) -> int:
        while (pid, person) in survivor:
            person = survivor[(pid, person)]
        return person

    sets: dict[tuple[Any, ...], set[int]] = {}
    for pid, day, event, blob in store.fetchall(
        "SELECT project_id, day, event, persons FROM rollup_persons WHERE project_id <> 2"
    ):
        sets.setdefault((pid, day, event), set()).update(current(pid, p) for p in BitMap.deserialize(blob))
    return {key: sorted(persons) for key, persons in sets.items()}


def _table_rows(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    store = EventStore(home / "events.duckdb", read_only=True)
    try:
        return {
            "events": store.fetchall(
                "SELECT project_id, uuid, event, distinct_id, timestamp, properties, uuid_hash FROM events "
                "WHERE project_id <> 2 ORDER BY ALL"
            ),
            "persons": store.fetchall("SELECT * FROM person_distinct_ids WHERE project_id <> 2 ORDER BY ALL"),
            "merges": store.fetchall(
                "SELECT project_id, from_person, into_person FROM person_merges ORDER BY ALL"
            ),
            "props": store.fetchall("SELECT * FROM person_property_writes ORDER BY ALL"),
            "stats": store.fetchall(
                "SELECT project_id, day, event, sum(accepted), sum(deduplicated) FROM ingest_stats "
                "WHERE project_id <> 2 GROUP BY ALL ORDER BY ALL"
            ),
            "spend": store.fetchall("SELECT * FROM spend ORDER BY ALL"),
            "feedback": store.fetchall("SELECT * EXCLUDE (sentiment) FROM feedback_items ORDER BY ALL"),
            "rollups": store.fetchall("SELECT project_id, timezone FROM rollup_projects ORDER BY ALL"),
            "rollup_sets": _rollup_sets(store),
            "feedback_merges": store.fetchall(
                "SELECT project_id, item_id, into_item_id FROM feedback_merges ORDER BY ALL"
            ),
        }
    finally:
        store.close()


WRITES: list[tuple[str, ...]] = [
    ("import", "events", "first.jsonl", "--batch-rows", "60", "-q"),
    ("import", "events", "first.jsonl", "--batch-rows", "60", "-q", "--json"),  # all duplicates now
    ("import", "events", "second.jsonl", "first.jsonl", "--json"),
    ("import", "events", "second.jsonl", "missing.jsonl"),
    ("import", "spend", "spend.csv"),
    ("import", "spend", "spend.csv", "--json"),
    ("import", "feedback", "feedback.jsonl"),
    ("import", "spend", "missing.csv", "--json"),
    ("feedback", "merge", "r2", "r1"),
    ("feedback", "merge", "zz", "r1", "--json"),
    ("feedback", "status", "r1", "planned", "--json"),
    ("feedback", "status", "r1", "someday"),
    ("metrics", "eval", "marketing_spend", "--from", "2024-03-01", "--to", "2024-03-10", "--json"),
    ("project", "create", "beta", "--timezone", "Europe/Paris", "--json"),
    ("project", "create", "beta"),
    ("import", "events", "second.jsonl", "--project", "beta", "--json"),
    ("metrics", "eval", "dau", "--from", "2024-03-01", "--to", "2024-03-10", "--project", "beta", "--json"),
    ("audit", "--json"),
    ("init", "--json"),
]
"""Commands that change the workspace, in order (each runs with ``--project alpha`` unless it names one)."""

EXIT_CODES = [5, 5, 5, 1, 5, 5, 0, 1, 0, 3, 0, 1, 0, 0, 2, 0, 0, 0, 0]


def _with_project(args: tuple[str, ...]) -> tuple[str, ...]:
    if args[0] in ("init", "project") or "--project" in args:
        return args
    return (*args, "--project", "alpha")


@pytest.mark.slow
def test_writes_while_serving_store_what_direct_writes_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served_home, direct_home = tmp_path / "served" / "ws", tmp_path / "direct" / "ws"
    keys = make_workspace(served_home, ("alpha", "side"))
    make_workspace(direct_home, ("alpha", "side"))
    monkeypatch.chdir(tmp_path)
    Path("first.jsonl").write_text(_events(2, 300))
    Path("second.jsonl").write_text(_events(3, 150, bad=False))
    Path("spend.csv").write_text("date,channel,amount\n2024-03-01,google,100\n2024-03-02,google,oops\n")
    feedback = [
        {
            "item_id": "r1",
            "kind": "feature_request",
            "text": "dark mode",
            "votes": 2,
            "created_at": "2024-03-01",
        },
        {
            "item_id": "r2",
            "kind": "feature_request",
            "text": "dark theme",
            "votes": 3,
            "created_at": "2024-03-02",
        },
    ]
    Path("feedback.jsonl").write_text("".join(json.dumps(r) + "\n" for r in feedback))

    with _serving(served_home) as server:
        # the server goes on ingesting over HTTP meanwhile (into another project, left out of the comparison)
        live = {"userId": "web", "event": "live", "timestamp": "2024-03-05T00:00:00Z"}
        for i in range(3):
            r = httpx.post(
                server.url + "/v1/track", json=live | {"messageId": f"live-{i}"}, auth=(keys["side"], "")
            )
            assert r.status_code == 200
        served = [_cli(served_home, *_with_project(args)) for args in WRITES]
        demo = _cli(served_home, "demo", "--persons", "5", "--days", "2")
        _assert_store_locked(served_home)
        pid = server.proc.pid
    direct = [_cli(direct_home, *_with_project(args)) for args in WRITES]

    for args, got, want in zip(WRITES, served, direct, strict=True):
        assert got == want, _diff(args, got, want)
    assert [code for code, _ in direct] == EXIT_CODES
    assert "Imported" in direct[0][1]
    again = json.loads(direct[1][1])  # the same file again: nothing new
    assert again["imported"] == 0 and again["deduplicated"] == again["rows_read"] - 1  # - the bad row
    assert json.loads(direct[2][1])["imported"] > 0
    assert "missing.jsonl: no such file" in direct[3][1]
    assert "spend.csv:3: column 'amount' value 'oops' is not a number" in direct[4][1].replace("\n", "")
    assert json.loads(direct[7][1])["error"]["message"] == "missing.csv: no such file"
    assert json.loads(direct[12][1])["value"] == 100.0

    assert demo[0] == 2 and f"pid {pid}" in demo[1] and "stop it" in demo[1]
    served_rows, direct_rows = _table_rows(served_home), _table_rows(direct_home)
    assert served_rows == direct_rows
    assert direct_rows["merges"] and direct_rows["props"] and direct_rows["feedback_merges"]
    assert direct_rows["rollup_sets"] and [r[1] for r in direct_rows["rollups"]] == [
        "UTC",
        "UTC",
        "Europe/Paris",
    ]
    store = EventStore(served_home / "events.duckdb", read_only=True)
    assert store.fetchall("SELECT count(*) FROM events WHERE event = 'live'") == [(3,)]
    store.close()


REFUSED = [
    "DELETE FROM events",
    "SELECT 1; DELETE FROM events",
    "DROP TABLE events",
    "INSERT INTO events SELECT * FROM events",
    "UPDATE events SET event = 'x'",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH 'other.duckdb' AS other",
    "SET threads = 1",
    "CHECKPOINT",
    "PRAGMA version",
    "BEGIN TRANSACTION",
    "EXPLAIN SELECT 1",
    "",
]


@pytest.mark.slow
def test_sql_endpoint_answers_only_the_admin_and_only_reads(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    make_workspace(home)
    (tmp_path / "e.jsonl").write_text(_events(4, 50, bad=False))
    assert _cli(home, "import", "events", str(tmp_path / "e.jsonl"), "-q")[0] == 0
    count = "SELECT count(*) AS n FROM events"
    copy_to = tmp_path / "copied.csv"
    with _serving(home) as server:
        url = server.url + "/api/sql"
        admin = {"Authorization": f"Bearer {server.info.token}", "Content-Type": ARROW_STREAM}
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {server.info.token}"},
        ):
            r = httpx.post(url, content=encode_query(count), headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        for path in ("/api/batches/1", "/api/lake", "/api/projects/alpha/imports/spend"):
            assert httpx.post(server.url + path, content=b"{}").status_code == 401
        r = httpx.post(url, content=encode_query(count), headers=admin)
        assert r.status_code == 200 and r.headers["content-type"] == ARROW_STREAM
        assert read_ipc(r.content).to_pylist() == [{"n": 50}]  # the in-file duplicate is dropped

        for statement in [*REFUSED, f"COPY events TO '{copy_to}'"]:
            r = httpx.post(url, content=encode_query(statement), headers=admin)
            assert r.status_code == 400 and r.json()["error"]["code"] == "read_only", statement
        r = httpx.post(url, content=b"not arrow", headers=admin)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"

        remote = RemoteStore(server.info, home / "events.duckdb", read_only=True)
        with pytest.raises(WorkspaceError, match=rf"pid {server.proc.pid}\): only SELECT statements"):
            remote.fetchall("DELETE FROM events")
        with pytest.raises(duckdb.ParserException):
            remote.fetchall("SELEC 1")
        with pytest.raises(duckdb.CatalogException):
            remote.fetchall("SELECT * FROM no_such_table")
        with pytest.raises(WorkspaceError, match="stop the server"):
            remote.write_arrow  # noqa: B018 - the store's other methods need the file itself
        with pytest.raises(WorkspaceError, match="read-only"):
            remote.write_batch(1, [])
        cur = remote.cursor()
        assert cur.execute("SELECT 1 AS a, 2 AS a").fetchone() == (1, 2)
        assert [d[0] for d in cur.description or []] == ["a", "a"]
        assert cur.execute(count).fetchall() == [(50,)]
        cur.close()
        remote.close()
    assert not copy_to.exists()
    store = EventStore(home / "events.duckdb", read_only=True)
    assert store.fetchall(count) == [(50,)]
    store.close()


def test_rollup_reads_through_the_server_see_its_later_writes(tmp_path: Path) -> None:
    """A process reading through a running server keeps no rollup cache: the server's writes happen in
    another process, whose write generations it cannot see (a cache here would answer stale)."""
    from kpilot.compute.engine import DuckDBEngine, run_query
    from kpilot.compute.spec import parse_spec
    from kpilot.workspace import ProjectInfo

    home = tmp_path / "ws"
    key = make_workspace(home, ("alpha",))["alpha"]
    spec = parse_spec({"kind": "trends", "math": "dau", "date_from": "2024-03-01", "date_to": "2024-03-02"})
    project = ProjectInfo(id=1, name="alpha", timezone="UTC", week_start="monday")

    def send(user: str) -> None:
        msg = {"type": "track", "userId": user, "event": "x", "timestamp": "2024-03-01T12:00:00Z"}
        r = httpx.post(f"{server.url}/v1/batch", json={"batch": [msg]}, auth=(key, ""))
        assert r.status_code == 200
        remote.flush_ingestion()

    with _serving(home) as server:
        remote = RemoteStore(server.info, home / "events.duckdb", read_only=True)
        engine = DuckDBEngine(remote)  # type: ignore[arg-type]
        send("a")
        first = run_query(engine, project, spec)
        assert engine.last_source == "rollups"
        send("b")
        second = run_query(engine, project, spec)
        remote.close()
    assert [p["value"] for p in first["series"]] == [1, 0]
    assert [p["value"] for p in second["series"]] == [2, 0]
