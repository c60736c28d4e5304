"""Session upkeep put off during an import, then caught up in one pass (docs/rollups.md, "Bulk imports").

Keeping the materialised sessions current batch by batch costs each batch a read of the stored sessions near
its events, a rewrite of its days' aggregates and, above all, a write-ahead-log copy of the sessions it
writes (DuckDB writes a transaction's rows straight to the database file only in whole row groups, which a
200,000-event batch's ~40,000 sessions do not fill). An import smaller than the project defers that: each
batch's events (person, time, name) and merges are kept here, and the sessions and their day aggregates are
brought up to date in one pass (:func:`kpilot.store.session_store.maintain`) when the import ends, or when
:data:`FLUSH_EVENTS` events are pending (bounding memory).

While events are pending the project is marked in ``session_pending`` (in the first deferred write's
transaction): queries read raw events for session statistics, and a process that dies before catching up
leaves the mark, so the next opening of the workspace rebuilds the project's sessions.

Each part is added inside its write's transaction: :meth:`Pending.rollback` drops what a failed write added,
:meth:`Pending.commit` keeps it (and forgets what a committed catch-up consumed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

__all__ = ["FLUSH_EVENTS", "Pending", "PendingRows"]

FLUSH_EVENTS = 2_000_000
"""Pending events past this many are caught up in the write that crosses it (about 40 MB held)."""


@dataclass(slots=True)
class _Part:
    events: pa.Table
    """person_id, timestamp, event of one write's events (persons as that write left them; names
    dictionary-encoded, as the write's upkeep encoded them)."""
    merges: dict[int, int]
    """That write's merges: absorbed person -> surviving person."""
    committed: bool = False


class PendingRows:
    """The pending events as one batch, for :func:`kpilot.store.session_store.maintain` (which reads a write's
    events through :class:`kpilot.store.batch_rows.BatchRows`; this offers the same two methods)."""

    def __init__(self, events: pa.Table) -> None:
        self._events = events
        self._names: pa.DictionaryArray | None = None

    def events(self, timezone: str | None = None) -> pa.Table:
        return self._events

    def event_names(self) -> pa.DictionaryArray:
        if self._names is None:
            # the writes' dictionaries made one: a small table per write, not a pass over the names
            enc = self._events.column("event").unify_dictionaries().combine_chunks()
            self._names = pa.DictionaryArray.from_arrays(enc.indices, enc.dictionary.cast(pa.string()))
        return self._names


@dataclass(slots=True)
class Pending:
    """One project's deferred session upkeep: the events and merges of the writes since the last catch-up."""

    parts: list[_Part] = field(default_factory=list)
    consumed: int = 0
    """Parts a catch-up in the current transaction used (forgotten when it commits)."""

    @property
    def events(self) -> int:
        return sum(p.events.num_rows for p in self.parts)

    def add(self, events: pa.Table, names: pa.DictionaryArray, merges: dict[int, int]) -> None:
        """Keep a write's ``events`` (person_id, timestamp), their ``names`` and its ``merges``."""
        table = pa.table(
            {"person_id": events.column("person_id"), "timestamp": events.column("timestamp"), "event": names}
        )
        self.parts.append(_Part(table, {int(a): int(b) for a, b in merges.items() if a != b}))

    def take(self) -> tuple[PendingRows, dict[int, int]]:
        """Every pending event, with persons as they are now, and the merges since the last catch-up
        (absorbed person -> the person it is part of now); they are forgotten once the transaction commits."""
        merged = _resolved([m for p in self.parts for m in p.merges.items()])
        self.consumed = len(self.parts)
        tables = [p.events for p in self.parts if p.events.num_rows]
        if not tables:
            return PendingRows(_empty()), merged
        events = pa.concat_tables(tables)
        if merged:
            person = np.asarray(events.column("person_id").to_numpy(), np.int64)
            absorbed = np.fromiter(merged, np.int64, len(merged))
            order = np.argsort(absorbed)
            absorbed, survivor = absorbed[order], np.fromiter(merged.values(), np.int64, len(merged))[order]
            at = np.minimum(np.searchsorted(absorbed, person), len(absorbed) - 1)
            hit = absorbed[at] == person
            person = np.where(hit, survivor[at], person)
            events = events.set_column(0, "person_id", pa.array(person, pa.int64()))
        return PendingRows(events), merged

    def commit(self) -> None:
        del self.parts[: self.consumed]
        self.consumed = 0
        for part in self.parts:
            part.committed = True

    def rollback(self) -> None:
        self.parts = [p for p in self.parts if p.committed]
        self.consumed = 0


def _resolved(merges: list[tuple[int, int]]) -> dict[int, int]:
    """Chains of merges (in order) resolved: each absorbed person -> the person it is part of after all of
    them (an absorbed person id never names anybody else later, so the merges form a forest)."""
    parent = dict(merges)
    out: dict[int, int] = {}
    for a in parent:
        path, x = [], a
        while x in parent and x not in out:
            path.append(x)
            x = parent[x]
        root = out.get(x, x)
        for y in path:
            out[y] = root
    return out


def _empty() -> pa.Table:
    return pa.table(
        {
            "person_id": pa.array([], pa.int64()),
            "timestamp": pa.array([], pa.timestamp("us")),
            "event": pa.array([], pa.string()).dictionary_encode(),
        }
    )
