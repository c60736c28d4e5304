"""A naive in-memory event log with identity merges, shared by the reference implementations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo


@dataclass
class Log:
    """Events as (distinct_id, event, utc naive datetime, properties) plus merge pairs."""

    events: list[tuple[str, str, datetime, dict[str, object]]] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)

    def person_of(self) -> dict[str, str]:
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for d, *_ in self.events:
            find(d)
        for a, b in self.merges:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[rb] = ra
        return {d: find(d) for d in parent}

    def local(self, tz: str) -> list[tuple[str, str, datetime, dict[str, object]]]:
        """Events with person ids and local wall-clock times in ``tz``."""
        person = self.person_of()
        zone = ZoneInfo(tz)
        return [
            (person[d], e, ts.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None), p)
            for d, e, ts, p in self.events
        ]


def day_of(ts: datetime) -> date:
    return ts.date()
