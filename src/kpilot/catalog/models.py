"""The metric definition: what a catalog YAML entry holds, and how it becomes a query and a number.

Structure is checked by pydantic here; checks that span fields or need the query language
(placeholders versus parameters, the rendered query parsing as a spec, derived references) live in
:mod:`kpilot.catalog.loader`, which collects every problem before reporting.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from kpilot.catalog import params as P
from kpilot.catalog.selectors import REDUCERS, PathError, check_reducer, parse_path, reduce_value
from kpilot.errors import SpecError

__all__ = ["CATEGORIES", "Category", "Derived", "Direction", "Metric", "Parameter", "Unit", "ValueSpec"]

Category = Literal["engagement", "conversion", "retention", "revenue", "acquisition", "customer_voice"]
CATEGORIES: tuple[Category, ...] = (
    "engagement",
    "conversion",
    "retention",
    "revenue",
    "acquisition",
    "customer_voice",
)
Unit = Literal["count", "ratio", "percent", "seconds", "days", "currency", "score", "number"]
Direction = Literal["higher_is_better", "lower_is_better"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Parameter(_Model):
    """A value the user may (or, without ``default``, must) supply when evaluating the metric."""

    description: str = Field(min_length=1)
    type: P.ParamType = "string"
    default: Any = None
    nullable: bool = Field(default=False, description="null is an accepted value (e.g. 'any event')")

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set

    @model_validator(mode="after")
    def _default_fits(self) -> Parameter:
        if not self.required:
            try:
                P.coerce(self.default, self.type, nullable=self.nullable)
            except ValueError as exc:
                raise ValueError(f"default does not fit type {self.type!r}: {exc}") from exc
        return self


class ValueSpec(_Model):
    """How to read the headline number: ``path`` into the result, optional ``reduce``, ``complement``."""

    path: str = "$"
    reduce: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    complement: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        try:
            parse_path(value)
        except PathError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("reduce")
    @classmethod
    def _known_reducer(cls, value: str | None) -> str | None:
        if value is not None and value not in REDUCERS:
            raise ValueError(f"unknown reducer {value!r}; expected one of {', '.join(REDUCERS)}")
        return value

    @model_validator(mode="after")
    def _reducer(self) -> ValueSpec:
        if self.reduce is None:
            if self.args:
                raise ValueError("args given without a reducer")
            return self
        problems = check_reducer(self.reduce, self.args)
        if problems:
            raise ValueError("; ".join(f"{field}: {msg}" for field, msg in problems))
        return self

    def read(self, result: Any) -> float | None:
        value = reduce_value(parse_path(self.path).select(result), self.reduce, self.args)
        if value is not None and self.complement:
            value = 1.0 - value
        return value


class Derived(_Model):
    """A metric computed from other catalog metrics over the same range and parameters."""

    op: Literal["ratio"] = "ratio"
    of: list[str] = Field(min_length=2, max_length=2, description="[numerator, denominator] metric names")


class Metric(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    title: str = Field(min_length=1)
    category: Category
    description: str = Field(min_length=1)
    formula: str = Field(min_length=1)
    unit: Unit
    direction: Direction
    query: dict[str, Any] | None = None
    value: ValueSpec | None = None
    derived: Derived | None = None
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    notes: str | None = None
    _source: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _shape(self) -> Metric:
        if (self.query is None) == (self.derived is None):
            raise ValueError("give exactly one of 'query' or 'derived'")
        if self.query is not None:
            if self.value is None:
                raise ValueError("'value' is required with 'query'")
            kind = self.query.get("kind")
            if not isinstance(kind, str) or not kind:
                raise ValueError("query.kind is missing")
            for key in ("date_from", "date_to"):
                if key in self.query:
                    raise ValueError(f"query.{key} must not be set: the date range is supplied at evaluation")
        elif self.value is not None:
            raise ValueError("'value' does not apply to a derived metric")
        return self

    # ---- convenience -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The query kind, or ``"derived"``."""
        return str(self.query["kind"]) if self.query is not None else "derived"

    @property
    def source(self) -> str:
        """The catalog file the metric was read from."""
        return self._source

    def as_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude_none=True)
        out["parameters"] = {
            name: {**p.model_dump(mode="json"), "required": p.required} for name, p in self.parameters.items()
        }
        for p in out["parameters"].values():
            if p["required"]:
                p.pop("default", None)
        return out

    # ---- evaluation ----------------------------------------------------------------------------------
    def resolve_params(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Typed parameter values: ``given`` (text is parsed) over defaults. Raises :class:`SpecError`."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            known = ", ".join(self.parameters) or "none"
            raise SpecError(f"metric {self.name!r} has no parameter {unknown[0]!r} (parameters: {known})")
        out: dict[str, Any] = {}
        for name, p in self.parameters.items():
            if name in given:
                try:
                    out[name] = P.coerce(given[name], p.type, nullable=p.nullable)
                except ValueError as exc:
                    raise SpecError(str(exc), field=f"param {name}") from exc
            elif p.required:
                raise SpecError(f"metric {self.name!r} needs this parameter: {p.description}", field=name)
            else:
                out[name] = P.coerce(p.default, p.type, nullable=p.nullable)
        return out

    def build_query(self, date_from: date | str, date_to: date | str, **params: Any) -> dict[str, Any]:
        """The query spec (a dict) for the range, with parameters filled in; not yet validated."""
        if self.query is None:
            raise SpecError(f"metric {self.name!r} is derived from {', '.join(self.derived.of)}")  # type: ignore[union-attr]
        spec: dict[str, Any] = P.render(self.query, self.resolve_params(params))
        spec["date_from"] = _iso(date_from)
        spec["date_to"] = _iso(date_to)
        return spec

    def read_value(self, result: Any) -> float | None:
        """The headline number from a query result (``None`` when there is no data to compute it)."""
        if self.value is None:
            raise SpecError(f"metric {self.name!r} is derived; evaluate it with evaluate_metric")
        return self.value.read(result)


def _iso(value: date | str) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return value.isoformat() if isinstance(value, date) else str(value)
