"""Secret keys and the REST import API (``POST /api/v1/projects/{project}/imports/{source}``)."""

from __future__ import annotations

import gzip
import io
import json
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from alembic import command
from sqlalchemy import insert, inspect, select, text
from typer.testing import CliRunner

from kpilot.catalog.evaluate import evaluate_metric
from kpilot.catalog.loader import load_catalog
from kpilot.cli.main import app
from kpilot.compute.engine import DuckDBEngine
from kpilot.errors import KpilotError
from kpilot.keys import (
    KeyKind,
    KeyOwner,
    create_key,
    hash_key,
    list_keys,
    open_metadata,
    project_by_name,
    resolve_key,
    revoke_key,
)
from kpilot.meta.db import MetadataDB, _alembic_config
from kpilot.meta.models import ApiKey, ImportRejection, ImportRun, Project, utcnow
from kpilot.revenue.schema import TABLES
from kpilot.server.deps import SECRET_KEY_REFUSED
from kpilot.server.imports_api import IMPORT_SOURCES
from kpilot.store.duckdb_store import EventStore
from kpilot.workspace import Workspace
from tests.pg_server import find_pg_bin, postgres_server
from tests.server_helpers import ThreadServer, make_workspace, start_proc_server, start_thread_server

runner = CliRunner()


def _cli(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.stdout


# ---- secret keys ------------------------------------------------------------------------------------


def test_secret_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    write_keys = make_workspace(home, ("alpha", "beta"))
    code, out = _cli(
        home, "keys", "create", "--kind", "secret", "--project", "alpha", "--name", "etl", "--json"
    )
    assert code == 0
    created = json.loads(out)
    key = created["key"]
    assert key.startswith("kpsk_") and len(key) == 5 + 43  # 256 random bits
    assert created["kind"] == "secret" and created["prefix"] == key[:12] and created["project"] == "alpha"
    assert key.encode() not in (home / "metadata.sqlite").read_bytes()  # stored hashed only

    meta = open_metadata(home, None)
    alpha = project_by_name(meta, "alpha")
    with meta.session() as s:
        row = s.get(ApiKey, created["id"])
        assert row is not None and row.key_hash == hash_key(key) and row.kind == "secret"
    # a secret key is not a write key (what ingestion resolves), and a write key is not a secret key
    assert resolve_key(meta, key) is None
    assert resolve_key(meta, key, KeyKind.SECRET) == KeyOwner(created["id"], alpha.id, KeyKind.SECRET)
    assert resolve_key(meta, key, None) == KeyOwner(created["id"], alpha.id, KeyKind.SECRET)
    assert resolve_key(meta, write_keys["alpha"], KeyKind.SECRET) is None
    assert resolve_key(meta, write_keys["alpha"]) == KeyOwner(1, alpha.id)

    code, out = _cli(home, "keys", "list", "--project", "alpha", "--json")
    assert [(k["kind"], k["prefix"]) for k in json.loads(out)] == [
        ("write", write_keys["alpha"][:10]),
        ("secret", key[:12]),
    ]
    code, out = _cli(home, "keys", "list", "--project", "alpha")
    assert code == 0 and "secret" in out and "write" in out and key[:12] in out
    code, out = _cli(home, "keys", "create", "--kind", "secret", "--project", "alpha")
    assert code == 0 and "Secret key for project" in out and "never in a web page" in " ".join(out.split())
    code, out = _cli(home, "keys", "create", "--project", "alpha", "--json")  # default: a write key
    assert json.loads(out)["kind"] == "write" and json.loads(out)["key"].startswith("kp_")
    code, _ = _cli(home, "keys", "create", "--kind", "admin", "--project", "alpha")
    assert code == 2

    code, out = _cli(home, "keys", "revoke", key[:12], "--project", "beta", "--json")
    assert code == 3
    code, out = _cli(home, "keys", "revoke", key, "--project", "alpha", "--json")  # by the whole key
    assert code == 0 and json.loads(out)["revoked_at"] is not None and json.loads(out)["kind"] == "secret"
    assert resolve_key(meta, key, None) is None
    meta.close()


def _meta_at_0002(url: str) -> MetadataDB:
    """A metadata database migrated to revision 0002 only (before key kinds), with a project and a key."""
    meta = MetadataDB(url)
    cfg = _alembic_config(url)
    with meta.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    now = utcnow()
    with meta.engine.begin() as conn:
        conn.execute(
            insert(Project.__table__).values(
                name="alpha", timezone="UTC", week_start="monday", created_at=now
            )
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (project_id, key_hash, prefix, name, created_at) "
                "SELECT id, :hash, 'kp_old1234', 'old', :now FROM projects"
            ),
            {"hash": hash_key("kp_old-key"), "now": now},
        )
    return meta


def _check_key_kind_migration(meta: MetadataDB, url: str) -> None:
    meta.migrate()
    columns = {c["name"] for c in inspect(meta.engine).get_columns("api_keys")}
    assert columns == set(ApiKey.__table__.columns.keys())
    assert resolve_key(meta, "kp_old-key") == KeyOwner(1, 1, KeyKind.WRITE)  # existing keys are write keys
    project = project_by_name(meta, "alpha")
    secret = create_key(meta, project, "etl", KeyKind.SECRET)
    assert [k.kind for k in list_keys(meta)] == [KeyKind.WRITE, KeyKind.SECRET]
    assert resolve_key(meta, secret.key, KeyKind.SECRET) is not None
    # downgrading must not turn secret keys into write keys: they are deleted
    cfg = _alembic_config(url)
    with meta.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    with meta.engine.connect() as conn:
        assert conn.execute(select(text("id")).select_from(text("api_keys"))).scalars().all() == [1]
    meta.migrate()  # and up again
    assert resolve_key(meta, "kp_old-key") == KeyOwner(1, 1, KeyKind.WRITE)
    assert resolve_key(meta, secret.key, None) is None


def test_key_kind_migration_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metadata.sqlite'}"
    meta = _meta_at_0002(url)
    try:
        _check_key_kind_migration(meta, url)
    finally:
        meta.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    with postgres_server() as url:
        yield url


@pytest.mark.postgres
def test_key_kind_migration_on_postgres(pg_url: str) -> None:
    meta = _meta_at_0002(pg_url)
    try:
        _check_key_kind_migration(meta, pg_url)
    finally:
        meta.close()


# ---- the REST import API ----------------------------------------------------------------------------

API = "/api/v1/projects/{project}/imports/{source}"


def _events() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(40):
        rows.append(
            {
                "type": "track",
                "event": "signup" if i % 7 == 0 else "pageview",
                "userId": f"u{i % 6}",
                "messageId": f"m{i}",
                "timestamp": f"2024-03-{1 + i % 12:02d}T{8 + i % 9:02d}:15:00Z",
                "properties": {"plan": "pro" if i % 2 else "free", "n": i},
                "context": {"campaign": {"source": "google" if i % 3 else "bing"}},
            }
        )
    at = "2024-03-04T07:00:00Z"
    rows.append(
        {"type": "track", "event": "pageview", "anonymousId": "anon-1", "messageId": "a1", "timestamp": at}
    )
    rows.append(
        {"type": "identify", "anonymousId": "anon-1", "userId": "u1", "messageId": "a2", "timestamp": at}
    )
    return rows


_NOT_AN_EVENT = (
    "neither a Segment message (type, userId/anonymousId) nor a PostHog event (event, distinct_id)"
)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@dataclass
class Upload:
    source: str
    path: Path
    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    gzip: bool = False

    def post(self, url: str, key: str) -> httpx.Response:
        body = self.path.read_bytes()
        headers = {"Authorization": f"Bearer {key}", **self.headers}
        if self.gzip:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return httpx.post(
            url + API.format(project="alpha", source=self.source),
            content=body,
            headers=headers,
            params={"filename": str(self.path), **self.params},
            timeout=60,
        )


def _uploads(directory: Path) -> list[Upload]:
    """One file per source, in every accepted format and media type, each but one with a bad row."""
    directory.mkdir()
    files: dict[str, str] = {
        "events.jsonl": _jsonl(_events()) + '{"no": "event"}\n',
        "customers.csv": "customer_id,distinct_id,email,channel,country\n"
        "c1,u1,a@x.io,google,FR\nc2,u2,,bing,US\n,u3,x@y.io,google,DE\nc3,u3,,,\n",
        "subscriptions.csv": "subscription_id,customer_id,start_date,end_date,amount,interval\n"
        "s1,c1,2024-01-01,,100,month\ns2,c2,2024-01-15,2024-03-10,50,month\n"
        "s2,c2,2024-03-10,,80,month\ns3,c3,2024-02-01,2024-03-15,1200,year\ns4,c4,2024-01-01,,abc,month\n",
        "invoices.jsonl": _jsonl(
            [
                {"invoice_id": f"i{n}", "customer_id": c, "subscription_id": s, "issued_at": d, "amount": a}
                for n, (c, s, d, a) in enumerate(
                    [
                        ("c1", "s1", "2024-01-01", 100),
                        ("c1", "s1", "2024-02-01", 100),
                        ("c2", "s2", "2024-01-15", 50),
                        ("c3", None, "2024-03-03", 30),
                    ]
                )
            ]
            + [{"invoice_id": "bad", "customer_id": "c1", "amount": 5}]  # no issued_at
        ),
        "fx-rates.csv": "date,currency,quote,rate\n2024-01-01,EUR,USD,1.1\n2024-03-01,EUR,USD,1.08\n",
        "surveys.data": _jsonl(
            [
                {
                    "response_id": f"r{n}",
                    "survey": "NPS Q1",
                    "metric": "nps",
                    "score": s,
                    "customer_id": c,
                    "responded_at": f"2024-03-0{1 + n}T12:00:00Z",
                    "comment": "fine",
                }
                for n, (s, c) in enumerate([(10, "c1"), (9, "c2"), (3, "c3"), (7, "c1")])
            ]
            + [
                {
                    "response_id": "r9",
                    "survey": "NPS Q1",
                    "metric": "nps",
                    "score": 11,
                    "responded_at": "2024-03-02",
                }
            ]
        ),
        "tickets.csv": "ticket_id,created_at,first_response_at,resolved_at,escalated,customer_id\n"
        "t1,2024-03-01T09:00:00Z,2024-03-01T10:00:00Z,2024-03-02T09:00:00Z,false,c1\n"
        "t2,2024-03-03T09:00:00Z,2024-03-03T09:30:00Z,2024-03-03T12:00:00Z,true,c2\n"
        "t3,2024-03-05T09:00:00Z,,2024-03-04T09:00:00Z,false,c3\n",  # resolved before created
        "feedback.jsonl": _jsonl(
            [
                {
                    "item_id": "f1",
                    "kind": "feature_request",
                    "text": "dark mode please",
                    "votes": 3,
                    "created_at": "2024-03-01",
                    "customer_id": "c1",
                },
                {
                    "item_id": "f2",
                    "kind": "feedback",
                    "text": "the app is slow and buggy",
                    "created_at": "2024-03-02",
                    "customer_id": "c2",
                },
                {
                    "item_id": "f3",
                    "kind": "feature_request",
                    "text": "x",
                    "created_at": "2024-03-02",
                    "status": "someday",
                },
            ]
        ),
    }
    for name, content in files.items():
        (directory / name).write_text(content)
    spend = directory / "spend.parquet"
    pq.write_table(
        pa.table(
            {
                "date": ["2024-03-01", "2024-03-02", None, "2024-03-03"],
                "channel": ["google", "google", "bing", "bing"],
                "amount": [100.0, 120.5, 10.0, 40.0],
            }
        ),
        spend,
    )
    return [
        Upload("events", directory / "events.jsonl", {"Content-Type": "application/x-ndjson"}),
        Upload("customers", directory / "customers.csv", {"Content-Type": "text/csv; charset=utf-8"}),
        Upload("subscriptions", directory / "subscriptions.csv", {"Content-Type": "text/csv"}),
        Upload("invoices", directory / "invoices.jsonl", {"Content-Type": "application/jsonl"}),
        Upload("fx-rates", directory / "fx-rates.csv", {"Content-Type": "text/csv"}),
        Upload("spend", spend, {"Content-Type": "application/vnd.apache.parquet"}),
        Upload(
            "surveys",
            directory / "surveys.data",
            {"Content-Type": "application/octet-stream"},
            {"format": "jsonl"},
        ),
        Upload("tickets", directory / "tickets.csv", {"Content-Type": "text/csv"}, gzip=True),
        Upload("feedback", directory / "feedback.jsonl", {"Content-Type": "application/x-ndjson"}),
    ]


def _cli_import(home: Path, upload: Upload) -> tuple[int, dict[str, Any]]:
    args = ["import", upload.source, str(upload.path), "--project", "alpha", "--json"]
    if "format" in upload.params:
        args += ["--format", upload.params["format"]]
    code, out = _cli(home, *args)
    return code, json.loads(out)


def _stored(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row an import can write, in the store and in the metadata (import records)."""
    store = EventStore(home / "events.duckdb", read_only=True)
    try:
        out = {table: store.fetchall(f"SELECT * FROM {table} ORDER BY ALL") for table in TABLES}
        out["events"] = store.fetchall(
            "SELECT project_id, uuid, event, distinct_id, timestamp, properties FROM events ORDER BY ALL"
        )
        out["persons"] = store.fetchall("SELECT * FROM person_distinct_ids ORDER BY ALL")
        out["merges"] = store.fetchall(
            "SELECT project_id, from_person, into_person FROM person_merges ORDER BY ALL"
        )
    finally:
        store.close()
    meta = open_metadata(home, None)
    try:
        with meta.session() as s:
            out["import_runs"] = [
                (
                    r.project_id,
                    r.kind,
                    r.file,
                    r.status,
                    r.rows_read,
                    r.rows_imported,
                    r.rows_deduplicated,
                    r.rows_rejected,
                )
                for r in s.scalars(select(ImportRun).order_by(ImportRun.id))
            ]
            out["import_rejections"] = [
                (r.project_id, r.file, r.line, r.reason, r.event, r.day)
                for r in s.scalars(select(ImportRejection).order_by(ImportRejection.id))
            ]
    finally:
        meta.close()
    return out


def _metrics(home: Path) -> dict[str, Any]:
    """Every catalog metric over the first quarter of 2024 (or the error it gives); none may warn."""
    out: dict[str, Any] = {}
    with Workspace.open(home) as ws:
        engine = DuckDBEngine(ws.store)
        project = ws.project("alpha")
        for metric in load_catalog():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    value: Any = evaluate_metric(
                        engine, project, metric, "2024-01-01", "2024-03-31"
                    ).as_dict()
                except KpilotError as exc:
                    value = f"{type(exc).__name__}: {exc}"
            assert not caught, (metric.name, [str(w.message) for w in caught])
            out[metric.name] = value
    return out


@pytest.mark.slow
def test_rest_imports_store_what_cli_imports_store(tmp_path: Path) -> None:
    served_home, direct_home = tmp_path / "served" / "ws", tmp_path / "direct" / "ws"
    make_workspace(served_home, ("alpha", "beta"))
    make_workspace(direct_home, ("alpha", "beta"))
    uploads = _uploads(tmp_path / "files")

    server = start_proc_server(served_home)
    try:
        # the secret key is created by the CLI while the server runs (metadata only)
        code, out = _cli(served_home, "keys", "create", "--kind", "secret", "--project", "alpha", "--json")
        assert code == 0
        key = json.loads(out)["key"]
        rounds: list[list[tuple[int, dict[str, Any]]]] = []
        for _ in range(2):  # the second round re-imports every file: nothing new
            replies = [u.post(server.url, key) for u in uploads]
            rounds.append([(r.status_code, r.json()) for r in replies])
        spec = httpx.get(server.url + "/openapi.json").json()
    finally:
        assert server.terminate() in (0, -15)

    direct_rounds = [[_cli_import(direct_home, u) for u in uploads]]
    after_first = _stored(direct_home)
    direct_rounds.append([_cli_import(direct_home, u) for u in uploads])

    for served, direct in zip(rounds, direct_rounds, strict=True):
        for upload, (status, reply), (code, report) in zip(uploads, served, direct, strict=True):
            # the reply is what `kpilot import ... --json` prints, plus an error when rows were rejected
            error = reply.pop("error", None)
            assert reply == report, upload.source
            assert (status, code) == ((422, 5) if report["rejected"] else (200, 0)), upload.source
            if report["rejected"]:
                assert error["code"] == "rows_rejected"
                assert all(r["file"] == str(upload.path) and r["line"] > 1 for r in report["rejections"])
            else:
                assert error is None
    first = {u.source: r for u, (_, r) in zip(uploads, direct_rounds[0], strict=True)}
    assert all(r["imported"] > 0 for r in first.values())
    assert sum(1 for r in first.values() if r["rejected"]) == 8  # every file but fx-rates has a bad row
    reasons = {u.source: [(x["line"], x["reason"]) for x in first[u.source]["rejections"]] for u in uploads}
    assert reasons["subscriptions"] == [(6, "column 'amount' value 'abc' is not a number")]
    assert reasons["spend"][0][0] == 3  # Parquet: the row number
    assert reasons["events"] == [(43, _NOT_AN_EVENT)]  # 42 good events, then the bad line
    for report in (r for _, r in direct_rounds[1]):
        assert report["imported"] == 0
        assert report["deduplicated"] == report["rows_read"] - report["rejected"]

    served_rows, direct_rows = _stored(served_home), _stored(direct_home)
    assert {k: v for k, v in direct_rows.items() if not k.startswith("import_")} == {
        k: v for k, v in after_first.items() if not k.startswith("import_")
    }  # re-importing changed nothing
    assert served_rows == direct_rows
    for table in (*TABLES, "events", "persons"):  # every source wrote rows
        if table not in ("feedback_voters", "feedback_merges"):
            assert direct_rows[table], table
    assert len(direct_rows["import_runs"]) == 2 * len(uploads)
    metrics = _metrics(direct_home)
    assert _metrics(served_home) == metrics
    assert metrics["mrr"]["value"] == 180.0  # s1 100 + s2 upgraded to 80; s3 ended on 2024-03-15
    assert sum(1 for value in metrics.values() if isinstance(value, dict) and value["value"]) > 20

    route = spec["paths"][API]["post"]
    source = next(p for p in route["parameters"] if p["name"] == "source")
    assert source["schema"]["enum"] == list(IMPORT_SOURCES)
    assert route["security"] == [{"SecretKey": []}]
    assert spec["components"]["securitySchemes"]["SecretKey"]["scheme"] == "bearer"
    assert {"text/csv", "application/x-ndjson", "application/vnd.apache.parquet"} <= set(
        route["requestBody"]["content"]
    )
    assert {"200", "400", "401", "404", "413", "415", "422"} <= set(route["responses"])


def test_import_sources_are_the_cli_sources() -> None:
    from kpilot.cli.sources_cmd import _COMMANDS
    from kpilot.revenue.importing import SOURCES, _load_sources

    _load_sources()
    assert set(IMPORT_SOURCES) == {"events", *SOURCES} == {"events", *_COMMANDS}


SPEND_CSV = b"date,channel,amount\n2024-03-01,google,100\n2024-03-02,bing,50\n"


def _post(
    url: str,
    key: str | None,
    body: bytes = SPEND_CSV,
    *,
    project: str = "alpha",
    source: str = "spend",
    **kw: Any,
) -> httpx.Response:
    headers = {"Content-Type": "text/csv", **kw.pop("headers", {})}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(url + API.format(project=project, source=source), content=body, headers=headers, **kw)


def _corrupt_parquet() -> bytes:
    """A Parquet file whose footer is fine and whose first data page is not (pyarrow raises OSError)."""
    buf = io.BytesIO()
    pq.write_table(pa.table({"date": ["2024-03-01"] * 50, "amount": [1.0] * 50}), buf, compression="snappy")
    data = buf.getvalue()
    return data[:10] + bytes(40) + data[50:]


def _imports_stored(srv: ThreadServer) -> tuple[int, int, int]:
    """(import runs recorded, spend rows, events) of the served workspace."""
    with srv.ws.meta.session() as s:
        runs = len(s.scalars(select(ImportRun)).all())
    tables = {r[0] for r in srv.sql("SELECT table_name FROM information_schema.tables")}
    spend = srv.sql("SELECT count(*) FROM spend")[0][0] if "spend" in tables else 0
    return runs, spend, srv.sql("SELECT count(*) FROM events")[0][0]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ThreadServer, dict[str, str]]]:
    """A served workspace with projects alpha and beta; keys: write and secret ones of both, a revoked one."""
    home = tmp_path / "ws"
    write = make_workspace(home, ("alpha", "beta"))
    meta = open_metadata(home, None)
    alpha, beta = project_by_name(meta, "alpha"), project_by_name(meta, "beta")
    keys = {
        "write": write["alpha"],
        "write_beta": write["beta"],
        "secret": create_key(meta, alpha, "etl", KeyKind.SECRET).key,
        "secret_beta": create_key(meta, beta, "etl", KeyKind.SECRET).key,
        "revoked": create_key(meta, alpha, "old", KeyKind.SECRET).key,
    }
    revoke_key(meta, alpha, keys["revoked"])
    meta.close()
    srv = start_thread_server(home, import_max_request_bytes=4096)
    try:
        yield srv, keys
    finally:
        srv.stop()


def test_only_the_projects_secret_key_imports(served: tuple[ThreadServer, dict[str, str]]) -> None:
    srv, keys = served
    unknown = "kpsk_" + "A" * 43
    refused = {"error": {"code": "invalid_api_key", "message": SECRET_KEY_REFUSED}}
    cases: list[tuple[str | None, dict[str, Any], str]] = [
        (None, {}, "alpha"),
        (None, {"headers": {"Authorization": f"Basic {keys['secret']}"}}, "alpha"),
        (None, {"auth": (keys["secret"], "")}, "alpha"),  # the key as Basic user, as Segment sends it
        (None, {"headers": {"Authorization": "Bearer"}}, "alpha"),
        (unknown, {}, "alpha"),
        (keys["secret"][:-1], {}, "alpha"),
        (keys["secret"][:12], {}, "alpha"),  # a prefix is not a key
        (keys["write"], {}, "alpha"),
        (keys["revoked"], {}, "alpha"),
        (keys["secret_beta"], {}, "alpha"),
        (keys["secret"], {}, "beta"),
        (keys["secret"], {}, "no-such-project"),
        (unknown, {}, "no-such-project"),
    ]
    for key, kw, project in cases:
        for source in ("spend", "subscriptions", "events", "no-such-source"):
            r = _post(srv.url, key, project=project, source=source, **kw)
            assert r.status_code == 401, (key, project, source, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
    # a key that may not act on a project gets one reply, whether the project exists or not
    for key in (unknown, keys["revoked"], keys["secret_beta"]):
        for project in ("alpha", "no-such-project", "beta" if key != keys["secret_beta"] else "gamma"):
            assert _post(srv.url, key, project=project).json() == refused
    assert "write key can only send events" in _post(srv.url, keys["write"]).json()["error"]["message"]
    assert _imports_stored(srv) == (0, 0, 0)

    # secret keys are not write keys: ingestion refuses them; write keys go on working
    event = {"type": "track", "event": "x", "userId": "u", "messageId": "e1"}
    assert httpx.post(srv.url + "/v1/track", json=event, auth=(keys["secret"], "")).status_code == 401
    assert (
        httpx.post(srv.url + "/v1/batch", json={"batch": [event], "writeKey": keys["secret"]}).status_code
        == 401
    )
    capture = {"event": "x", "distinct_id": "u", "uuid": "0190a6f2-0000-7000-8000-000000000001"}
    assert httpx.post(srv.url + "/capture/", json={**capture, "api_key": keys["secret"]}).status_code == 401
    assert _imports_stored(srv) == (0, 0, 0)
    assert httpx.post(srv.url + "/v1/track", json=event, auth=(keys["write"], "")).status_code == 200
    assert httpx.post(srv.url + "/capture/", json={**capture, "api_key": keys["write"]}).status_code == 200
    assert _imports_stored(srv) == (0, 0, 2)

    r = _post(srv.url, keys["secret"])
    assert r.status_code == 200 and r.json()["imported"] == 2 and r.json()["files"] == ["request body"]
    assert _post(srv.url, keys["secret_beta"], project="beta").status_code == 200
    assert srv.sql("SELECT project_id, count(*) FROM spend GROUP BY ALL ORDER BY ALL") == [(1, 2), (2, 2)]
    # revoking takes effect at once (secret keys are not cached)
    meta = open_metadata(srv.home, None)
    revoke_key(meta, project_by_name(meta, "alpha"), keys["secret"])
    meta.close()
    assert _post(srv.url, keys["secret"]).json() == refused


def test_unusable_requests_store_nothing(served: tuple[ThreadServer, dict[str, str]]) -> None:
    srv, keys = served
    key = keys["secret"]
    spooled_before = set(Path(tempfile.gettempdir()).glob("kpilot-import-*"))
    big = b"date,channel,amount\n" + b"2024-03-01,google,1\n" * 300  # 6 KiB, over the 4 KiB limit

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    cases: list[tuple[int, str, httpx.Response]] = [
        (404, "unknown_source", _post(srv.url, key, source="payments")),
        (413, "request_too_large", _post(srv.url, key, big)),
        (413, "request_too_large", _post(srv.url, key, chunks())),  # chunked: no Content-Length
        (413, "request_too_large", _post(srv.url, key, gzip.compress(big))),  # small compressed, big inflated
        (
            413,
            "request_too_large",
            _post(srv.url, key, gzip.compress(big), headers={"Content-Encoding": "gzip"}),
        ),
        (400, "empty_body", _post(srv.url, key, b"")),
        (400, "invalid_compression", _post(srv.url, key, b"not gzip", headers={"Content-Encoding": "gzip"})),
        (400, "invalid_compression", _post(srv.url, key, gzip.compress(SPEND_CSV)[:-12])),
        (415, "unsupported_encoding", _post(srv.url, key, headers={"Content-Encoding": "br"})),
        (415, "unsupported_media_type", _post(srv.url, key, headers={"Content-Type": "text/html"})),
        (
            415,
            "unsupported_media_type",
            _post(srv.url, key, headers={"Content-Type": "text/csv; charset=latin-1"}),
        ),
        (400, "format_required", _post(srv.url, key, headers={"Content-Type": "application/octet-stream"})),
        (400, "format_required", _post(srv.url, key, headers={"Content-Type": ""})),
        (400, "invalid_format", _post(srv.url, key, params={"format": "xlsx"})),
        (400, "invalid_request", _post(srv.url, key, params={"filename": ""})),
        (400, "unreadable_body", _post(srv.url, key, b"PAR1 not parquet", params={"format": "parquet"})),
        (
            400,
            "unreadable_body",
            _post(srv.url, key, "date,channel,amount\n2024-03-01,caf\xe9,1\n".encode("latin-1")),
        ),
        (400, "unreadable_body", _post(srv.url, key, _corrupt_parquet(), params={"format": "parquet"})),
        (405, "method_not_allowed", httpx.get(srv.url + API.format(project="alpha", source="spend"))),
    ]
    for status, code, r in cases:
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        assert set(r.json()) == {"error"} and r.json()["error"]["message"]
    unreadable = [r.json()["error"]["message"] for s, c, r in cases if c == "unreadable_body"]
    assert all(m.startswith("request body: ") and "kpilot-import-" not in m for m in unreadable)
    _, spend, events = _imports_stored(srv)
    assert (spend, events) == (0, 0)
    with srv.ws.meta.session() as s:  # only unreadable files got as far as an import record, unfinished
        assert [(r.status, r.rows_imported) for r in s.scalars(select(ImportRun))] == [("interrupted", 0)] * 3

    # the same data, readable: imported; a generic type with ?format=, gzip with or without the header
    ok = [
        _post(srv.url, key, params={"format": "csv"}, headers={"Content-Type": "application/octet-stream"}),
        _post(srv.url, key, gzip.compress(SPEND_CSV), params={"filename": "spend.csv.gz"}),
        _post(srv.url, key, gzip.compress(SPEND_CSV), headers={"Content-Encoding": "gzip"}),
        _post(srv.url, key, big[:4096].rsplit(b"\n", 1)[0] + b"\n"),  # at the limit: accepted
    ]
    assert [r.status_code for r in ok] == [200] * 4, [r.text for r in ok]
    assert [(r.json()["imported"], r.json()["deduplicated"]) for r in ok[:3]] == [(2, 0), (0, 2), (0, 2)]
    assert ok[1].json()["files"] == ["spend.csv.gz"]
    assert set(Path(tempfile.gettempdir()).glob("kpilot-import-*")) == spooled_before  # bodies removed
