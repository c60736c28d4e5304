"""Reading a metric's headline number out of a query result: a path, an optional reducer, a complement.

A **path** walks the JSON result: ``totals.bounce_rate``, ``series[-1].value``, ``steps[-1].count``.
``[*]`` maps the rest of the path over every element of a list, so ``series[*].value`` is the list of
values. ``$`` (or an empty path) is the whole result.

A **reducer** turns what the path selected into one number. Reducers take keyword arguments, validated
when the catalog loads (see :data:`REDUCERS`):

``mean``, ``sum``, ``median``, ``min``, ``max``
    over a list of numbers; ``null`` entries are skipped; an empty list gives no value (``None``).
``retention_rate(period)``
    over retention cohort rows (objects with a ``values`` list, or bare lists): the share of cohort
    members who came back in ``period``, pooled over the cohorts that have reached that period
    (``sum values[period] / sum values[0]``). Row ``i`` of ``n`` has reached period ``k`` when
    ``i + k < n`` (rows are calendar periods, oldest first, as many rows as intervals). ``weighted: false``
    averages the per-cohort rates instead, each cohort counting once.
``distribution_mean``
    over a distribution of counts where entry ``i`` counts persons active in ``i + 1`` intervals (a
    stickiness result): the mean number of active intervals per person.
``share_at_least(k)``
    over the same distribution: the share of persons active in ``k`` or more intervals.
``ratio(numerator, denominator)``
    two paths relative to the selected value; their quotient (no value when the denominator is 0). A path
    that selects a list (through ``[*]``) stands for the sum of its numbers, so
    ``ratio(numerator="[*].adopters", denominator="[*].active")`` pools a per-interval series.

``complement: true`` reports ``1 - x`` (churn from retention, drop-off from conversion).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kpilot.errors import KpilotError

__all__ = ["REDUCERS", "Path", "PathError", "ValueReadError", "parse_path", "reduce_value"]


class PathError(ValueError):
    """A path that does not parse; the message says where."""


class ValueReadError(KpilotError):
    """The query result does not have the shape the metric's ``value`` expects."""

    code = "metric_value"
    exit_code = 4


# ---- paths --------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\.?([A-Za-z_$][A-Za-z0-9_$]*)|\[(-?\d+|\*)\]")

Step = str | int | None
"""A key (str), a list index (int) or ``None`` for ``[*]`` (every element)."""


@dataclass(frozen=True, slots=True)
class Path:
    text: str
    steps: tuple[Step, ...]

    def select(self, data: Any) -> Any:
        """Walk ``data``; raises :class:`ValueReadError` naming the first step that does not exist."""
        return _walk(data, self.steps, self.text, "")


def parse_path(text: str) -> Path:
    """Parse ``a.b[0].c[*].d``; raises :class:`PathError`."""
    src = text.strip()
    if src in ("", "$"):
        return Path(src or "$", ())
    if src.startswith("$."):
        src = src[2:]
    elif src.startswith("$["):
        src = src[1:]
    steps: list[Step] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None or (m.group(0).startswith(".") and pos == 0):
            raise PathError(f"cannot read path {text!r} at position {pos}: expected .key, [index] or [*]")
        if m.group(1) is not None:
            if pos > 0 and not m.group(0).startswith("."):
                raise PathError(f"cannot read path {text!r} at position {pos}: missing '.' before a key")
            steps.append(m.group(1))
        else:
            index = m.group(2)
            steps.append(None if index == "*" else int(index))
        pos = m.end()
    return Path(text, tuple(steps))


def _walk(data: Any, steps: Sequence[Step], text: str, where: str) -> Any:
    for i, step in enumerate(steps):
        if step is None:
            if not isinstance(data, list):
                raise ValueReadError(f"{text}: {where or 'the result'} is not a list, cannot apply [*]")
            return [_walk(item, steps[i + 1 :], text, f"{where}[{j}]") for j, item in enumerate(data)]
        if isinstance(step, int):
            if not isinstance(data, list):
                raise ValueReadError(f"{text}: {where or 'the result'} is not a list")
            if not -len(data) <= step < len(data):
                raise ValueReadError(f"{text}: {where or 'the result'} has {len(data)} item(s), no [{step}]")
            data = data[step]
            where += f"[{step}]"
        else:
            if not isinstance(data, dict):
                raise ValueReadError(f"{text}: {where or 'the result'} is not an object")
            if step not in data:
                keys = ", ".join(sorted(map(str, data))) or "none"
                raise ValueReadError(f"{text}: {where or 'the result'} has no key {step!r} (keys: {keys})")
            data = data[step]
            where = f"{where}.{step}" if where else step
    return data


# ---- reducers -----------------------------------------------------------------------------------------
class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _NoArgs(_Args):
    pass


class _RetentionArgs(_Args):
    period: int = Field(ge=1, description="the period whose return rate is read (1 = the next period)")
    weighted: bool = Field(default=True, description="pool persons (true) or average cohort rates (false)")


class _AtLeastArgs(_Args):
    k: int = Field(ge=1, description="minimum number of active intervals")


class _RatioArgs(_Args):
    numerator: str
    denominator: str


def _numbers(data: Any, reducer: str) -> list[float]:
    if not isinstance(data, list):
        raise ValueReadError(f"reducer {reducer!r} needs a list, got {type(data).__name__}")
    out: list[float] = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ValueReadError(f"reducer {reducer!r} needs numbers, got {type(item).__name__}")
        if not math.isnan(item):
            out.append(float(item))
    return out


def _simple(fn: Callable[[list[float]], float]) -> Callable[[Any, Any, str], float | None]:
    def reduce(data: Any, _args: Any, name: str) -> float | None:
        numbers = _numbers(data, name)
        return fn(numbers) if numbers else None

    return reduce


def _retention_rate(data: Any, args: _RetentionArgs, name: str) -> float | None:
    if not isinstance(data, list):
        raise ValueReadError(f"reducer {name!r} needs a list of cohort rows, got {type(data).__name__}")
    rows = [_cohort_values(row, name) for row in data]
    k = args.period
    eligible = [v for i, v in enumerate(rows) if i + k < len(rows) and len(v) > k and v[0] > 0]
    if not eligible:
        return None
    if args.weighted:
        return sum(v[k] for v in eligible) / sum(v[0] for v in eligible)
    return statistics.fmean(v[k] / v[0] for v in eligible)


def _cohort_values(row: Any, name: str) -> list[float]:
    values = row.get("values") if isinstance(row, dict) else row
    if not isinstance(values, list):
        raise ValueReadError(f"reducer {name!r} needs cohort rows with a 'values' list")
    return _numbers([v.get("count") if isinstance(v, dict) else v for v in values], name)


def _distribution(data: Any, name: str) -> list[float]:
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = [item.get("value") for item in data]
    return _numbers(data, name)


def _distribution_mean(data: Any, _args: _NoArgs, name: str) -> float | None:
    counts = _distribution(data, name)
    total = sum(counts)
    return sum((i + 1) * c for i, c in enumerate(counts)) / total if total else None


def _share_at_least(data: Any, args: _AtLeastArgs, name: str) -> float | None:
    counts = _distribution(data, name)
    total = sum(counts)
    return sum(counts[args.k - 1 :]) / total if total else None


def _ratio(data: Any, args: _RatioArgs, name: str) -> float | None:
    num = _total(data, args.numerator, name)
    den = _total(data, args.denominator, name)
    if num is None or not den:
        return None
    return num / den


def _total(data: Any, path: str, name: str) -> float | None:
    """The number at ``path``; a list (from ``[*]``) is summed, ``null`` entries skipped."""
    selected = parse_path(path).select(data)
    numbers = _numbers(selected if isinstance(selected, list) else [selected], name)
    return math.fsum(numbers) if numbers else None


@dataclass(frozen=True, slots=True)
class Reducer:
    args: type[_Args]
    fn: Callable[[Any, Any, str], float | None]
    summary: str


REDUCERS: dict[str, Reducer] = {
    "mean": Reducer(_NoArgs, _simple(statistics.fmean), "arithmetic mean of a list of numbers"),
    "sum": Reducer(_NoArgs, _simple(math.fsum), "sum of a list of numbers"),
    "median": Reducer(_NoArgs, _simple(statistics.median), "median of a list of numbers"),
    "min": Reducer(_NoArgs, _simple(min), "smallest number of a list"),
    "max": Reducer(_NoArgs, _simple(max), "largest number of a list"),
    "retention_rate": Reducer(
        _RetentionArgs, _retention_rate, "share returning in a period, pooled over cohorts"
    ),
    "distribution_mean": Reducer(_NoArgs, _distribution_mean, "mean active intervals per person"),
    "share_at_least": Reducer(_AtLeastArgs, _share_at_least, "share active in k or more intervals"),
    "ratio": Reducer(_RatioArgs, _ratio, "numerator path / denominator path"),
}


def check_reducer(name: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems with a reducer and its arguments, as ``(field, message)`` pairs (empty when fine)."""
    reducer = REDUCERS.get(name)
    if reducer is None:
        return [("reduce", f"unknown reducer {name!r}; expected one of {', '.join(REDUCERS)}")]
    try:
        parsed = reducer.args.model_validate(args)
    except ValidationError as exc:
        return [
            (".".join(["args", *map(str, e["loc"])]), e["msg"].removeprefix("Value error, "))
            for e in exc.errors()
        ]
    if isinstance(parsed, _RatioArgs):
        problems = []
        for field in ("numerator", "denominator"):
            try:
                parse_path(getattr(parsed, field))
            except PathError as exc:
                problems.append((f"args.{field}", str(exc)))
        return problems
    return []


def reduce_value(data: Any, name: str | None, args: dict[str, Any]) -> float | None:
    """Apply reducer ``name`` (or none: ``data`` must then be a number or null) to ``data``."""
    if name is None:
        if data is None:
            return None
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ValueReadError(
                f"the selected value is a {type(data).__name__}, not a number (add a reducer?)"
            )
        return None if math.isnan(data) else float(data)
    reducer = REDUCERS[name]
    return reducer.fn(data, reducer.args.model_validate(args), name)
