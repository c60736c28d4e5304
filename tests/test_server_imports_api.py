"""Secret keys and the REST import API (``POST /api/v1/projects/{project}/imports/{source}``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, inspect, select, text
from typer.testing import CliRunner

from kpilot.cli.main import app
from kpilot.keys import (
    KeyKind,
    KeyOwner,
    create_key,
    hash_key,
    list_keys,
    open_metadata,
    project_by_name,
    resolve_key,
)
from kpilot.meta.db import MetadataDB, _alembic_config
from kpilot.meta.models import ApiKey, Project, utcnow
from tests.pg_server import find_pg_bin, postgres_server
from tests.server_helpers import make_workspace

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
