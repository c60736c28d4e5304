"""Load and validate the metric catalog: every YAML file, every problem reported at once.

A catalog file holds ``metrics:``, a list of metric definitions (see :class:`~kpilot.catalog.models.Metric`);
a file may also be a bare list. The loader checks, for every metric, and collects all problems before
raising one :class:`CatalogError`:

- structure and types (pydantic), with the field path of each problem;
- names are unique across all files;
- every ``{{placeholder}}`` in the query is a declared parameter, and every parameter is used;
- the query, rendered with parameter defaults (or a stand-in for required ones) and a date range, is a valid
  query spec when its ``kind`` is one the query language knows (:data:`kpilot.compute.spec.KINDS`); kinds added
  later (revenue, voice...) are checked for structure only, so the catalog can describe them first;
- a derived metric names existing metrics and does not (indirectly) refer to itself.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from kpilot.catalog import params as P
from kpilot.catalog.models import CATEGORIES, Category, Metric
from kpilot.compute import spec as query_spec
from kpilot.errors import KpilotError, NotFoundError, SpecError

__all__ = ["METRICS_DIR", "Catalog", "CatalogError", "Problem", "load_catalog", "load_catalog_from"]

METRICS_DIR = Path(__file__).parent / "metrics"
_CHECK_RANGE = {"date_from": "2024-01-01", "date_to": "2024-01-31"}


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


class CatalogError(KpilotError):
    """The catalog files have problems; ``problems`` lists all of them with file and field path."""

    code = "invalid_catalog"
    exit_code = 4

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the metric catalog has {len(self.problems)} problem(s):\n{lines}")


class Catalog:
    """Metrics by name, in file order."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = {m.name: m for m in metrics}

    def __len__(self) -> int:
        return len(self._metrics)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._metrics.values())

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    @property
    def names(self) -> list[str]:
        return list(self._metrics)

    def get(self, name: str) -> Metric:
        try:
            return self._metrics[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._metrics, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else " (see `kpilot metrics list`)"
            raise NotFoundError(f"no metric named {name!r}{hint}") from None

    def list(self, category: Category | str | None = None) -> list[Metric]:
        """Metrics (of one category), grouped by category in :data:`CATEGORIES` order, then file order."""
        chosen = [m for m in self._metrics.values() if category is None or m.category == category]
        return sorted(chosen, key=lambda m: CATEGORIES.index(m.category))


@functools.cache
def load_catalog() -> Catalog:
    """The catalog shipped with kpilot (read once per process)."""
    return load_catalog_from([METRICS_DIR])


def load_catalog_from(paths: Sequence[Path]) -> Catalog:
    """Load every ``*.yaml`` under the given directories (or the given files); raise :class:`CatalogError`."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    problems: list[Problem] = []
    metrics: list[Metric] = []
    seen: dict[str, str] = {}
    for file in files:
        for where, metric in _read_file(file, problems):
            if metric.name in seen:
                problems.append(
                    Problem(
                        file.name,
                        where,
                        f"duplicate metric name {metric.name!r} (also in {seen[metric.name]})",
                    )
                )
                continue
            seen[metric.name] = file.name
            metrics.append(metric)
    by_name = {m.name: m for m in metrics}
    for metric in metrics:
        problems.extend(_check_derived(metric, by_name))
    if problems:
        raise CatalogError(problems)
    return Catalog(metrics)


def _read_file(file: Path, problems: list[Problem]) -> Iterator[tuple[str, Metric]]:
    name = file.name
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problems.append(Problem(name, where, f"not valid YAML: {getattr(exc, 'problem', exc)}"))
        return
    except OSError as exc:
        problems.append(Problem(name, "", f"cannot read: {exc}"))
        return
    if isinstance(data, dict) and set(data) == {"metrics"}:
        data = data["metrics"]
    if not isinstance(data, list):
        problems.append(Problem(name, "", "expected a top-level 'metrics:' list of metric definitions"))
        return
    for i, item in enumerate(data):
        label = f"metrics[{i}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({item['name']})"
        try:
            metric = Metric.model_validate(item)
        except ValidationError as exc:
            problems.extend(Problem(name, _join(label, e["loc"]), _msg(e)) for e in exc.errors())
            continue
        found = [Problem(name, _join(label, (field,)), msg) for field, msg in check_metric(metric)]
        problems.extend(found)
        if not found:
            metric._source = str(file)
            yield label, metric


def check_metric(metric: Metric) -> list[tuple[str, str]]:
    """Cross-field problems of one structurally valid metric, as ``(field, message)`` pairs."""
    out: list[tuple[str, str]] = []
    if metric.query is None:
        return out
    used: set[str] = set()
    for pname, where in P.placeholders(metric.query):
        used.add(pname)
        if pname not in metric.parameters:
            out.append((f"query.{where}", f"placeholder {{{{{pname}}}}} is not a declared parameter"))
    for pname in metric.parameters:
        if pname not in used:
            out.append((f"parameters.{pname}", "declared but not used in the query"))
    if out or metric.kind not in query_spec.KINDS:
        return out
    values = {
        pname: (P.sample_value(p.type) if p.required else P.coerce(p.default, p.type, nullable=p.nullable))
        for pname, p in metric.parameters.items()
    }
    rendered = {**P.render(metric.query, values), **_CHECK_RANGE}
    try:
        query_spec.parse_spec(rendered)
    except SpecError as exc:
        out.extend(_all_spec_problems(rendered) or [("query." + (exc.field or "kind"), str(exc))])
    return out


_QUERY_ADAPTER: TypeAdapter[Any] = TypeAdapter(query_spec.QuerySpec)


def _all_spec_problems(rendered: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem pydantic finds in a query spec (parse_spec reports the first one only)."""
    try:
        _QUERY_ADAPTER.validate_python(rendered)
    except ValidationError as exc:
        kind = rendered.get("kind")
        return [
            (".".join(["query", *(str(p) for p in e["loc"] if p != kind)]), _msg(e)) for e in exc.errors()
        ]
    return []


def _check_derived(metric: Metric, by_name: dict[str, Metric]) -> list[Problem]:
    if metric.derived is None:
        return []
    file = Path(metric.source).name
    out: list[Problem] = []
    for i, ref in enumerate(metric.derived.of):
        if ref not in by_name:
            out.append(Problem(file, f"{metric.name}.derived.of[{i}]", f"no metric named {ref!r}"))
    if not out and _refers_to(metric.name, metric.derived.of, by_name, set()):
        out.append(Problem(file, f"{metric.name}.derived", "refers to itself (directly or through others)"))
    return out


def _refers_to(target: str, refs: Iterable[str], by_name: dict[str, Metric], seen: set[str]) -> bool:
    for ref in refs:
        if ref == target:
            return True
        if ref in seen or ref not in by_name:
            continue
        seen.add(ref)
        derived = by_name[ref].derived
        if derived is not None and _refers_to(target, derived.of, by_name, seen):
            return True
    return False


def _join(label: str, loc: Iterable[Any]) -> str:
    out = label
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _msg(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")
