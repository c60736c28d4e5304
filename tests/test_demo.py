"""``kpilot demo``: determinism, minimums, a real funnel, merged identities, seasonality, churn, sessions,
the generator registry and the CLI's workspace safety. Small populations keep the tests fast."""

from __future__ import annotations

import inspect
import itertools
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from kpilot.cli import demo_cmd
from kpilot.cli.main import app
from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.demo import registry
from kpilot.demo.persons import build_persons
from kpilot.demo.product import EVENTS, generate_events
from kpilot.demo.runner import DEFAULT_DAYS, DEFAULT_PERSONS, DemoConfig, DemoReport, run_demo
from kpilot.errors import WorkspaceError
from kpilot.workspace import Workspace

END = date(2024, 6, 30)


def _days(n: int) -> list[date]:
    return DemoConfig(Path("."), days=n, end=END).day_list


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoReport]:
    """One small demo shared by the read-only tests of this module."""
    home = tmp_path_factory.mktemp("demo") / "ws"
    return home, run_demo(DemoConfig(home, seed=7, persons=1500, days=56, end=END))


def _sql(home: Path, sql: str) -> list[tuple[Any, ...]]:
    ws = Workspace.open(home, read_only=True)
    try:
        return ws.store.fetchall(sql)
    finally:
        ws.close()


def _query(home: Path, spec: dict[str, Any]) -> dict[str, Any]:
    ws = Workspace.open(home, read_only=True)
    try:
        return run_query(DuckDBEngine(ws.store), ws.project("demo"), parse_spec(spec))
    finally:
        ws.close()


# ---- generation ----------------------------------------------------------------------------------------------


def test_same_seed_same_events_other_seed_other_events() -> None:
    days = _days(21)

    def make(seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        persons = build_persons(rng, 300, days)
        ev = generate_events(rng, persons, days)
        return ev.person, ev.t, ev.code, persons.anon_id, persons.plan

    a, b, c = make(1), make(1), make(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_same_seed_same_store_contents(tmp_path: Path) -> None:
    digests = []
    for name in ("one", "two"):
        run_demo(DemoConfig(tmp_path / name, seed=3, persons=200, days=14, end=END))
        digests.append(
            _sql(
                tmp_path / name,
                """SELECT count(*), sum(hash(uuid || event || distinct_id || CAST(timestamp AS VARCHAR)
                       || CAST(properties AS VARCHAR))),
                   -- the identity partition (which ids are one person), not the surrogate person numbers
                   (SELECT sum(hash(distinct_id || '|' || root)) FROM (
                       SELECT distinct_id, min(distinct_id) OVER (PARTITION BY person_id) AS root
                       FROM person_distinct_ids)),
                   (SELECT sum(hash(distinct_id || key || coalesce(value, ''))) FROM person_property_writes)
                   FROM events""",
            )[0]
        )
    assert digests[0] == digests[1]
    assert digests[0][0] > 0


def test_defaults_meet_the_minimums() -> None:
    assert DEFAULT_PERSONS >= 5_000 and DEFAULT_DAYS >= 90
    params = inspect.signature(demo_cmd.demo).parameters
    assert params["persons"].default == DEFAULT_PERSONS
    assert params["days"].default == DEFAULT_DAYS
    config = DemoConfig(Path("x"))
    assert (config.persons, config.days) == (DEFAULT_PERSONS, DEFAULT_DAYS)


def test_requested_persons_and_days_are_stored(demo: tuple[Path, DemoReport]) -> None:
    home, report = demo
    assert report.persons_stored == 1500
    first, last, n_days = _sql(
        home, "SELECT min(timestamp), max(timestamp), count(DISTINCT CAST(timestamp AS DATE)) FROM events"
    )[0]
    assert first.date() == date(2024, 5, 6) and last.date() == END  # 56 days ending Jun 30
    assert n_days == 56
    assert report.date_from == date(2024, 5, 6)
    names = {r[0] for r in _sql(home, "SELECT DISTINCT event FROM events")}
    assert names == set(EVENTS)


def test_funnel_is_a_funnel(demo: tuple[Path, DemoReport]) -> None:
    home, _ = demo
    result = _query(
        home,
        {"kind": "funnel", "date_from": "2024-05-06", "date_to": "2024-06-30",
         "steps": ["$pageview", "signed_up", "project_created", "report_shared"]},
    )  # fmt: skip
    counts = [s["count"] for s in result["steps"]]
    assert counts[-1] > 0
    assert all(a > b for a, b in itertools.pairwise(counts)), counts
    # milestones are in funnel order per person: signup < activation < value
    bad = _sql(
        home,
        """WITH f AS (SELECT p.person_id,
                  min(e.timestamp) FILTER (WHERE e.event = 'signed_up') AS s,
                  min(e.timestamp) FILTER (WHERE e.event = 'project_created') AS a,
                  min(e.timestamp) FILTER (WHERE e.event = 'report_shared') AS v
              FROM events e JOIN person_distinct_ids p USING (project_id, distinct_id) GROUP BY 1)
           SELECT count(*) FROM f WHERE a < s OR v < a OR (a IS NOT NULL AND s IS NULL) OR (v IS NOT NULL AND a IS NULL)""",
    )[0][0]
    assert bad == 0


def test_identities_are_merged(demo: tuple[Path, DemoReport]) -> None:
    home, _ = demo
    identifies, merged, mismatched = _sql(
        home,
        """SELECT
             (SELECT count(*) FROM events WHERE event = '$identify'),
             (SELECT count(*) FROM (SELECT person_id FROM person_distinct_ids GROUP BY 1 HAVING count(*) = 2)),
             (SELECT count(*) FROM events e
                JOIN person_distinct_ids u ON u.distinct_id = e.distinct_id
                JOIN person_distinct_ids a ON a.distinct_id = json_extract_string(e.properties, '$."$anon_distinct_id"')
              WHERE e.event = '$identify' AND u.person_id <> a.person_id)""",
    )[0]
    assert identifies > 100
    assert merged == identifies  # every signup joined its anonymous id and user id into one person
    assert mismatched == 0
    # anonymous page views before signup count for the signed-up person
    props = _sql(
        home, "SELECT key, count(DISTINCT distinct_id) FROM person_property_writes GROUP BY 1 ORDER BY 1"
    )
    assert dict(props) == {
        "$initial_utm_source": identifies,
        "country": identifies,
        "email": identifies,
        "plan": identifies,
    }
    first_views = _sql(
        home,
        """SELECT count(*) FILTER (WHERE json_extract_string(properties, '$.utm_source') IS NOT NULL),
                  count(*) FILTER (WHERE distinct_id LIKE 'user-%') FROM events
           WHERE event = '$pageview' AND json_extract_string(properties, '$.utm_source') IS NOT NULL""",
    )[0]
    assert first_views[0] > 0 and first_views[1] == 0  # utm only on first (anonymous) page views


def test_weekly_seasonality(demo: tuple[Path, DemoReport]) -> None:
    home, _ = demo
    rows = _query(home, {"kind": "trends", "math": "dau", "date_from": "2024-05-20", "date_to": "2024-06-30"})
    weekday = [p["value"] for p in rows["series"] if date.fromisoformat(p["date"]).weekday() < 5]
    weekend = [p["value"] for p in rows["series"] if date.fromisoformat(p["date"]).weekday() >= 5]
    assert np.mean(weekend) < 0.75 * np.mean(weekday)


def test_persons_churn(demo: tuple[Path, DemoReport]) -> None:
    home, _ = demo
    # persons who signed up in the first week: how many are active in their second week vs the last week
    early, week2, last_week = _sql(
        home,
        """WITH s AS (SELECT p.person_id FROM events e JOIN person_distinct_ids p USING (project_id, distinct_id)
                      WHERE e.event = 'signed_up' AND e.timestamp < TIMESTAMP '2024-05-13'),
                act AS (SELECT DISTINCT p.person_id, e.timestamp FROM events e
                        JOIN person_distinct_ids p USING (project_id, distinct_id))
           SELECT (SELECT count(*) FROM s),
                  (SELECT count(DISTINCT person_id) FROM act WHERE person_id IN (SELECT * FROM s)
                     AND timestamp >= TIMESTAMP '2024-05-13' AND timestamp < TIMESTAMP '2024-05-20'),
                  (SELECT count(DISTINCT person_id) FROM act WHERE person_id IN (SELECT * FROM s)
                     AND timestamp >= TIMESTAMP '2024-06-24')""",
    )[0]
    assert early > 50
    assert 0 < last_week < week2 < early


def test_sessions_have_several_events(demo: tuple[Path, DemoReport]) -> None:
    home, _ = demo
    totals = _query(home, {"kind": "sessions", "date_from": "2024-06-01", "date_to": "2024-06-30"})["totals"]
    events = _sql(home, "SELECT count(*) FROM events WHERE timestamp >= TIMESTAMP '2024-06-01'")[0][0]
    assert events / totals["sessions"] > 3
    assert 0.03 < totals["bounce_rate"] < 0.5


def test_key_metrics_are_computed(demo: tuple[Path, DemoReport]) -> None:
    _, report = demo
    metrics = {m["name"]: m for m in report.metrics}
    assert {"dau", "wau", "mau", "day_1_retention", "funnel_conversion_rate", "bounce_rate",
            "feature_adoption_rate", "time_to_first_value"} <= set(metrics)  # fmt: skip
    assert all("error" not in m for m in metrics.values()), [m for m in metrics.values() if "error" in m]
    assert metrics["dau"]["value"] < metrics["wau"]["value"] < metrics["mau"]["value"]
    assert 0 < metrics["funnel_conversion_rate"]["value"] < 1
    assert report.metrics_from == date(2024, 6, 1)


def test_the_audit_of_the_demo_is_clean(demo: tuple[Path, DemoReport]) -> None:
    from kpilot.quality import AuditOptions, run_audit

    home, _ = demo
    ws = Workspace.open(home, read_only=True)
    try:
        report = run_audit(ws, ws.project("demo"), AuditOptions(now=datetime(2024, 7, 2)))
    finally:
        ws.close()
    assert report.status == "clean", report.issues()


# ---- registry and workspace safety ---------------------------------------------------------------------------


def test_registered_generators_run_with_their_own_rng(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def extra(ws: Workspace, project: Any, rng: np.random.Generator, persons: Any, days: list[date]) -> None:
        registry.report_progress(0.5)
        calls.append({"project": project.name, "n": persons.n, "days": days, "draw": rng.random()})

    monkeypatch.setitem(registry._REGISTRY, "zz_test", registry.Registered("zz_test", extra, 50, "test", ()))
    seen: list[tuple[str, float]] = []
    report = run_demo(
        DemoConfig(tmp_path / "ws", persons=50, days=7, end=END), lambda s, f: seen.append((s, f))
    )
    assert report.generators[0] == "product"  # order 0 runs first; other sources may be registered too
    assert "zz_test" in report.generators
    assert calls[0]["project"] == "demo" and calls[0]["n"] == 50
    assert calls[0]["days"] == [date(2024, 6, 24 + i) for i in range(7)]
    assert calls[0]["draw"] == registry.generator_rng(42, "zz_test").random()
    assert ("zz_test", 0.5) in seen


def test_workspace_safety(tmp_path: Path) -> None:
    small = {"persons": 30, "days": 5, "end": END}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(WorkspaceError, match="not a kpilot workspace"):
        run_demo(DemoConfig(tmp_path / "other", **small))  # type: ignore[arg-type]
    home = tmp_path / "ws"
    ws = Workspace.init(home)
    ws.create_project("keep")
    ws.close()
    run_demo(DemoConfig(home, **small))  # type: ignore[arg-type]  # added next to "keep"
    with pytest.raises(WorkspaceError, match="already exists"):
        run_demo(DemoConfig(home, **small))  # type: ignore[arg-type]
    before = _sql(home, "SELECT count(*) FROM events")[0][0]
    run_demo(DemoConfig(home, force=True, **small))  # type: ignore[arg-type]
    assert _sql(home, "SELECT count(*) FROM events")[0][0] == before  # replaced, not doubled
    assert _sql(home, "SELECT count(*) FROM ingest_stats WHERE deduplicated > 0")[0][0] == 0
    ws = Workspace.open(home)
    assert [p.name for p in ws.projects()] == ["keep", "demo"]
    ws.close()


def test_cli_demo_exits_zero(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["demo", "--home", str(tmp_path / "ws"), "--persons", "80", "--days", "10", "--end", "2024-06-30"]
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["persons_stored"] == 80 and data["date_from"] == "2024-06-21"
    again = runner.invoke(app, args)
    assert again.exit_code == WorkspaceError.exit_code
    forced = runner.invoke(app, [*args, "--force", "--project", "demo"])
    assert forced.exit_code == 0, forced.output
    assert "Key metrics" in forced.stdout
