"""``kpilot export lake``: layout, contents, manifest, idempotent overwrite, per-project export, refusals,
and the store's rollups going along (bitmaps, merges after the build, projects without one)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pyroaring import BitMap
from typer.testing import CliRunner

from kpilot.cli.main import app
from kpilot.collect.normalize import normalize
from kpilot.engines.lake import MANIFEST, LakeManifest, LakeRollup, export_lake, read_manifest
from kpilot.errors import NotFoundError, WorkspaceError
from kpilot.workspace import Workspace
from tests.conftest import ev


def _load(ws: Workspace, project: str, rows: list[dict[str, Any]]) -> None:
    ws.store.write_batch(ws.project(project).id, [normalize(r) for r in rows])


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:
    workspace.create_project("paris", "Europe/Paris", "monday")
    workspace.create_project("ny", "America/New_York", "sunday")
    workspace.create_project("empty")
    _load(
        workspace,
        "paris",
        [
            # 23:30 UTC on Mar 1 is 00:30 on Mar 2 in Paris: the partition is the UTC date, 2024-03-01.
            ev("x", "a", "2024-03-01T23:30:00Z", plan="pro", path="/it's"),
            ev("y", "b", "2024-03-02T08:00:00.123456Z"),
            {
                "event": "$identify",
                "distinct_id": "a",
                "timestamp": "2024-03-03T00:00:00Z",
                "properties": {"$anon_distinct_id": "anon"},
                "$set": {"plan": "pro"},
                "$set_once": {"first": "x"},
            },
        ],
    )
    _load(workspace, "ny", [ev("z", "c", "2024-03-05T12:00:00Z")])
    return workspace


def _files(lake: Path) -> list[str]:
    return sorted(str(p.relative_to(lake)) for p in lake.rglob("*.parquet"))


def _read(lake: Path, table: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(
        f"SELECT * EXCLUDE (project_id), project_id FROM read_parquet('{lake}/{table}/**/*.parquet', "
        "hive_partitioning = true) ORDER BY ALL"
    ).fetchall()


def test_layout_is_hive_partitioned_by_project_and_utc_date(ws: Workspace, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    export_lake(ws, lake)
    paris, ny = ws.project("paris").id, ws.project("ny").id
    assert _files(lake) == [
        f"events/project_id={paris}/date=2024-03-01/data_0.parquet",
        f"events/project_id={paris}/date=2024-03-02/data_0.parquet",
        f"events/project_id={paris}/date=2024-03-03/data_0.parquet",
        f"events/project_id={ny}/date=2024-03-05/data_0.parquet",
        f"person_distinct_ids/project_id={paris}/data_0.parquet",
        f"person_distinct_ids/project_id={ny}/data_0.parquet",
        f"person_property_writes/project_id={paris}/data_0.parquet",
        f"rollup_persons/project_id={paris}/data_0.parquet",
        f"rollup_persons/project_id={ny}/data_0.parquet",
        f"rollup_projects/project_id={paris}/data_0.parquet",
        f"rollup_projects/project_id={ny}/data_0.parquet",
        f"rollup_projects/project_id={ws.project('empty').id}/data_0.parquet",
    ]


def test_files_hold_the_store_rows_with_utc_instants(ws: Workspace, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    export_lake(ws, lake)
    events = _read(lake, "events")
    stored = ws.store.fetchall(
        "SELECT uuid, event, distinct_id, timestamp, CAST(properties AS VARCHAR), received_at, "
        "CAST(timestamp AS DATE), project_id FROM events ORDER BY ALL"
    )
    # written as UTC instants: read back with the zone attached, the wall-clock is the stored naive UTC
    naive = [
        (u, e, d, ts.replace(tzinfo=None), p, r.replace(tzinfo=None), day, pid)
        for u, e, d, ts, p, r, day, pid in events
    ]
    assert sorted(naive) == sorted(stored)
    assert any(ts == datetime(2024, 3, 2, 8, 0, 0, 123456) for _, _, _, ts, *_ in naive)
    assert _read(lake, "person_distinct_ids") == ws.store.fetchall(
        "SELECT distinct_id, person_id, project_id FROM person_distinct_ids ORDER BY ALL"
    )
    writes = [
        (d, k, v, ts.replace(tzinfo=None), once, p)
        for d, k, v, ts, once, p in _read(lake, "person_property_writes")
    ]
    assert writes == ws.store.fetchall(
        "SELECT distinct_id, key, value, ts, set_once, project_id FROM person_property_writes ORDER BY ALL"
    )


def test_manifest_names_projects_settings_and_row_counts(ws: Workspace, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    manifest = export_lake(ws, lake)
    data = json.loads((lake / MANIFEST).read_text())
    assert data["format"] == "kpilot-lake" and data["version"] == 1
    by_name = {p["name"]: p for p in data["projects"]}
    assert by_name["paris"]["timezone"] == "Europe/Paris" and by_name["ny"]["week_start"] == "sunday"
    # paris: 3 events; ids a, b, anon; writes: $set plan and $set_once first on the $identify;
    # rollup rows: (Mar 2, x), (Mar 2, y), (Mar 3, $identify) and one any-event row per day (Paris days)
    assert by_name["paris"]["rows"] == {
        "events": 3,
        "person_distinct_ids": 3,
        "person_property_writes": 2,
        "rollup_projects": 1,
        "rollup_persons": 5,
        "rollup_merges": 0,
    }
    assert by_name["empty"]["rows"] == {
        "events": 0,
        "person_distinct_ids": 0,
        "person_property_writes": 0,
        "rollup_projects": 1,
        "rollup_persons": 0,
        "rollup_merges": 0,
    }
    assert by_name["paris"]["rollup"]["timezone"] == "Europe/Paris"
    assert by_name["paris"]["rollup"]["built_by"] == "store"
    assert set(data["layout"]) == {
        "events",
        "person_distinct_ids",
        "person_property_writes",
        "rollup_projects",
        "rollup_persons",
        "rollup_merges",
    }
    assert read_manifest(lake) == manifest
    assert manifest.project("ny").info() == ws.project("ny")


def test_reexport_is_idempotent_and_drops_stale_partitions(ws: Workspace, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    export_lake(ws, lake)
    files, events = _files(lake), _read(lake, "events")
    stale = lake / "events" / f"project_id={ws.project('paris').id}" / "date=1999-01-01"
    stale.mkdir()
    (stale / "data_0.parquet").write_bytes(b"old")
    (lake / "events" / "project_id=99").mkdir()
    export_lake(ws, lake)
    assert _files(lake) == files
    assert _read(lake, "events") == events
    assert not (lake / "events" / "project_id=99").exists()
    assert not [p for p in lake.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_project_export_replaces_only_that_project(ws: Workspace, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    export_lake(ws, lake)
    before = read_manifest(lake)
    assert before is not None
    _load(ws, "ny", [ev("z", "d", "2024-03-06T12:00:00Z")])
    _load(ws, "paris", [ev("x", "e", "2024-03-06T12:00:00Z")])  # not exported below: must not appear
    after = export_lake(ws, lake, "ny")
    ny, paris = ws.project("ny").id, ws.project("paris").id
    assert f"events/project_id={ny}/date=2024-03-06/data_0.parquet" in _files(lake)
    assert f"events/project_id={paris}/date=2024-03-06/data_0.parquet" not in _files(lake)
    assert after.project("ny").rows["events"] == 2
    assert after.project("paris") == before.project("paris")
    assert [p.name for p in after.projects] == ["paris", "ny", "empty"]


def test_project_export_to_a_new_lake_lists_only_that_project(ws: Workspace, tmp_path: Path) -> None:
    manifest = export_lake(ws, tmp_path / "lake", "paris")
    assert [p.name for p in manifest.projects] == ["paris"]
    assert manifest.project(None).name == "paris"
    with pytest.raises(NotFoundError, match="no project named 'ny'"):
        manifest.project("ny")


def test_refuses_to_overwrite_a_directory_that_is_not_a_lake(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "home-photos").mkdir()
    (tmp_path / "home-photos" / "cat.jpg").write_bytes(b"...")
    with pytest.raises(WorkspaceError, match="refusing to overwrite"):
        export_lake(ws, tmp_path / "home-photos")
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkspaceError, match="not a directory"):
        export_lake(ws, tmp_path / "file")
    with pytest.raises(NotFoundError, match="no project named 'nope'"):
        export_lake(ws, tmp_path / "lake", "nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not a valid kpilot lake manifest"),
        ('{"format": "other"}', "is not a kpilot lake manifest"),
        ('{"format": "kpilot-lake", "version": 9, "projects": []}', "format version 9"),
        (
            '{"format": "kpilot-lake", "version": 1, "exported_at": "x", "projects": [{"id": 1}]}',
            "not a valid",
        ),
    ],
)
def test_bad_manifests_are_named(text: str, message: str) -> None:
    with pytest.raises(WorkspaceError, match=message):
        LakeManifest.from_json(text)


def test_manifest_project_choice_needs_a_name_when_several() -> None:
    with pytest.raises(WorkspaceError, match="several projects"):
        LakeManifest.from_json(
            '{"format": "kpilot-lake", "version": 1, "exported_at": "t", "projects": ['
            '{"id": 1, "name": "a", "timezone": "UTC", "week_start": "monday", "exported_at": "t", "rows": {}},'
            '{"id": 2, "name": "b", "timezone": "UTC", "week_start": "monday", "exported_at": "t", "rows": {}}]}'
        ).project(None)
    with pytest.raises(NotFoundError, match="holds no project"):
        LakeManifest("t", []).project(None)


def test_cli_export_lake(ws: Workspace, tmp_path: Path) -> None:
    home = str(ws.home)
    ws.close()  # the CLI opens the workspace itself
    lake = tmp_path / "lake"
    runner = CliRunner()
    res = runner.invoke(app, ["--home", home, "export", "lake", str(lake), "--json"])
    assert res.exit_code == 0, res.output
    assert {p["name"] for p in json.loads(res.stdout)["projects"]} == {"paris", "ny", "empty"}
    res = runner.invoke(app, ["--home", home, "export", "lake", str(lake), "-p", "ny"])
    assert res.exit_code == 0, res.output
    assert "ny: 1 events" in res.stdout and "paris" not in res.stdout
    res = runner.invoke(app, ["--home", home, "export", "lake", str(lake), "-p", "nope", "--json"])
    assert res.exit_code == NotFoundError.exit_code
    assert json.loads(res.stdout)["error"]["code"] == "not_found"


# ---- rollups ----------------------------------------------------------------------------------------------


def _rollup_rows(lake: Path, project_id: int) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    return con.execute(
        f"SELECT day, event, persons FROM read_parquet('{lake}/rollup_persons/project_id={project_id}/*.parquet')"
    ).fetchall()


def test_rollups_are_exported_as_stored_with_merges_after_the_build(ws: Workspace, tmp_path: Path) -> None:
    paris = ws.project("paris").id
    # a second batch: w is a new person on Mar 4, then merged into a's person (a merge after the build)
    _load(ws, "paris", [ev("x", "w", "2024-03-04T10:00:00Z")])
    _load(
        ws,
        "paris",
        [
            {
                "event": "$identify",
                "distinct_id": "a",
                "timestamp": "2024-03-05T10:00:00Z",
                "properties": {"$anon_distinct_id": "w"},
            }
        ],
    )
    stored_merges = ws.store.fetchall(
        "SELECT absorbed, survivor FROM rollup_merges WHERE project_id = ? ORDER BY ALL", [paris]
    )
    assert len(stored_merges) == 1
    lake = tmp_path / "lake"
    manifest = export_lake(ws, lake)
    stored = ws.store.fetchall(
        "SELECT day, event, persons FROM rollup_persons WHERE project_id = ? ORDER BY ALL", [paris]
    )
    exported = _rollup_rows(lake, paris)
    assert sorted(exported, key=repr) == sorted(stored, key=repr)
    # sorted by day, the any-event row (NULL) first: readers skip row groups by their day range
    assert [(d, e) for d, e, _ in exported] == sorted(
        [(d, e) for d, e, _ in exported], key=lambda k: (k[0], k[1] is not None, k[1] or "")
    )
    # the bitmaps read back with pyroaring (the portable serialization)
    x_day = {d.isoformat(): BitMap.deserialize(b) for d, e, b in exported if e == "x"}
    assert x_day["2024-03-04"] == BitMap([stored_merges[0][0]])
    con = duckdb.connect()
    assert (
        con.execute(
            f"SELECT absorbed, survivor FROM read_parquet('{lake}/rollup_merges/*/*.parquet', "
            f"hive_partitioning = true) WHERE project_id = {paris} ORDER BY ALL"
        ).fetchall()
        == stored_merges
    )
    built_at = ws.store.fetchall("SELECT built_at FROM rollup_projects WHERE project_id = ?", [paris])[0][0]
    con.execute("SET TimeZone = 'UTC'")
    tz, at = con.execute(
        f"SELECT timezone, built_at FROM read_parquet('{lake}/rollup_projects/project_id={paris}/*.parquet')"
    ).fetchone()  # type: ignore[misc]
    assert (tz, at.replace(tzinfo=None)) == ("Europe/Paris", built_at)
    entry = manifest.project("paris")
    assert entry.rollup == LakeRollup(
        "Europe/Paris", built_at.replace(microsecond=0).isoformat() + "Z", "store"
    )
    assert entry.rows["rollup_merges"] == 1 and entry.rows["rollup_persons"] == len(stored)
    assert read_manifest(lake) == manifest


def test_project_without_rollup_exports_none_and_old_manifests_still_read(
    ws: Workspace, tmp_path: Path
) -> None:
    ny = ws.project("ny").id
    for table in ("rollup_projects", "rollup_persons", "rollup_merges"):
        ws.store.conn.execute(f"DELETE FROM {table} WHERE project_id = ?", [ny])
    lake = tmp_path / "lake"
    manifest = export_lake(ws, lake)
    assert manifest.project("ny").rollup is None
    assert manifest.project("paris").rollup is not None
    assert not [f for f in _files(lake) if f.startswith("rollup_") and f"project_id={ny}/" in f]
    # a manifest written before rollups existed (no "rollup", no rollup row counts) reads as "no rollup"
    data = json.loads((lake / MANIFEST).read_text())
    for p in data["projects"]:
        del p["rollup"]
    assert all(p.rollup is None for p in LakeManifest.from_json(json.dumps(data)).projects)


def test_project_export_replaces_that_projects_rollup_only(ws: Workspace, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    export_lake(ws, lake)
    paris, ny = ws.project("paris").id, ws.project("ny").id
    paris_rows = _rollup_rows(lake, paris)
    _load(ws, "ny", [ev("z", "d", "2024-03-06T12:00:00Z")])
    _load(ws, "paris", [ev("x", "e", "2024-03-06T12:00:00Z")])
    after = export_lake(ws, lake, "ny")
    assert _rollup_rows(lake, paris) == paris_rows  # not re-exported
    days = {d.isoformat() for d, _, _ in _rollup_rows(lake, ny)}
    assert days == {"2024-03-05", "2024-03-06"}
    assert after.project("ny").rows["rollup_persons"] == 4
