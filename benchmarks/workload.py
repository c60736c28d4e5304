"""The standard dashboard workload as kpilot query specs, and the canonical form results are compared in.

For a data set covering ``days`` days from ``first_day`` (query range = the whole data set):

| name | spec |
|---|---|
| ``dau`` | trends, math ``dau``, any event, daily |
| ``wau`` | trends, math ``wau``, daily: rolling 7 days ending on each day |
| ``mau`` | trends, math ``mau``, daily: rolling 30 days ending on each day |
| ``dau_mau`` | trends, math ``dau_mau_ratio``, daily |
| ``stickiness`` | stickiness over the last 30 days, daily intervals, any event |
| ``retention`` | 12 weekly cohorts ending with the week of the last day, any event starts and returns |
| ``funnel`` | the 5 signup steps, ordered, 7-day window |
| ``sessions`` | session statistics per day (30-minute inactivity, 24-hour cap) and totals |
| ``adoption:<feature>`` | feature adoption per week among persons with any event, for each of 10 features |

Every implementation turns its answer into the canonical form below (plain lists of numbers), and the
harness compares those: integers must be equal, floats equal to 1e-9 relative (1e-6 absolute for durations,
which kpilot rounds to microseconds).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from benchmarks.generator import FEATURES, FUNNEL

__all__ = ["Query", "canonical", "compare", "workload"]

Query = tuple[str, dict[str, Any]]


def workload(first_day: date, days: int, timezone: str | None = None) -> list[Query]:
    last = first_day + timedelta(days=days - 1)
    rng: dict[str, Any] = {"date_from": first_day.isoformat(), "date_to": last.isoformat()}
    if timezone is not None:
        rng["timezone"] = timezone
    last30 = {**rng, "date_from": max(first_day, last - timedelta(days=29)).isoformat()}
    out: list[Query] = [
        (f"{math}", {"kind": "trends", "math": math, "interval": "day", **rng})
        for math in ("dau", "wau", "mau")
    ]
    out.append(("dau_mau", {"kind": "trends", "math": "dau_mau_ratio", "interval": "day", **rng}))
    out.append(("stickiness", {"kind": "stickiness", "interval": "day", **last30}))
    out.append(
        (
            "retention",
            {
                "kind": "retention",
                "period": "week",
                "intervals": 12,
                "start_event": None,
                "return_event": None,
                **rng,
            },
        )
    )
    out.append(
        (
            "funnel",
            {
                "kind": "funnel",
                "steps": list(FUNNEL),
                "order": "ordered",
                "window": {"value": 7, "unit": "day"},
                **rng,
            },
        )
    )
    out.append(("sessions", {"kind": "sessions", "interval": "day", **rng}))
    out += [
        (f"adoption:{f}", {"kind": "feature_adoption", "event": f, "interval": "week", **rng})
        for f in FEATURES
    ]
    return out


def canonical(name: str, result: dict[str, Any]) -> Any:
    """kpilot's JSON result for workload query ``name`` in the canonical comparison form."""
    kind = name.split(":")[0]
    if kind in ("dau", "wau", "mau", "dau_mau"):
        return [p["value"] for p in result["series"]]
    if kind == "stickiness":
        return list(result["values"])
    if kind == "retention":
        return [list(row["values"]) for row in result["rows"]]
    if kind == "funnel":
        return [
            [s["count"], s["avg_seconds_from_previous"], s["median_seconds_from_previous"]]
            for s in result["steps"]
        ]
    if kind == "sessions":
        rows = [*result["series"], {"date": "total", **result["totals"]}]
        return [
            [
                r["sessions"],
                r["persons"],
                r["avg_duration_seconds"],
                r["median_duration_seconds"],
                r["engaged_sessions"],
            ]
            for r in rows
        ]
    if kind == "adoption":
        return [[p["adopters"], p["active"]] for p in result["series"]]
    raise ValueError(f"unknown workload query {name!r}")


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return bool(a == b)
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) <= max(1e-9 * max(abs(float(a)), abs(float(b))), 1e-6)
    return False


def compare(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Differences between two canonical results, each as ``path: expected != actual``."""
    if isinstance(expected, list) and isinstance(actual, list):
        diffs: list[str] = []
        if len(expected) != len(actual):
            diffs.append(f"{path}: length {len(expected)} != {len(actual)}")
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            diffs += compare(e, a, f"{path}[{i}]")
        return diffs
    if isinstance(expected, list) or isinstance(actual, list):
        return [f"{path}: {expected!r} != {actual!r}"]
    return [] if _close(expected, actual) else [f"{path}: {expected!r} != {actual!r}"]
