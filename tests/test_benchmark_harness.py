"""The benchmark harness at a tiny scale: every implementation must give kpilot's numbers (never a timing test).

The data set spans the 2024 daylight-saving change in New York (March 10), so local days of 23 hours, weekly
buckets and UTC/local conversions are all exercised, along with identity merges after the fact.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from benchmarks import run as harness
from benchmarks.generator import FUNNEL, Params
from benchmarks.plain.common import identity_map
from benchmarks.plain.polars_impl import PolarsImpl
from benchmarks.workload import compare

TINY = Params(events=12_000, persons=300, days=28, start=date(2024, 2, 26), seed=3)


ALL = harness.IMPLS


def _config(work: Path, impls: tuple[str, ...] = ALL) -> harness.Config:
    return harness.Config(
        params=TINY, work=work, timezone="America/New_York", impls=impls, repeat=0, isolate=False
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[harness.Config, dict[str, Any]]:
    cfg = _config(tmp_path_factory.mktemp("bench"))
    return cfg, harness.run_benchmark(cfg, log=lambda _m: None)


def test_all_implementations_agree_with_kpilot(tiny_run: tuple[harness.Config, dict[str, Any]]) -> None:
    cfg, record = tiny_run
    assert record["agreement"] == {"ok": True, "checked": list(ALL), "differences": []}
    assert record["generated"]["events"] == record["import"]["parquet"]["imported"]
    # the import was measured with and without rollup maintenance, on the same rows
    imports = record["import"]
    assert imports["parquet"]["rollups"] and not imports["parquet_without_rollups"]["rollups"]
    assert imports["parquet_without_rollups"]["imported"] == imports["parquet"]["imported"]
    assert set(imports["rollup_cost"]) == {"extra_seconds", "throughput_loss"}
    assert record["generated"]["second_device_merges"] > 0  # merges after the fact are part of the data
    assert set(record["impls"]["pandas"]["per_query"]) >= {
        "dau",
        "wau",
        "mau",
        "retention",
        "funnel",
        "sessions",
    }
    # the README renders from the JSON record
    results = cfg.work / "results"
    results.mkdir()
    (results / "tiny.json").write_text(json.dumps(record))
    text = harness.write_readme(results).read_text()
    assert (
        "| kpilot |" in text
        and "| retention |" in text
        and "| kpilot_events |" in text
        and "Maintaining the rollups" in text
    )


def test_plain_implementations_follow_kpilot_on_edge_settings(
    tiny_run: tuple[harness.Config, dict[str, Any]],
) -> None:
    """Options the standard workload leaves at their defaults: the session cap, a short funnel window."""
    cfg, _ = tiny_run
    first, last = TINY.start.isoformat(), date(2024, 3, 24).isoformat()
    specs = [
        (
            "sessions",
            {
                "kind": "sessions",
                "date_from": first,
                "date_to": last,
                "inactivity_minutes": 300,
                "max_hours": 1,
            },
        ),
        ("sessions", {"kind": "sessions", "date_from": first, "date_to": last, "engaged_seconds": 0}),
        (
            "funnel",
            {
                "kind": "funnel",
                "date_from": first,
                "date_to": last,
                "steps": list(FUNNEL[:3]),
                "window": {"value": 1, "unit": "hour"},
            },
        ),
        (
            "retention",
            {
                "kind": "retention",
                "date_from": first,
                "date_to": "2024-03-12",
                "period": "week",
                "intervals": 3,
                "start_event": None,
                "return_event": None,
            },
        ),
        ("stickiness", {"kind": "stickiness", "date_from": "2024-03-08", "date_to": "2024-03-12"}),
    ]
    kpilot, ws = harness._kpilot_runner(cfg.work / f"ws-{cfg.tag}")
    expected = [kpilot(name, spec) for name, spec in specs]
    ws.close()
    raw, ws = harness._kpilot_runner(cfg.work / f"ws-{cfg.tag}", rollups=False)
    for (name, spec), want in zip(specs, expected, strict=True):  # floats: DuckDB sums in any order
        assert compare(want, raw(name, spec), f"kpilot_events {spec}") == []
    ws.close()
    data = next(cfg.work.glob("data-*.parquet"))
    for impl in harness.IMPLS[2:]:
        plain = harness._plain(impl)
        plain.load([str(data)], cfg.timezone)
        for (name, spec), want in zip(specs, expected, strict=True):
            assert compare(want, plain.run(name, spec), f"{impl} {spec}") == []


def test_a_wrong_implementation_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = PolarsImpl._retention

    def off_by_one(self: PolarsImpl, spec: dict[str, Any]) -> list[list[int]]:
        table = original(self, spec)
        table[-1][0] += 1
        return table

    monkeypatch.setattr(PolarsImpl, "_retention", off_by_one)
    with pytest.raises(harness.DisagreementError, match=r"polars vs kpilot: retention\[11\]\[0\]"):
        harness.run_benchmark(_config(tmp_path, ("kpilot", "polars")), log=lambda _m: None)


def test_compare_lists_every_difference_with_its_path() -> None:
    assert compare([1, [2.0, None]], [1, [2.0 + 1e-12, None]]) == []
    assert compare([1, [2, 3]], [1, [2, 4]], "q") == ["q[1][1]: 3 != 4"]
    assert compare([0.5], [None], "r") == ["r[0]: 0.5 != None"]
    assert compare([1, 2], [1], "s") == ["s: length 2 != 1"]


def test_identity_map_is_transitive() -> None:
    # a~u and d~u make one person; b~c is another; a self-link is ignored.
    m = identity_map([("a", "u"), ("d", "u"), ("c", "b"), ("x", "x")])
    assert m["a"] == m["u"] == m["d"]
    assert m["b"] == m["c"] != m["a"]
    assert "x" not in m


def test_import_upkeep_measures_pairs_and_the_cost_of_their_sums(tmp_path: Path) -> None:
    from dataclasses import replace

    from benchmarks import import_upkeep
    from benchmarks.generator import generate

    base, extra = tmp_path / "base.parquet", tmp_path / "extra.parquet"
    generate(TINY, base)
    generate(replace(TINY, events=2_000, seed=4), extra)  # the same persons' ids, other events
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    import_upkeep.main(
        ["--base", str(base), "--extra", str(extra), "--pairs", "2", "--work", str(tmp_path),
         "--out", str(out), "--md", str(md)]
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert [r["rollups"] for r in result["with"]] == [True, True]
    assert [r["rollups"] for r in result["without"]] == [False, False]
    imported = {r["imported"] for r in result["with"] + result["without"]}
    assert len(imported) == 1 and 0 < imported.pop() <= 2_000
    # the upkeep's phases happen only with it; the auto choice caught the sessions up at the end
    assert all(r["phases"].get("sessions", 0) > 0 for r in result["with"])
    assert all("sessions" not in r["phases"] for r in result["without"])
    on = sum(r["seconds"] for r in result["with"])
    off = sum(r["seconds"] for r in result["without"])
    assert result["summary"]["cost_of_sums"] == pytest.approx(1 - off / on)
    assert "Cost of the summed times" in md.read_text()
