"""Metric parameters: declared types, defaults, coercion of CLI text, and ``{{name}}`` templating.

A query template may contain ``"{{name}}"`` as a whole JSON string: it is replaced by the parameter's
typed value (a list for ``string_list``, a number for ``integer``...). Inside a longer string,
``{{name}}`` is replaced by the value's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

ParamType = Literal["string", "string_list", "integer", "number", "boolean"]

__all__ = ["PLACEHOLDER", "ParamType", "coerce", "placeholders", "render", "sample_value"]

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_WHOLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce(value: Any, kind: ParamType, *, nullable: bool = False) -> Any:
    """``value`` as ``kind``; text (from the command line) is parsed. Raises ``ValueError`` saying why."""
    if value is None:
        if nullable:
            return None
        raise ValueError("must not be null")
    if kind == "string":
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {type(value).__name__}")
    if kind == "string_list":
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")] if value.strip() else []
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ValueError(f"expected a list of strings, got {type(value).__name__}")
        if not all(isinstance(v, str) and v for v in items):
            raise ValueError("expected a list of non-empty strings (comma-separated on the CLI)")
        return items
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"expected true or false, got {value!r}")
    if kind == "integer":
        if isinstance(value, bool):
            raise ValueError("expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if kind == "number":
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        if isinstance(value, int | float):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {value!r}")
    raise AssertionError(kind)


def sample_value(kind: ParamType) -> Any:
    """A valid stand-in used to check templates of parameters that have no default."""
    return {"string": "example", "string_list": ["a", "b"], "integer": 1, "number": 1.0, "boolean": True}[
        kind
    ]


def placeholders(template: Any) -> Iterator[tuple[str, str]]:
    """Every ``(parameter name, location)`` used in ``template``; location is a dotted path."""
    yield from _walk_names(template, "")


def _walk_names(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        for m in PLACEHOLDER.finditer(node):
            yield m.group(1), where
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _walk_names(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_names(value, f"{where}[{i}]")


def render(template: Any, values: dict[str, Any]) -> Any:
    """A copy of ``template`` with placeholders replaced from ``values`` (every name must be present)."""
    if isinstance(template, str):
        whole = _WHOLE.match(template)
        if whole:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: _text(values[m.group(1)]), template)
    if isinstance(template, dict):
        return {key: render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, values) for value in template]
    return template


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "" if value is None else str(value)
