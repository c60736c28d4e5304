"""Placeholder: compiled in a later slice."""

from __future__ import annotations

from typing import Any

from kpilot.errors import SpecError


def run(engine: Any, ctx: Any, spec: Any) -> dict[str, Any]:
    raise SpecError("not implemented yet", field="kind")
