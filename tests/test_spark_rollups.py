"""Rollups on Spark: exported with the lake, built on Spark from the lake's events, and answering queries.

The acceptance fixture gets two more write batches whose ``$identify`` events merge persons that already
have events (a chain of merges), so the store's rollup carries merges recorded after its build. Then:

* every acceptance spec a rollup can answer gives the same result on DuckDB (from its rollup), on Spark from
  the exported rollup, on Spark from a rollup Spark built itself, and on Spark from raw events;
* the bitmaps Spark builds equal the exported ones once those are unioned per key and canonicalised with
  the exported merges;
* a merge after the build changes the answer, and the exported rollup applies it.

The SparkSession is the one of tests/test_spark_engine.py (one JVM for the whole run).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pyroaring import BitMap
from typer.testing import CliRunner

from kpilot.collect.normalize import normalize
from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.rollups import Rollups, answer, answerable
from kpilot.compute.spec import parse_spec
from kpilot.engines.lake import export_lake, read_manifest
from kpilot.workspace import Workspace
from tests.acceptance_specs import PROJECTS, SPECS, load_fixture
from tests.test_spark_engine import HAVE_JAVA, assert_same, spark_session

__all__ = ["spark_session"]  # the session fixture, shared with test_spark_engine

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.skipif(not HAVE_JAVA, reason="Spark needs a Java runtime (17+): none found"),
]

TIMEZONES = {name: tz for name, tz, _ in PROJECTS}
ANSWERABLE = [s for s in SPECS if answerable(parse_spec(s[2]), TIMEZONES[s[1]])]


def _identify(who: str, anon: str, ts: str) -> dict[str, Any]:
    return {
        "event": "$identify",
        "distinct_id": who,
        "timestamp": ts,
        "properties": {"$anon_distinct_id": anon},
    }


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory, spark_session: Any) -> Iterator[dict[str, Any]]:
    """The workspace, its export (the store's rollups, with merges) and a copy whose rollups Spark built."""
    from kpilot.engines.spark_engine import SparkEngine

    root = tmp_path_factory.mktemp("spark-rollups")
    ws = Workspace.init(root / "ws")
    load_fixture(ws)
    for project in ("acme", "nyc"):
        pid = ws.project(project).id
        # merges after the build: two persons with events each become one, then a third joins (a chain)
        ws.store.write_batch(pid, [normalize(_identify("anon-1", "anon-2", "2024-03-20T10:00:00Z"))])
        ws.store.write_batch(pid, [normalize(_identify("anon-3", "anon-1", "2024-03-21T10:00:00Z"))])
    exported = root / "exported"
    export_lake(ws, exported)
    built = root / "built"
    shutil.copytree(exported, built)
    builder = SparkEngine(spark_session, built)
    for project in ("acme", "nyc"):
        builder.build_rollups(project)
    yield {"ws": ws, "exported": exported, "built": built}
    ws.close()


@pytest.fixture(scope="module")
def engines(spark_session: Any, lakes: dict[str, Any]) -> dict[str, Any]:
    from kpilot.engines.spark_engine import SparkEngine

    return {
        "exported": SparkEngine(spark_session, lakes["exported"], cache=True, rollups=True),
        "built": SparkEngine(spark_session, lakes["built"], cache=True, rollups=True),
        "raw": SparkEngine(spark_session, lakes["exported"], cache=True, rollups=False),
    }


# ---- every answerable spec, every source ------------------------------------------------------------------


def test_fixture_has_merges_after_the_build_and_enough_answerable_specs(lakes: dict[str, Any]) -> None:
    manifest = read_manifest(lakes["exported"])
    assert manifest is not None
    for project in ("acme", "nyc"):
        entry = manifest.project(project)
        assert entry.rollup is not None and entry.rollup.built_by == "store"
        assert entry.rows["rollup_merges"] == 2
    assert len(ANSWERABLE) >= 20
    assert {parse_spec(s[2]).kind for s in ANSWERABLE} == {
        "trends",
        "stickiness",
        "retention",
        "feature_adoption",
    }


@pytest.mark.parametrize(("name", "project", "spec"), ANSWERABLE, ids=[s[0] for s in ANSWERABLE])
def test_answerable_spec_is_the_same_from_every_source(
    name: str, project: str, spec: dict[str, Any], lakes: dict[str, Any], engines: dict[str, Any]
) -> None:
    ws: Workspace = lakes["ws"]
    info = ws.project(project)
    parsed = parse_spec(spec)
    duck = DuckDBEngine(ws.store, rollups=True)
    expected = run_query(duck, info, parsed)
    assert duck.last_source == "rollups"
    for source, engine in engines.items():
        got = run_query(engine, engine.manifest.project(project).info(), parsed)
        assert engine.last_source == ("events" if source == "raw" else "rollups"), source
        assert_same(got, expected, f"{source}")


# ---- the bitmaps themselves ------------------------------------------------------------------------------


def _sets(
    lake: Path, project_id: int
) -> tuple[dict[tuple[date, str | None], list[BitMap]], list[tuple[Any, ...]]]:
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT day, event, persons FROM read_parquet('{lake}/rollup_persons/project_id={project_id}/*.parquet')"
    ).fetchall()
    out: dict[tuple[date, str | None], list[BitMap]] = {}
    for day, event, blob in rows:
        out.setdefault((day, event), []).append(BitMap.deserialize(blob))
    merges = con.execute(
        f"SELECT absorbed, survivor FROM read_parquet('{lake}/rollup_merges/project_id={project_id}/*.parquet')"
    ).fetchall()
    return out, merges


@pytest.mark.parametrize("project", ["acme", "nyc"])
def test_spark_built_bitmaps_equal_the_exported_ones(project: str, lakes: dict[str, Any]) -> None:
    ws: Workspace = lakes["ws"]
    pid = ws.project(project).id
    exported, merges = _sets(lakes["exported"], pid)
    built, built_merges = _sets(lakes["built"], pid)
    assert merges and not built_merges  # Spark resolves with today's ids: nothing to apply
    canon = Rollups(pid, TIMEZONES[project])
    for absorbed, survivor in merges:
        canon.record_merge(int(absorbed), int(survivor))
    assert set(built) == set(exported)
    assert all(len(parts) == 1 for parts in built.values())  # one row per key
    differs = 0
    for key, parts in exported.items():
        union = canon.canonical(BitMap.union(*parts))
        assert built[key][0] == union, key
        differs += BitMap.union(*parts) != union
    assert differs > 0  # the merges did change some stored sets
    # the any-event set of a day is the union of that day's event sets
    for (day, event), parts in built.items():
        if event is None:
            assert parts[0] == BitMap.union(
                *[p[0] for (d, e), p in built.items() if d == day and e is not None]
            )


def test_spark_build_writes_the_export_layout_and_manifest(lakes: dict[str, Any]) -> None:
    ws: Workspace = lakes["ws"]
    manifest = read_manifest(lakes["built"])
    exported = read_manifest(lakes["exported"])
    assert manifest is not None and exported is not None
    con = duckdb.connect()
    for project in ("acme", "nyc"):
        entry, before = manifest.project(project), exported.project(project)
        assert entry.rollup is not None and entry.rollup.built_by == "spark"
        assert entry.rollup.timezone == before.timezone
        assert entry.rows["rollup_persons"] == len(_sets(lakes["built"], entry.id)[0])
        assert entry.rows["rollup_merges"] == 0 and entry.rows["events"] == before.rows["events"]
        keys = con.execute(
            f"SELECT day, event FROM read_parquet('{lakes['built']}/rollup_persons/project_id={entry.id}/*.parquet')"
        ).fetchall()
        assert keys == sorted(keys, key=lambda k: (k[0], k[1] is not None, k[1] or ""))  # file order
        tz = con.execute(
            f"SELECT timezone FROM read_parquet('{lakes['built']}/rollup_projects/project_id={entry.id}/*.parquet')"
        ).fetchall()
        assert tz == [(ws.project(project).timezone,)]


def test_rollup_scan_pushes_day_and_event_filters_down(
    spark_session: Any, lakes: dict[str, Any], tmp_path: Path
) -> None:
    from kpilot.engines.spark_engine import SparkEngine

    # a copy: Spark would serve a scan of the module's lake from the cached engines' in-memory copy
    shutil.copytree(lakes["built"], tmp_path / "lake")
    engine = SparkEngine(spark_session, tmp_path / "lake")  # not cached: the scan reads the files
    entry = engine.manifest.project("nyc")
    frame = engine._rollup_rows(entry, date(2024, 3, 1), date(2024, 3, 7), {"signup", None})
    spark_session.conf.set("spark.sql.maxMetadataStringLength", "1000")
    try:
        plan = frame._jdf.queryExecution().executedPlan().toString()
    finally:
        spark_session.conf.unset("spark.sql.maxMetadataStringLength")
    pushed = plan[plan.index("PushedFilters: [") :].split("\n", 1)[0]
    for condition in (
        "GreaterThanOrEqual(day,2024-03-01)",
        "LessThanOrEqual(day,2024-03-07)",
        "Or(EqualTo(event,signup),IsNull(event))",
    ):
        assert condition in pushed, pushed
    rows = frame.collect()
    assert rows and {(r[0], r[1]) for r in rows} <= {
        (date(2024, 3, d), e) for d in range(1, 8) for e in ("signup", None)
    }


# ---- merges after the build, switching off, timezones ------------------------------------------------------


def test_merge_after_the_build_is_applied(spark_session: Any, tmp_path: Path) -> None:
    from kpilot.engines.spark_engine import SparkEngine

    ws = Workspace.init(tmp_path / "ws")
    try:
        info = ws.create_project("p", "Europe/Paris")
        ws.store.write_batch(
            info.id,
            [
                normalize(
                    {
                        "event": "view",
                        "distinct_id": "a",
                        "timestamp": "2024-03-01T10:00:00Z",
                        "properties": {},
                    }
                ),
                normalize(
                    {
                        "event": "view",
                        "distinct_id": "b",
                        "timestamp": "2024-03-02T10:00:00Z",
                        "properties": {},
                    }
                ),
            ],
        )
        ws.store.write_batch(info.id, [normalize(_identify("a", "b", "2024-03-05T10:00:00Z"))])
        export_lake(ws, tmp_path / "lake")
        engine = SparkEngine(spark_session, tmp_path / "lake")
        spec = parse_spec(
            {
                "kind": "trends",
                "date_from": "2024-03-01",
                "date_to": "2024-03-04",
                "math": "unique",
                "interval": "month",
                "event": "view",
            }
        )
        got = run_query(engine, info, spec)
        assert engine.last_source == "rollups"
        assert got == {"series": [{"date": "2024-03-01", "value": 1}]}
        assert got == run_query(DuckDBEngine(ws.store, rollups=False), info, spec)
        # the stored sets still hold both ids: without the merge the answer would be 2
        entry = engine.manifest.project("p")
        loaded = engine.load_rollups(entry, date(2024, 2, 1), date(2024, 3, 4), {"view"})
        assert len(loaded.survivor) == 1
        assert answer(Rollups(info.id, info.timezone, by_event=loaded.by_event), spec) == {
            "series": [{"date": "2024-03-01", "value": 2}]
        }
        # not answerable (another timezone) or rollups off: raw events, same numbers
        tokyo = parse_spec({**spec.model_dump(mode="json", exclude_none=True), "timezone": "Asia/Tokyo"})
        run_query(engine, info, tokyo)
        assert engine.last_source == "events"
        off = SparkEngine(spark_session, tmp_path / "lake", rollups=False)
        assert run_query(off, info, spec) == got and off.last_source == "events"
    finally:
        ws.close()


def test_cli_builds_rollups_of_every_project_of_a_uri_lake(
    spark_session: Any, lakes: dict[str, Any], tmp_path: Path
) -> None:
    from kpilot.cli.main import app
    from kpilot.engines.spark_engine import SparkEngine

    ws = Workspace.init(tmp_path / "ws")
    try:
        info = ws.create_project("p", "America/New_York")
        ws.create_project("empty")
        ws.store.write_batch(
            info.id,
            [
                normalize(
                    {
                        "event": "view",
                        "distinct_id": "a",
                        "timestamp": "2024-03-02T03:00:00Z",
                        "properties": {},
                    }
                )
            ],
        )
        lake = tmp_path / "lake"
        export_lake(ws, lake)
    finally:
        ws.close()
    runner = CliRunner()
    res = runner.invoke(
        app, ["--home", str(tmp_path / "none"), "rollups", "build", "--lake", lake.as_uri(), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {p["name"]: p["rollup"]["built_by"] for p in out["projects"]} == {"p": "spark", "empty": "spark"}
    manifest = read_manifest(lake)
    assert manifest is not None
    assert manifest.project("p").rollup is not None and manifest.project("p").rows["rollup_persons"] == 2
    assert manifest.project("empty").rows["rollup_persons"] == 0
    # 03:00 UTC on Mar 2 is Mar 1 in New York
    engine = SparkEngine(spark_session, lake)
    spec = parse_spec({"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-02", "math": "dau"})
    assert run_query(engine, manifest.project("p").info(), spec) == {
        "series": [{"date": "2024-03-01", "value": 1}, {"date": "2024-03-02", "value": 0}]
    }
    assert engine.last_source == "rollups"
    assert run_query(engine, manifest.project("empty").info(), spec)["series"][0]["value"] == 0
    assert engine.last_source == "rollups"
    res = runner.invoke(
        app, ["--home", str(tmp_path / "none"), "rollups", "build", "--lake", str(lake), "-p", "nope"]
    )
    assert res.exit_code != 0 and "no project named 'nope'" in res.output


def test_failed_build_leaves_the_project_on_raw_events(spark_session: Any, tmp_path: Path) -> None:
    from kpilot.engines.spark_engine import SparkEngine
    from kpilot.errors import WorkspaceError

    ws = Workspace.init(tmp_path / "ws")
    try:
        info = ws.create_project("p")
        ws.store.write_batch(
            info.id,
            [
                normalize(
                    {
                        "event": "view",
                        "distinct_id": "a",
                        "timestamp": "2024-03-01T10:00:00Z",
                        "properties": {},
                    }
                )
            ],
        )
        lake = tmp_path / "lake"
        export_lake(ws, lake)
    finally:
        ws.close()
    # a lake written by another tool, with person ids beyond what a 32-bit roaring bitmap holds
    ids = next((lake / "person_distinct_ids" / f"project_id={info.id}").glob("*.parquet"))
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT distinct_id, person_id + 4294967296 AS person_id FROM read_parquet('{ids}')) "
        f"TO '{tmp_path / 'ids.parquet'}' (FORMAT PARQUET)"
    )
    shutil.move(tmp_path / "ids.parquet", ids)
    engine = SparkEngine(spark_session, lake)
    with pytest.raises(WorkspaceError, match=r"0\.\.4294967295"):
        engine.build_rollups("p")
    manifest = read_manifest(lake)
    assert manifest is not None and manifest.project("p").rollup is None  # cleared before writing
    spec = parse_spec({"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-01", "math": "dau"})
    assert run_query(engine, info, spec) == {"series": [{"date": "2024-03-01", "value": 1}]}
    assert engine.last_source == "events"
