"""What the plain implementations share: identity resolution, calendar arithmetic, the workload's parameters.

The plain implementations are deliberately ordinary code, the way an analyst would write each metric in
pandas, Polars or DuckDB SQL over the raw events. They only need to handle the shape of the standard
workload (see :mod:`benchmarks.workload`), not every option of kpilot's query language.

Identity is resolved the way kpilot resolves it: every ``$identify`` links ``properties.$anon_distinct_id``
with ``distinct_id``, links are transitive (union-find), and every event counts for the person its
distinct id belongs to at the end, including events sent before the merge.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

__all__ = [
    "EPOCH",
    "PlainImpl",
    "Range",
    "day_no",
    "identity_map",
    "parse_anon",
    "py",
    "week_no",
]

EPOCH = date(1970, 1, 1)


def day_no(d: date) -> int:
    """Days since 1970-01-01 (the integer the implementations keep local dates as)."""
    return (d - EPOCH).days


def week_no(day: int) -> int:
    """The Monday on or before ``day`` (a day number); 1970-01-01 was a Thursday."""
    return day - (day + 3) % 7


class PlainImpl(Protocol):
    name: str

    def load(self, parquet: list[str], timezone: str) -> None:
        """Read the events and resolve identities (kept in memory for the queries)."""

    def run(self, name: str, spec: dict[str, Any]) -> Any:
        """Workload query ``name`` in the canonical form of :func:`benchmarks.workload.canonical`."""


@dataclass(frozen=True, slots=True)
class Range:
    """A spec's inclusive local date range as day numbers."""

    first: int
    last: int

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Range:
        return cls(day_no(date.fromisoformat(spec["date_from"])), day_no(date.fromisoformat(spec["date_to"])))

    def days(self) -> list[int]:
        return list(range(self.first, self.last + 1))

    def weeks(self) -> list[int]:
        return list(range(week_no(self.first), self.last + 1, 7))


def parse_anon(properties: str) -> str | None:
    value = json.loads(properties).get("$anon_distinct_id")
    return None if value in (None, "") else str(value)


def identity_map(pairs: Iterable[tuple[str | None, str]]) -> dict[str, str]:
    """Every distinct id that takes part in a link -> one representative id of its person."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for anon, user in pairs:
        if anon is None or anon == user:
            continue
        a, b = find(anon), find(user)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {x: find(x) for x in list(parent)}


def py(value: Any) -> Any:
    """numpy scalars and NaN to plain Python (ints stay ints, NaN becomes None)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def shift_days(d: date, n: int) -> date:
    return d + timedelta(days=n)
