"""The demo's business data: every source is filled, consistent with the demo persons, and reconciles."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from kpilot.compute.engine import DuckDBEngine, run_query
from kpilot.compute.spec import parse_spec
from kpilot.demo.runner import DemoConfig, run_demo
from kpilot.revenue.schema import TABLES
from kpilot.workspace import Workspace


@pytest.mark.slow
def test_demo_fills_every_business_source_consistently(tmp_path: Path) -> None:
    report = run_demo(DemoConfig(tmp_path / "ws", persons=600, days=75, end=date(2024, 6, 30)))
    assert "business" in report.generators
    ws = Workspace.open(tmp_path / "ws", read_only=True)
    try:
        project = ws.project("demo")
        counts = {
            t: ws.store.fetchall(f"SELECT count(*) FROM {t} WHERE project_id = ?", [project.id])[0][0]
            for t in TABLES
        }
        assert all(n > 0 for n in counts.values()), counts
        # every customer is a person of the product events
        orphans = ws.store.fetchall(
            "SELECT count(*) FROM customers c LEFT JOIN person_distinct_ids p ON p.project_id = c.project_id "
            "AND p.distinct_id = c.distinct_id WHERE c.project_id = ? AND p.person_id IS NULL",
            [project.id],
        )[0][0]
        assert orphans == 0
        engine = DuckDBEngine(ws.store)

        def q(kind: str, measure: str) -> dict:  # type: ignore[type-arg]
            spec = {"kind": kind, "measure": measure, "date_from": "2024-04-17", "date_to": "2024-06-30"}
            return run_query(engine, project, parse_spec(spec))

        moves = q("revenue", "movements")["series"]
        assert moves[-1]["mrr_end"] > 0
        for p in moves:
            total = (
                p["mrr_start"] + p["new"] + p["expansion"] + p["reactivation"] - p["contraction"] - p["churn"]
            )
            assert total == pytest.approx(p["mrr_end"], abs=1e-6)
        assert q("voice", "nps")["total"]["responses"] > 0
        requests = q("voice", "feature_requests")["requests"]
        assert any(r["merged"] for r in requests)
    finally:
        ws.close()
