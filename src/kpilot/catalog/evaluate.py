"""Evaluate a catalog metric on a project: build its query, run it, read the headline number."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from kpilot.catalog.models import Metric
from kpilot.compute.spec import parse_spec
from kpilot.errors import SpecError

if TYPE_CHECKING:
    from kpilot.catalog.loader import Catalog
    from kpilot.compute.engine import Engine
    from kpilot.workspace import ProjectInfo

__all__ = ["MetricValue", "evaluate_metric"]


@dataclass(slots=True)
class MetricValue:
    """A metric's value over a range, with the query (or component values) it came from."""

    metric: Metric
    date_from: str
    date_to: str
    params: dict[str, Any]
    value: float | None
    result: dict[str, Any]
    query: dict[str, Any] | None = None
    components: list[MetricValue] = field(default_factory=list)

    def as_dict(self, *, include_result: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric.name,
            "title": self.metric.title,
            "unit": self.metric.unit,
            "direction": self.metric.direction,
            "date_from": self.date_from,
            "date_to": self.date_to,
            "params": self.params,
            "value": self.value,
        }
        if self.query is not None:
            out["query"] = self.query
        if self.components:
            out["components"] = [c.as_dict(include_result=include_result) for c in self.components]
        elif include_result:
            out["result"] = self.result
        return out


def evaluate_metric(
    engine: Engine,
    project: ProjectInfo,
    metric: Metric,
    date_from: date | str,
    date_to: date | str,
    params: Mapping[str, Any] | None = None,
    *,
    catalog: Catalog | None = None,
) -> MetricValue:
    """Compute ``metric`` for ``project`` over ``[date_from, date_to]`` (inclusive, project timezone).

    A derived metric evaluates its components with the same range and passes each the parameters it
    declares. Raises :class:`~kpilot.errors.KpilotError` subclasses for bad parameters, queries whose kind
    the engine does not run, or results without the shape the metric's ``value`` expects.
    """
    from kpilot.compute.engine import run_query

    params = dict(params or {})
    if metric.derived is not None:
        if catalog is None:
            from kpilot.catalog.loader import load_catalog

            catalog = load_catalog()
        components = [catalog.get(name) for name in metric.derived.of]
        accepted = {k for c in components for k in c.parameters}
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise SpecError(
                f"metric {metric.name!r} has no parameter {unknown[0]!r} "
                f"(parameters: {', '.join(sorted(accepted)) or 'none'})"
            )
        parts = []
        for component in components:
            mine = {k: v for k, v in params.items() if k in component.parameters}
            parts.append(
                evaluate_metric(engine, project, component, date_from, date_to, mine, catalog=catalog)
            )
        numerator, denominator = parts[0].value, parts[1].value
        value = numerator / denominator if numerator is not None and denominator else None
        return MetricValue(
            metric,
            _iso(date_from),
            _iso(date_to),
            params,
            value,
            {p.metric.name: p.result for p in parts},
            None,
            parts,
        )
    typed = metric.resolve_params(params)
    query = metric.build_query(date_from, date_to, **typed)
    result = run_query(engine, project, parse_spec(query))
    return MetricValue(
        metric, query["date_from"], query["date_to"], typed, metric.read_value(result), result, query
    )


def _iso(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)
