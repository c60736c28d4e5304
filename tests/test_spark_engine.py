"""Apache Spark engine: every acceptance spec gives the same result on Spark as on DuckDB.

The fixture workspace (tests/acceptance_specs.py) is exported to a Parquet lake in a temporary directory;
one local SparkSession serves the whole test session. Floats may differ in the last bits (Spark and
DuckDB sum and interpolate in different orders), so they compare with a relative tolerance of 1e-9.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.engines.lake import export_lake
from kpilot.engines.spark_sql import spark_literal, to_spark_sql
from kpilot.workspace import Workspace
from tests.acceptance_specs import SPECS, load_fixture

# py4j (PySpark 3.5) lets a gateway socket be collected unclosed; nothing of ours to fix
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
HAVE_JAVA = bool(os.environ.get("JAVA_HOME") or shutil.which("java"))
needs_java = pytest.mark.skipif(not HAVE_JAVA, reason="Spark needs a Java runtime (17+): none found")


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Path]]:
    root = tmp_path_factory.mktemp("spark")
    ws = Workspace.init(root / "ws")
    load_fixture(ws)
    lake = root / "lake"
    export_lake(ws, lake)
    yield ws, lake
    ws.close()


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    if not HAVE_JAVA:
        pytest.skip("Spark needs a Java runtime (17+): none found")
    from kpilot.engines.spark_engine import spark_session as make

    session = make(
        "local[2]",
        shuffle_partitions=1,
        app_name="kpilot-tests",
        # tiny data: no adaptive re-planning; the C1 JIT alone warms up faster for a short run. C1 alone gets
        # a 48 MB code cache by default, and the whole suite's generated code filled it: the JIT switched
        # itself off and the JVM died mid-run (every later Spark test failed). The tiered default is 240 MB.
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.adaptive.enabled": "false",
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m",
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def spark(spark_session: Any, fixture_ws: tuple[Workspace, Path]) -> Any:
    from kpilot.engines.spark_engine import SparkEngine

    # raw events only: these tests compare the compiled SQL on both engines (rollups: test_spark_rollups.py)
    return SparkEngine(spark_session, fixture_ws[1], cache=True, rollups=False)


# ---- comparison -----------------------------------------------------------------------------------------


def assert_same(got: Any, expected: Any, path: str = "result") -> None:
    """Equal structure and values; floats within 1e-9 relative (or 1e-9 absolute near zero)."""
    if isinstance(expected, float) or isinstance(got, float):
        assert isinstance(got, int | float) and isinstance(expected, int | float), (path, got, expected)
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9), (path, got, expected)
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), (path, got, expected)
        for k in expected:
            assert_same(got[k], expected[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), (path, got, expected)
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, f"{path}[{i}]")
    else:
        assert type(got) is type(expected) and got == expected, (path, got, expected)


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


@needs_java
@pytest.mark.parametrize(("name", "project", "spec"), SPECS, ids=[s[0] for s in SPECS])
def test_spark_gives_the_duckdb_result(
    name: str, project: str, spec: dict[str, Any], fixture_ws: tuple[Workspace, Path], spark: Any
) -> None:
    ws, _ = fixture_ws
    parsed = parse_spec(spec)
    expected = run_query(DuckDBEngine(ws.store), ws.project(project), parsed)
    # the fixture must make every spec say something, or the comparison proves little
    assert any(x != 0 for x in _numbers(expected)), f"{name}: all zeros on the fixture"
    lake_project = spark.manifest.project(project).info()
    assert lake_project == ws.project(project)
    assert_same(run_query(spark, lake_project, parsed), expected)


# ---- engine details -------------------------------------------------------------------------------------


def test_literals_are_respelled_for_spark_only_inside_strings() -> None:
    sql = """SELECT 'it''s', 'a\\b', "col""x" -- don't
FROM t /* it's */ WHERE x LIKE '%\\%%' ESCAPE '\\' AND y = ''"""
    assert to_spark_sql(sql) == (
        """SELECT 'it\\'s', 'a\\\\b', "col""x" -- don't
FROM t /* it's */ WHERE x LIKE '%\\\\%%' ESCAPE '\\\\' AND y = ''"""
    )
    assert spark_literal("a'b\\c") == "'a\\'b\\\\c'"
    with pytest.raises(ValueError, match="unterminated"):
        to_spark_sql("SELECT 'open")


@needs_java
def test_fetchall_returns_duckdb_types_whatever_the_process_timezone(
    spark: Any, fixture_ws: tuple[Workspace, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, _ = fixture_ws
    sql = (
        "SELECT TIMESTAMP '2024-03-10 07:30:00.250000' AS ts, DATE '2024-03-10' AS d, "
        "CAST(count(*) AS BIGINT) AS n, avg(1) AS f, 'x''\\y' AS s FROM person_distinct_ids"
    )
    expected = ws.store.fetchall(sql)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        got = spark.fetchall(sql)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert got == expected
    assert [type(v) for v in got[0]] == [type(v) for v in expected[0]]


@needs_java
def test_person_properties_view_resolves_like_duckdb(spark: Any, fixture_ws: tuple[Workspace, Path]) -> None:
    ws, _ = fixture_ws
    sql = "SELECT project_id, person_id, key, value FROM person_properties ORDER BY 1, 2, 3"
    expected = ws.store.fetchall(sql)
    assert len(expected) > 50
    assert spark.fetchall(sql) == expected


@needs_java
def test_query_cli_runs_on_spark(fixture_ws: tuple[Workspace, Path], spark: Any, tmp_path: Path) -> None:
    from kpilot.cli.main import app

    _, lake = fixture_ws
    spec = tmp_path / "spec.json"
    spec.write_text('{"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-03", "math": "dau"}')
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "--home",
            str(tmp_path / "none"),
            "query",
            str(spec),
            "--engine",
            "spark",
            "--lake",
            str(lake),
            "-p",
            "acme",
        ],
    )
    assert res.exit_code == 0, res.output
    import json

    ws, _ = fixture_ws
    expected = run_query(DuckDBEngine(ws.store), ws.project("acme"), parse_spec(spec.read_text()))
    assert json.loads(res.stdout) == json.loads(json.dumps(expected))


@needs_java
def test_empty_lake_and_switching_engines_on_one_session(
    spark_session: Any, spark: Any, fixture_ws: tuple[Workspace, Path], tmp_path: Path
) -> None:
    from kpilot.engines.spark_engine import SparkEngine

    ws = Workspace.init(tmp_path / "ws")
    try:
        empty = ws.create_project("empty", "Asia/Tokyo")
        export_lake(ws, tmp_path / "lake")
        spec = parse_spec(
            {"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-02", "math": "dau"}
        )
        other = SparkEngine(spark_session, tmp_path / "lake")
        result = run_query(other, other.manifest.project(None).info(), spec)
        assert other.last_source == "rollups"  # the empty project's rollup: no sets, zeros
        assert result == run_query(DuckDBEngine(ws.store, rollups=False), empty, spec)
        assert [p["value"] for p in result["series"]] == [0, 0]
        # the module's engine registers its own views again before its next query
        main_ws, _ = fixture_ws
        acme = main_ws.project("acme")
        assert run_query(spark, acme, spec) == run_query(DuckDBEngine(main_ws.store), acme, spec)
        assert run_query(other, empty, spec) == result
    finally:
        ws.close()


def test_missing_lake_is_named(tmp_path: Path) -> None:
    from kpilot.engines.spark_engine import SparkEngine, SparkUnavailable

    # the manifest is checked before any Spark call, so no session is needed here
    with pytest.raises(SparkUnavailable, match="no kpilot lake at"):
        SparkEngine(None, tmp_path)  # type: ignore[arg-type]


@needs_java
def test_lake_given_as_uri_is_read_through_spark(
    spark_session: Any, spark: Any, fixture_ws: tuple[Workspace, Path]
) -> None:
    from kpilot.engines.spark_engine import SparkEngine

    ws, lake = fixture_ws
    by_uri = SparkEngine(spark_session, lake.as_uri())
    assert by_uri.lake.startswith("file:///")
    assert by_uri.manifest == spark.manifest
    spec = parse_spec({"kind": "trends", "date_from": "2024-03-01", "date_to": "2024-03-07", "math": "wau"})
    nyc = ws.project("nyc")
    assert run_query(by_uri, nyc, spec) == run_query(DuckDBEngine(ws.store), nyc, spec)
