"""Write keys and the ingestion warnings log: storage, CLI, isolation, migration."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import inspect
from typer.testing import CliRunner

from kpilot.cli.main import app
from kpilot.keys import (
    KeyOwner,
    WarningRow,
    hash_key,
    list_warnings,
    open_metadata,
    project_by_name,
    record_warnings,
    resolve_key,
)
from kpilot.meta.models import ApiKey, IngestionWarning
from tests.server_helpers import make_workspace

runner = CliRunner()


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.stdout


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    make_workspace(home, ("alpha", "beta"))
    code, out = _run(home, "keys", "create", "--project", "alpha", "--name", "web", "--json")
    assert code == 0
    created = json.loads(out)
    key = created["key"]
    assert key.startswith("kp_") and len(key) == 35
    assert created["prefix"] == key[:10] and created["project"] == "alpha" and created["name"] == "web"

    # only the hash is stored: the clear key appears nowhere in the metadata database file
    assert key.encode() not in (home / "metadata.sqlite").read_bytes()
    meta = open_metadata(home, None)
    with meta.session() as s:
        row = s.get(ApiKey, created["id"])
        assert row is not None and row.key_hash == hash_key(key)
    alpha = project_by_name(meta, "alpha")
    assert resolve_key(meta, key) == KeyOwner(created["id"], alpha.id)

    code, out = _run(home, "keys", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and len(listed) == 3  # one per project from make_workspace, plus this one
    assert all("key" not in k for k in listed)
    code, out = _run(home, "keys", "list", "--project", "beta", "--json")
    assert [k["project"] for k in json.loads(out)] == ["beta"]

    # revoking needs the key's own project; by prefix here
    code, out = _run(home, "keys", "revoke", created["prefix"], "--project", "beta", "--json")
    assert code == 3 and json.loads(out)["error"]["code"] == "not_found"
    code, out = _run(home, "keys", "revoke", created["prefix"], "--project", "alpha", "--json")
    assert code == 0 and json.loads(out)["revoked_at"] is not None
    assert resolve_key(meta, key) is None
    code, out = _run(home, "keys", "revoke", key, "--project", "alpha")  # again, by the key: harmless
    assert code == 0 and "Revoked key" in out
    meta.close()


def test_unknown_and_odd_keys_resolve_to_nobody(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    keys = make_workspace(home)
    meta = open_metadata(home, None)
    assert resolve_key(meta, "") is None
    assert resolve_key(meta, keys["alpha"] + "x") is None
    assert resolve_key(meta, "x" * 1000) is None
    assert resolve_key(meta, keys["alpha"][:10]) is None  # a prefix is not a key
    meta.close()


def test_ingestion_warnings_cli(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    keys = make_workspace(home, ("alpha", "beta"))  # key ids 1 (alpha) and 2 (beta)
    meta = open_metadata(home, None)
    alpha, beta = project_by_name(meta, "alpha"), project_by_name(meta, "beta")
    at = datetime(2024, 3, 1, 10)
    record_warnings(
        meta,
        [
            WarningRow(
                alpha.id,
                1,
                "segment",
                "invalid_event",
                "dropped: track message has no event name",
                "track",
                "{}",
                at,
            ),
            WarningRow(beta.id, 2, "posthog", "timestamp_in_future", "clamped", "x", None, at),
        ],
    )
    assert [w.kind for w in list_warnings(meta, alpha)] == ["invalid_event"]
    meta.close()
    code, out = _run(home, "ingestion", "warnings", "--json", "--project", "alpha")
    assert code == 0
    assert json.loads(out) == [
        {
            "id": 1,
            "created_at": "2024-03-01T10:00:00",
            "project": "alpha",
            "key_prefix": keys["alpha"][:10],
            "source": "segment",
            "kind": "invalid_event",
            "reason": "dropped: track message has no event name",
            "event": "track",
            "excerpt": "{}",
        }
    ]
    code, out = _run(home, "ingestion", "warnings", "--json")  # several projects, none chosen: all
    assert [w["project"] for w in json.loads(out)] == ["beta", "alpha"]
    code, out = _run(home, "ingestion", "warnings")
    assert code == 0 and "invalid_event" in out


def test_migration_creates_the_tables_of_the_models(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    make_workspace(home)
    meta = open_metadata(home, None)
    insp = inspect(meta.engine)
    for model in (ApiKey, IngestionWarning):
        columns = {c["name"] for c in insp.get_columns(model.__tablename__)}
        assert columns == set(model.__table__.columns.keys())
    meta.close()
