"""Metric catalog: shipped metrics load and build valid queries; the loader reports every problem with file
and field; value selectors and reducers on hand-worked results; evaluation on hand-built events; CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kpilot.catalog import (
    CatalogError,
    Metric,
    evaluate_metric,
    format_value,
    load_catalog,
    load_catalog_from,
)
from kpilot.catalog.selectors import PathError, ValueReadError, parse_path, reduce_value
from kpilot.cli.main import app
from kpilot.compute.spec import KINDS, parse_spec
from kpilot.errors import NotFoundError, SpecError
from kpilot.workspace import Workspace
from tests.conftest import Env, ev

# ---- the shipped catalog ----------------------------------------------------------------------------------

EVENT_ANALYTICS = {
    "dau", "wau", "mau", "dau_mau_stickiness", "wau_mau", "total_events", "active_days_per_user",
    "session_count", "avg_session_duration", "median_session_duration", "sessions_per_user", "bounce_rate",
    "engagement_rate", "feature_adoption_rate", "time_to_first_value", "activation_rate",
    "funnel_conversion_rate", "funnel_drop_off", "signup_conversion_rate", "day_1_retention",
    "day_7_retention", "week_1_retention", "user_churn_rate_weekly", "user_retention_rate_weekly", "signups",
}  # fmt: skip


def test_every_shipped_metric_loads_and_builds_a_valid_query() -> None:
    catalog = load_catalog()
    assert set(catalog.names) >= EVENT_ANALYTICS
    for metric in catalog:
        assert metric.source.endswith(".yaml")
        if metric.query is None:
            assert metric.derived is not None
            continue
        spec = metric.build_query("2024-03-01", "2024-03-31")
        assert spec["date_from"] == "2024-03-01" and spec["date_to"] == "2024-03-31"
        if metric.kind in KINDS:
            parse_spec(spec)  # raises on an invalid spec


def test_load_catalog_is_cached_and_get_suggests_names() -> None:
    assert load_catalog() is load_catalog()
    with pytest.raises(NotFoundError, match="did you mean dau"):
        load_catalog().get("daus")


def test_list_filters_by_category_and_groups_categories_in_order() -> None:
    catalog = load_catalog()
    retention = catalog.list("retention")
    assert retention and all(m.category == "retention" for m in retention)
    categories = [m.category for m in catalog.list()]
    assert categories.index("engagement") < categories.index("conversion") < categories.index("retention")


def test_build_query_fills_parameters_with_types() -> None:
    m = load_catalog().get("funnel_conversion_rate")
    spec = m.build_query("2024-01-01", "2024-01-31", steps="a, b ,c", window_days="3")
    assert spec["steps"] == ["a", "b", "c"]
    assert spec["window"] == {"value": 3, "unit": "day"}
    default = m.build_query("2024-01-01", "2024-01-31")
    assert default["steps"] == ["signed_up", "project_created", "report_shared"]
    assert default["window"]["value"] == 14


def test_parameter_errors_name_the_parameter() -> None:
    m = load_catalog().get("funnel_conversion_rate")
    with pytest.raises(SpecError, match="no parameter 'stepz'"):
        m.build_query("2024-01-01", "2024-01-02", stepz="a,b")
    with pytest.raises(SpecError, match=r"window_days.*integer"):
        m.build_query("2024-01-01", "2024-01-02", window_days="soon")


# ---- the loader reports everything at once ------------------------------------------------------------------

GOOD = {
    "name": "good_metric",
    "title": "Good",
    "category": "engagement",
    "description": "d",
    "formula": "f",
    "unit": "count",
    "direction": "higher_is_better",
    "query": {"kind": "trends", "math": "dau"},
    "value": "series[-1].value",
}


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))  # JSON is YAML


def test_loader_reports_every_problem_with_file_and_field(tmp_path: Path) -> None:
    _write(
        tmp_path / "a.yaml",
        {
            "metrics": [
                {**GOOD, "name": "bad_unit", "unit": "furlongs", "title": ""},
                {
                    **GOOD,
                    "name": "bad_params",
                    "query": {"kind": "trends", "event": "{{evnt}}"},
                    "parameters": {"event": {"description": "e"}},
                },
                GOOD,
            ]
        },
    )
    (tmp_path / "b.yaml").write_text("metrics:\n  - name: x\n    title: [unclosed\n")
    _write(
        tmp_path / "c.yaml",
        {
            "metrics": [
                {**GOOD, "name": "bad_query", "query": {"kind": "funnel", "steps": ["only_one"]}},
                {**GOOD, "name": "bad_value", "value": {"path": "series[x]", "reduce": "average"}},
                {**GOOD, "name": "bad_args", "value": {"path": "rows", "reduce": "retention_rate"}},
                GOOD,  # duplicate of a.yaml's
                {**GOOD, "name": "Bad-Name"},
                {**GOOD, "name": "dated", "query": {"kind": "trends", "date_from": "2024-01-01"}},
            ]
        },
    )
    _write(
        tmp_path / "d.yaml",
        {"metrics": [{k: v for k, v in GOOD.items() if k not in ("query", "value")} | {
            "name": "ratio_of_nothing", "derived": {"of": ["good_metric", "missing_metric"]}}]},
    )  # fmt: skip
    with pytest.raises(CatalogError) as info:
        load_catalog_from([tmp_path])
    found = {(p.file, p.field) for p in info.value.problems}
    expected = {
        ("a.yaml", "metrics[0] (bad_unit).unit"),
        ("a.yaml", "metrics[0] (bad_unit).title"),
        ("a.yaml", "metrics[1] (bad_params).query.event"),
        ("a.yaml", "metrics[1] (bad_params).parameters.event"),
        ("b.yaml", "line 4"),
        ("c.yaml", "metrics[0] (bad_query).query.steps"),
        ("c.yaml", "metrics[1] (bad_value).value.path"),
        ("c.yaml", "metrics[1] (bad_value).value.reduce"),
        ("c.yaml", "metrics[2] (bad_args).value"),
        ("c.yaml", "metrics[3] (good_metric)"),
        ("c.yaml", "metrics[4] (Bad-Name).name"),
        ("c.yaml", "metrics[5] (dated)"),
        ("d.yaml", "ratio_of_nothing.derived.of[1]"),
    }
    assert expected <= found, sorted(found - expected)
    text = str(info.value)
    assert "placeholder {{evnt}} is not a declared parameter" in text
    assert "declared but not used" in text
    assert "unknown reducer 'average'" in text
    assert "args.period: Field required" in text
    assert "duplicate metric name 'good_metric' (also in a.yaml)" in text
    assert "must not be set" in text
    assert f"{len(info.value.problems)} problem(s)" in text


def test_unknown_query_kinds_are_checked_for_structure_only(tmp_path: Path) -> None:
    # a kind added later (revenue, voice, ...) loads when it is not yet in KINDS
    kind = "future_kind"
    assert kind not in KINDS
    _write(tmp_path / "x.yaml", {"metrics": [{**GOOD, "query": {"kind": kind, "anything": 1}}]})
    catalog = load_catalog_from([tmp_path])
    assert catalog.get("good_metric").kind == kind


def test_derived_cycle_is_reported(tmp_path: Path) -> None:
    base = {k: v for k, v in GOOD.items() if k not in ("query", "value")}
    _write(
        tmp_path / "x.yaml",
        [
            {**base, "name": "m1", "derived": {"of": ["m2", "m2"]}},
            {**base, "name": "m2", "derived": {"of": ["m1", "m1"]}},
        ],
    )
    with pytest.raises(CatalogError, match="refers to itself"):
        load_catalog_from([tmp_path])


def test_top_level_must_be_a_metrics_list(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: lonely\n")
    with pytest.raises(CatalogError, match=r"x\.yaml: expected a top-level 'metrics:' list"):
        load_catalog_from([tmp_path])


# ---- value selectors and reducers ----------------------------------------------------------------------------


def test_paths() -> None:
    data = {"series": [{"value": 1}, {"value": 2}, {"value": None}], "totals": {"a b": 1}}
    assert parse_path("series[-2].value").select(data) == 2
    assert parse_path("series[*].value").select(data) == [1, 2, None]
    assert parse_path("$").select(data) is data
    assert parse_path("$.series[0]").select(data) == {"value": 1}
    for bad in ("series..value", ".series", "series[", "series[1]value", "a b"):
        with pytest.raises(PathError):
            parse_path(bad)
    with pytest.raises(ValueReadError, match=r"has no key 'total'.*keys: series, totals"):
        parse_path("total").select(data)
    with pytest.raises(ValueReadError, match=r"series has 3 item\(s\), no \[5\]"):
        parse_path("series[5]").select(data)


def test_simple_reducers_skip_nulls_and_empty_gives_none() -> None:
    assert reduce_value([1, 2, None, 6], "mean", {}) == 3.0
    assert reduce_value([1, 2, None, 6], "sum", {}) == 9.0
    assert reduce_value([5, 1, 3], "median", {}) == 3.0
    assert reduce_value([], "mean", {}) is None
    assert reduce_value(None, None, {}) is None
    with pytest.raises(ValueReadError, match="not a number"):
        reduce_value([1], None, {})


def test_retention_rate_pools_cohorts_that_reached_the_period() -> None:
    # 4 daily cohorts, oldest first; row i has reached period k when i + k < 4.
    rows = [
        {"date": "d0", "values": [10, 4, 2, 1]},
        {"date": "d1", "values": [20, 6, 3, 0]},
        {"date": "d2", "values": [0, 0, 0, 0]},  # empty cohort: left out
        {"date": "d3", "values": [5, 0, 0, 0]},  # has not reached period 1 yet: left out
    ]
    # period 1: cohorts d0, d1 (d2 empty) -> (4 + 6) / (10 + 20) = 1/3
    assert reduce_value(rows, "retention_rate", {"period": 1}) == pytest.approx(1 / 3)
    # unweighted: mean(4/10, 6/20) = 0.35
    assert reduce_value(rows, "retention_rate", {"period": 1, "weighted": False}) == pytest.approx(0.35)
    # period 2: cohorts d0 and d1 (0 + 2 < 4, 1 + 2 < 4) -> (2 + 3) / 30
    assert reduce_value(rows, "retention_rate", {"period": 2}) == pytest.approx(5 / 30)
    # period 3: only d0 -> 1 / 10
    assert reduce_value(rows, "retention_rate", {"period": 3}) == pytest.approx(0.1)
    assert reduce_value(rows[3:], "retention_rate", {"period": 1}) is None


def test_distribution_reducers() -> None:
    # 3 persons active 1 day, 1 person 2 days, 1 person 4 days: mean = (3 + 2 + 4) / 5 = 1.8
    counts = [3, 1, 0, 1]
    assert reduce_value(counts, "distribution_mean", {}) == pytest.approx(1.8)
    # active on 2+ days: 2 of 5
    assert reduce_value(counts, "share_at_least", {"k": 2}) == pytest.approx(0.4)
    assert reduce_value([0, 0], "distribution_mean", {}) is None


def test_ratio_reducer_sums_lists() -> None:
    series = [{"adopters": 1, "active": 4}, {"adopters": 3, "active": 4}]
    args = {"numerator": "[*].adopters", "denominator": "[*].active"}
    assert reduce_value(series, "ratio", args) == pytest.approx(0.5)
    assert reduce_value([{"adopters": 0, "active": 0}], "ratio", args) is None


def test_complement_and_formatting() -> None:
    m = load_catalog().get("funnel_drop_off")
    assert m.read_value({"steps": [{"conversion_from_first": 1.0}, {"conversion_from_first": 0.25}]}) == 0.75
    assert format_value(0.1234, "ratio") == "12.3%"
    assert format_value(3725, "seconds") == "1h 02m"
    assert format_value(1234567, "count") == "1,234,567"
    assert format_value(None, "count") == "n/a"


# ---- evaluation on events ------------------------------------------------------------------------------------


def _three_days(env: Env) -> None:
    # Mar 1: a, b; Mar 2: a; Mar 3: nobody; anon-c is merged into a on Mar 2.
    env.load(
        [
            ev("$pageview", "a", "2024-03-01T10:00:00Z"),
            ev("$pageview", "b", "2024-03-01T11:00:00Z"),
            ev("$pageview", "anon-c", "2024-03-02T09:00:00Z"),
            {
                "event": "$identify",
                "distinct_id": "a",
                "timestamp": "2024-03-02T09:05:00Z",
                "properties": {"$anon_distinct_id": "anon-c"},
            },
        ]
    )


def test_evaluate_dau_mean_and_derived_wau_mau(env: Env) -> None:
    _three_days(env)
    catalog = load_catalog()
    dau = evaluate_metric(env.engine, env.project, catalog.get("dau"), "2024-03-01", "2024-03-03")
    # DAU per day: 2, 1 (a and anon-c are one person), 0 -> mean 1.0
    assert dau.value == pytest.approx(1.0)
    assert [p["value"] for p in dau.result["series"]] == [2, 1, 0]
    total = evaluate_metric(env.engine, env.project, catalog.get("total_events"), "2024-03-01", "2024-03-03")
    assert total.value == 4
    only_pv = evaluate_metric(
        env.engine,
        env.project,
        catalog.get("total_events"),
        "2024-03-01",
        "2024-03-03",
        {"event": "$pageview"},
    )
    assert only_pv.value == 3
    # WAU on Mar 3 = {a, b} = 2; MAU = 2 -> 1.0
    ratio = evaluate_metric(env.engine, env.project, catalog.get("wau_mau"), "2024-03-01", "2024-03-03")
    assert ratio.value == pytest.approx(1.0)
    assert [c.metric.name for c in ratio.components] == ["wau", "mau"]
    with pytest.raises(SpecError, match="no parameter 'x'"):
        evaluate_metric(env.engine, env.project, catalog.get("wau_mau"), "2024-03-01", "2024-03-03", {"x": 1})


def test_evaluate_retention_and_churn(env: Env) -> None:
    # Weekly recurring cohorts (weeks start Monday 2024-03-04): week 0 active: a, b, c; week 1 active: a, b.
    env.load(
        [
            ev("x", "a", "2024-03-04T10:00:00Z"),
            ev("x", "b", "2024-03-05T10:00:00Z"),
            ev("x", "c", "2024-03-06T10:00:00Z"),
            ev("x", "a", "2024-03-11T10:00:00Z"),
            ev("x", "b", "2024-03-12T10:00:00Z"),
        ]
    )
    catalog = load_catalog()
    # cohorts=2 -> weeks of Mar 4 and Mar 11; week 1 of the Mar 4 cohort: 2 of 3 came back.
    params = {"cohorts": 2}
    kept = evaluate_metric(
        env.engine, env.project, catalog.get("user_retention_rate_weekly"), "2024-03-04", "2024-03-17", params
    )
    assert kept.value == pytest.approx(2 / 3)
    churn = evaluate_metric(
        env.engine, env.project, catalog.get("user_churn_rate_weekly"), "2024-03-04", "2024-03-17", params
    )
    assert churn.value == pytest.approx(1 / 3)


def test_evaluate_funnel_conversion(env: Env) -> None:
    # a: all three steps; b: two; c: one -> 1/3 converted, drop-off 2/3
    env.load(
        [
            ev("signed_up", "a", "2024-03-01T10:00:00Z"),
            ev("project_created", "a", "2024-03-01T10:05:00Z"),
            ev("report_shared", "a", "2024-03-02T10:00:00Z"),
            ev("signed_up", "b", "2024-03-01T10:00:00Z"),
            ev("project_created", "b", "2024-03-03T10:00:00Z"),
            ev("signed_up", "c", "2024-03-01T10:00:00Z"),
        ]
    )
    catalog = load_catalog()
    conv = evaluate_metric(
        env.engine, env.project, catalog.get("funnel_conversion_rate"), "2024-03-01", "2024-03-10"
    )
    assert conv.value == pytest.approx(1 / 3)
    assert [s["count"] for s in conv.result["steps"]] == [3, 2, 1]
    drop = evaluate_metric(
        env.engine, env.project, catalog.get("funnel_drop_off"), "2024-03-01", "2024-03-10"
    )
    assert drop.value == pytest.approx(2 / 3)


# ---- CLI ------------------------------------------------------------------------------------------------------


def test_cli_list_show_and_eval(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    _three_days(Env(ws, ws.create_project("p")))
    ws.close()  # the CLI opens the workspace itself
    home = str(tmp_path / "ws")
    runner = CliRunner()
    listed = runner.invoke(app, ["metrics", "list", "--json", "--category", "engagement"])
    assert listed.exit_code == 0, listed.output
    names = [m["name"] for m in json.loads(listed.stdout)]
    assert "dau" in names and "funnel_conversion_rate" not in names
    table = runner.invoke(app, ["metrics", "list"])
    assert table.exit_code == 0 and "dau_mau_stickiness" in table.stdout
    shown = runner.invoke(app, ["metrics", "show", "feature_adoption_rate", "--json"])
    assert shown.exit_code == 0
    spec = json.loads(shown.stdout)
    assert spec["parameters"]["feature_event"]["default"] == "export_csv"
    assert spec["value"]["reduce"] == "ratio"
    assert runner.invoke(app, ["metrics", "show", "dau"]).exit_code == 0
    evaluated = runner.invoke(
        app,
        ["--home", home, "metrics", "eval", "total_events", "--from", "2024-03-01", "--to", "2024-03-03",
         "--param", "event=$pageview", "--json"],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["value"] == 3
    human = runner.invoke(
        app, ["--home", home, "metrics", "eval", "dau", "--from", "2024-03-01", "--to", "2024-03-03"]
    )
    assert human.exit_code == 0 and "Daily active users (2024-03-01 .. 2024-03-03): 1\n" in human.stdout
    bad = runner.invoke(app, ["--home", home, "metrics", "eval", "dau", "--param", "nope", "--json"])
    assert bad.exit_code == SpecError.exit_code
    assert "NAME=VALUE" in json.loads(bad.stdout)["error"]["message"]
    missing = runner.invoke(app, ["metrics", "show", "nope", "--json"])
    assert missing.exit_code == NotFoundError.exit_code


def test_metric_as_dict_marks_required_parameters() -> None:
    m = Metric.model_validate(
        {**GOOD, "query": {"kind": "trends", "event": "{{e}}"}, "parameters": {"e": {"description": "d"}}}
    )
    d = m.as_dict()
    assert d["parameters"]["e"]["required"] is True and "default" not in d["parameters"]["e"]
    with pytest.raises(SpecError, match="needs this parameter"):
        m.build_query("2024-01-01", "2024-01-02")
