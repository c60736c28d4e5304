"""``kpilot audit``: hand-built scenarios for each check, with the expected counts worked out in comments."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kpilot.cli.main import app
from kpilot.collect.importer import import_events
from kpilot.collect.normalize import normalize
from kpilot.quality import AuditOptions, AuditReport, run_audit
from kpilot.workspace import Workspace
from tests.conftest import Env, ev

NOW = datetime(2024, 6, 1)
RECEIVED = datetime(2024, 3, 10, 12, 0)


def _store(env: Env, rows: list[dict[str, Any]], received_at: datetime = RECEIVED) -> None:
    env.ws.store.write_batch(env.project.id, [normalize(r) for r in rows], received_at=received_at)


def _audit(env: Env, **opts: Any) -> AuditReport:
    return run_audit(env.ws, env.project, AuditOptions(now=NOW, **opts))


def _row(report: AuditReport, day: str | None, event: str | None) -> dict[str, Any]:
    wanted = (date.fromisoformat(day) if day else None, event)
    for r in report.rows:
        if (r.day, r.event) == wanted:
            return r.as_dict()
    raise AssertionError(f"no row for {wanted}: {[(r.day, r.event) for r in report.rows]}")


def test_clean_data_is_reported_clean(env: Env) -> None:
    _store(env, [ev("x", "a", "2024-03-01T10:00:00Z", n=1), ev("x", "b", "2024-03-02T10:00:00Z", n=2)])
    report = _audit(env)
    assert report.status == "clean"
    assert report.issues() == []
    assert report.summary().startswith("Clean: 2 events over 2 day(s)")
    assert _row(report, "2024-03-01", "x")["volume"] == 1


def test_rejected_rows_by_claimed_event_and_day(env: Env, tmp_path: Path) -> None:
    lines = [
        '{"event": "signup", "distinct_id": "a", "timestamp": "2024-03-01T10:00:00Z"}',  # fine
        '{"event": "signup", "timestamp": "2024-03-01T11:00:00Z"}',  # no distinct_id: rejected
        '{"event": "signup", "timestamp": "2024-03-02T11:00:00Z"}',  # rejected, next day
        '{"event": "click", "distinct_id": "a", "timestamp": "not a time"}',  # rejected, day unreadable
        "{not json",  # rejected, nothing readable
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    import_events(env.ws, env.project, [path])
    report = _audit(env)
    assert _row(report, "2024-03-01", "signup")["volume"] == 1
    assert _row(report, "2024-03-01", "signup")["rejected"] == 1
    assert _row(report, "2024-03-02", "signup") == {
        **_row(report, "2024-03-02", "signup"),
        "volume": 0,
        "rejected": 1,
    }
    assert _row(report, None, "click")["rejected"] == 1  # "not a" is no day
    assert _row(report, None, None)["rejected"] == 1
    assert report.totals().rejected == 4
    assert report.status == "warnings"
    # 4 rejected of 5 rows read: 80%
    assert report.issues()[0] == "4 row(s) rejected at import (80.00%)"
    reasons = {r["reason"]: r for r in report.rejection_reasons}
    assert reasons["distinct_id is missing"]["count"] == 2
    assert reasons["distinct_id is missing"]["example"] == f"{path}:2"
    assert len(reasons) == 3
    # a date range keeps rejections of its days, and those without a readable day
    ranged = _audit(env, date_from=date(2024, 3, 2), date_to=date(2024, 3, 2))
    assert ranged.totals().rejected == 3


def test_duplicates_come_from_ingest_stats(env: Env) -> None:
    rows = [
        ev("x", "a", "2024-03-01T10:00:00Z"),
        ev("x", "a", "2024-03-01T11:00:00Z"),
        ev("y", "a", "2024-03-02T10:00:00Z"),
    ]
    _store(env, rows)
    _store(env, rows[:2])  # both already stored: 2 duplicates of x on Mar 1
    _store(env, rows[2:] * 2)  # y twice in one batch, already stored: 2 duplicates of y on Mar 2
    report = _audit(env)
    assert _row(report, "2024-03-01", "x")["deduplicated"] == 2
    assert _row(report, "2024-03-02", "y")["deduplicated"] == 2
    assert _row(report, "2024-03-01", "x")["volume"] == 2
    assert report.status == "clean"  # duplicates were dropped: a notice, not an issue
    assert "4 duplicate row(s) dropped at ingestion (not counted twice)" in report.notices()


def test_future_and_past_timestamps_with_thresholds(env: Env) -> None:
    # received 2024-03-10 12:00 (see RECEIVED)
    _store(
        env,
        [
            ev("x", "a", "2024-03-10T12:30:00Z"),  # 30 min after receipt: fine
            ev("x", "a", "2024-03-10T14:00:00Z"),  # 2 h after receipt: future
            ev("x", "a", "2023-03-01T12:00:00Z"),  # 375 days before receipt: past
            ev("x", "a", "2023-06-01T12:00:00Z"),  # 283 days before: fine with 365
        ],
    )
    # timestamp after "now" although received even later (a clock far ahead at the receiver)
    _store(env, [ev("y", "b", "2024-07-01T00:00:00Z")], received_at=datetime(2024, 8, 1))
    report = _audit(env)
    assert _row(report, "2024-03-10", "x")["future_timestamps"] == 1
    assert _row(report, "2023-03-01", "x")["past_timestamps"] == 1
    assert _row(report, "2023-06-01", "x")["past_timestamps"] == 0
    assert _row(report, "2024-07-01", "y")["future_timestamps"] == 1
    assert report.totals().future == 2 and report.totals().past == 1
    # tighter thresholds: 20 minutes ahead and 200 days back
    strict = _audit(env, future_hours=1 / 3, past_days=200)
    assert strict.totals().future == 3
    assert strict.totals().past == 2
    assert any("timestamped in the future" in i for i in report.issues())


def test_anonymous_share_follows_the_identification_rule(env: Env) -> None:
    _store(
        env,
        [
            ev("x", "solo", "2024-03-01T10:00:00Z"),  # one id, never identified: anonymous
            ev("x", "solo", "2024-03-01T11:00:00Z"),  # anonymous
            ev("x", "known", "2024-03-01T10:00:00Z"),  # identified by its own $identify below
            ev("$identify", "known", "2024-03-01T10:01:00Z"),
            ev("x", "anon-1", "2024-03-01T10:00:00Z"),  # merged into user-1 by an alias: identified
            ev("$create_alias", "user-1", "2024-03-01T10:02:00Z", alias="anon-1"),
        ],
    )
    report = _audit(env)
    x = _row(report, "2024-03-01", "x")
    # 4 x events, 2 of them by "solo"
    assert (x["volume"], x["anonymous"], x["anonymous_share"]) == (4, 2, 0.5)
    assert report.totals().anonymous == 2
    assert "33.3% of events come from persons never identified" in report.notices()  # 2 of 6


def test_type_change_appearance_and_disappearance(env: Env) -> None:
    _store(
        env,
        [
            # Mar 1: plan string, n integer, flag boolean
            ev("x", "a", "2024-03-01T10:00:00Z", plan="pro", n=1, flag=True),
            # Mar 2: n becomes a string, flag disappears, extra appears; plan null (ignored for types)
            ev("x", "a", "2024-03-02T10:00:00Z", plan=None, n="1", extra=[1]),
            ev(
                "x", "b", "2024-03-02T11:00:00Z", plan="free", n=2.5
            ),  # n also a number today: {number, string}
            # no x on Mar 3; Mar 4 compares with Mar 2: extra disappears, n back to number only
            ev("x", "a", "2024-03-04T10:00:00Z", plan="pro", n=3),
            # another event name is compared only with itself
            ev("y", "a", "2024-03-01T10:00:00Z", k=1),
            ev("y", "a", "2024-03-04T10:00:00Z", k=2.0),  # integer -> decimal: still number
        ],
    )
    report = _audit(env)
    changes = {
        (d.day.isoformat(), d.event, d.key, d.change, tuple(d.types_before), tuple(d.types_after))
        for d in report.drift
    }
    assert changes == {
        ("2024-03-02", "x", "n", "type_changed", ("number",), ("number", "string")),
        ("2024-03-02", "x", "flag", "disappeared", ("boolean",), ()),
        ("2024-03-02", "x", "extra", "appeared", (), ("array",)),
        ("2024-03-04", "x", "n", "type_changed", ("number", "string"), ("number",)),
        ("2024-03-04", "x", "extra", "disappeared", ("array",), ()),
    }
    assert all(
        d.previous_day.isoformat() == "2024-03-02" for d in report.drift if d.day.isoformat() == "2024-03-04"
    )
    assert _row(report, "2024-03-02", "x")["schema_changes"] == 3
    assert report.status == "warnings"
    assert "2 property type change(s)" in report.issues()
    assert "2 property disappearance(s)" in report.issues()
    assert "1 property appearance(s)" in report.notices()
    # a range starting on Mar 4 still compares Mar 4 with Mar 2 (the previous day with the event)
    ranged = _audit(env, date_from=date(2024, 3, 4))
    assert {(d.key, d.change) for d in ranged.drift} == {("n", "type_changed"), ("extra", "disappeared")}
    assert {r.day for r in ranged.rows} == {date(2024, 3, 4)}


def test_only_appearance_keeps_the_data_clean(env: Env) -> None:
    _store(env, [ev("x", "a", "2024-03-01T10:00:00Z"), ev("x", "a", "2024-03-02T10:00:00Z", new=1)])
    report = _audit(env)
    assert [d.change for d in report.drift] == ["appeared"]
    assert report.status == "clean"


def test_projects_are_audited_separately(env: Env) -> None:
    other = env.other_project()
    _store(env, [ev("x", "a", "2024-03-01T10:00:00Z", n=1)])
    _store(other, [ev("x", "a", "2024-03-02T10:00:00Z", n="text")])
    assert _audit(env).drift == []
    assert _audit(other).totals().volume == 1


def test_cli_exits_zero_with_json_and_tables(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    env = Env(ws, ws.create_project("p"))
    _store(env, [ev("x", "a", "2024-03-01T10:00:00Z", n=1), ev("x", "a", "2024-03-02T10:00:00Z", n="1")])
    ws.close()
    runner = CliRunner()
    out = runner.invoke(app, ["--home", str(tmp_path / "ws"), "audit", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["status"] == "warnings"
    assert data["schema_drift"][0]["key"] == "n"
    assert data["options"]["day"] == "UTC"
    human = runner.invoke(app, ["--home", str(tmp_path / "ws"), "audit", "--from", "2024-03-01", "--by-day"])
    assert human.exit_code == 0
    assert "Check before trusting the numbers" in human.stdout
    assert "changed type number -> string" in human.stdout


@pytest.mark.parametrize("bad", ["--future-hours=-1", "--from=03/01/2024"])
def test_cli_rejects_bad_options(tmp_path: Path, bad: str) -> None:
    Workspace.init(tmp_path / "ws").close()
    out = CliRunner().invoke(app, ["--home", str(tmp_path / "ws"), "audit", bad])
    assert out.exit_code == 2
