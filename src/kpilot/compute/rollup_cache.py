"""The readers' cache of stored rollup sets: what queries loaded, kept per store and project.

A query answered from the rollup (:mod:`kpilot.compute.rollups`) needs the person sets of some days and
events. Reading and deserialising them is most of its cost, so each store keeps what earlier queries loaded,
valid for one write generation of the store (:func:`kpilot.store.rollup_store.write_generation`).

When the store has committed writes since, the cache asks the writer what they changed
(:meth:`kpilot.store.duckdb_store.EventStore.rollup_changes`): the person sets the writes appended, the
identity merges recorded and the UTC days that received events. It applies the new merges to the sets it
holds and unions the appended sets in, without reading the store; when the appended sets are no longer
remembered, it reads again the sets of the days written (a day either side, for the timezone). When what
changed is not known (a rebuild, a compaction on its own, a bulk write, or more commits than the writer
remembers), everything is read again. Either way the sets of one answer come from one state of the store: a read that overlaps a
commit is not cached, and while a commit is under way every read is a fresh one in its own transaction.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pyroaring import BitMap

from kpilot.compute.rollups import Rollups, _fetch, _merges, answer, answerable, needs
from kpilot.compute.spec import QuerySpec
from kpilot.store.change_log import ProjectChange, Sets
from kpilot.store.duckdb_store import EventStore
from kpilot.store.rollup_store import rollup_timezone, write_generation

__all__ = ["CACHE_BYTES", "answer_from_store", "cached_rollups"]

CACHE_BYTES = 512 * 2**20
"""Serialized size of the sets one store's cache may hold (least recently used projects go first)."""

_EPOCH = date(1970, 1, 1)
Key = tuple[date, str | None]


@dataclass(frozen=True)
class _Entry:
    """What a store's cache holds for one project at one write generation; never changed once cached (a
    query that needs more days or events, or a newer generation, caches an extended copy)."""

    generation: int
    timezone: str | None
    """The rollup's timezone (None: the project has no rollup)."""
    merges: Rollups
    """Only the merges: canonicalises what is loaded later."""
    rollups: Rollups
    """The loaded sets, canonical (no merges left to apply)."""
    spans: dict[str | None, tuple[date, date]]
    """Per event (None: any event), the days loaded: every stored set of those days is in ``rollups``."""
    sizes: dict[Key, int]
    """Stored bytes of each loaded set."""
    nbytes: int


class _StoreCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[int, _Entry] = OrderedDict()


_CACHES: weakref.WeakKeyDictionary[Any, _StoreCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _new_entry(cursor: Any, project_id: int, generation: int) -> _Entry:
    timezone = rollup_timezone(cursor, project_id)
    merges = Rollups(project_id, timezone or "UTC")
    if timezone is not None:
        _merges(cursor, project_id, merges)
    return _Entry(generation, timezone, merges, Rollups(project_id, timezone or "UTC"), {}, {}, 0)


def _covers(entry: _Entry, first: date, last: date, events: set[str | None]) -> bool:
    for e in events:
        span = entry.spans.get(e)
        if span is None or span[0] > first or span[1] < last:
            return False
    return True


def _with_sets(
    entry: _Entry,
    merges: Rollups,
    spans: dict[str | None, tuple[date, date]],
    read: list[tuple[str | None, date, date]],
    cursor: Any,
    generation: int,
) -> _Entry:
    """``entry`` with the stored sets of each ``(event, first, last)`` in ``read`` read again (days without a
    stored set lose theirs), canonical under ``merges``."""
    by_event = dict(entry.rollups.by_event)
    any_event = dict(entry.rollups.any_event)
    sizes = dict(entry.sizes)
    for e, lo, hi in read:
        got_sizes: dict[Key, int] = {}
        got = _fetch(cursor, merges.project_id, lo, hi, {e}, got_sizes)
        day = lo
        while day <= hi:
            bm = got.get((day, e))
            if e is None:
                _put(any_event, day, bm, merges)
            else:
                _put(by_event, (day, e), bm, merges)
            if bm is None:
                sizes.pop((day, e), None)
            else:
                sizes[(day, e)] = got_sizes[(day, e)]
            day += timedelta(days=1)
    rollups = Rollups(merges.project_id, entry.rollups.timezone, by_event, any_event)
    return _Entry(generation, entry.timezone, merges, rollups, spans, sizes, sum(sizes.values()))


def _put(sets: dict[Any, BitMap], key: Any, bm: BitMap | None, merges: Rollups) -> None:
    if bm is None:
        sets.pop(key, None)
    else:
        sets[key] = merges.canonical(bm)


def _extend(cursor: Any, entry: _Entry, first: date, last: date, events: set[str | None]) -> _Entry:
    """``entry`` with the sets of days ``first``..``last`` and ``events`` loaded too (a new entry)."""
    wanted: list[tuple[str | None, date, date]] = []
    spans = dict(entry.spans)
    for e in events:
        span = spans.get(e)
        if span is None:
            wanted.append((e, first, last))
            spans[e] = (first, last)
            continue
        if first < span[0]:
            wanted.append((e, first, span[0] - timedelta(days=1)))
        if last > span[1]:
            wanted.append((e, span[1] + timedelta(days=1), last))
        spans[e] = (min(first, span[0]), max(last, span[1]))
    if not wanted:
        return entry
    return _with_sets(entry, entry.merges, spans, wanted, cursor, entry.generation)


def _refresh(cursor: Any, entry: _Entry, generation: int, change: ProjectChange) -> _Entry:
    """``entry`` brought to ``generation``, given what the commits since changed in the project's rollup."""
    merges = entry.merges
    rollups = entry.rollups
    if change.merges:
        merges = Rollups(
            merges.project_id,
            merges.timezone,
            survivor=dict(merges.survivor),
            absorbed=BitMap(merges.absorbed),
        )
        for absorbed, survivor in change.merges:
            merges.record_merge(absorbed, survivor)
        # the sets held are canonical under the old merges: only the newly absorbed ids can be left in them
        rollups = Rollups(
            rollups.project_id,
            rollups.timezone,
            by_event={k: merges.canonical(v) for k, v in rollups.by_event.items()},
            any_event={k: merges.canonical(v) for k, v in rollups.any_event.items()},
        )
    base = _Entry(entry.generation, entry.timezone, merges, rollups, entry.spans, entry.sizes, entry.nbytes)
    if change.sets is not None:
        return _with_appended(base, change.sets, generation)
    # a UTC day's events fall on that local day or the one either side (no offset reaches a day)
    local = sorted({_EPOCH + timedelta(days=u + k) for u in change.utc_days for k in (-1, 0, 1)})
    read: list[tuple[str | None, date, date]] = []
    for e, (lo, hi) in entry.spans.items():
        for first, last in _runs([d for d in local if lo <= d <= hi]):
            read.append((e, first, last))
    return _with_sets(base, merges, entry.spans, read, cursor, generation)


def _with_appended(entry: _Entry, sets: Sets, generation: int) -> _Entry:
    """``entry`` (canonical under its merges) with the sets a write appended unioned in, where it holds their
    day and event: no store read."""
    by_event = dict(entry.rollups.by_event)
    any_event = dict(entry.rollups.any_event)
    sizes = dict(entry.sizes)
    for number, event, persons in sets:
        day = _EPOCH + timedelta(days=number)
        span = entry.spans.get(event)
        if span is None or not span[0] <= day <= span[1]:
            continue
        add = entry.merges.canonical(persons)
        target: dict[Any, BitMap] = any_event if event is None else by_event
        key: Any = day if event is None else (day, event)
        held = target.get(key)
        target[key] = add if held is None else held | add
        sizes[(day, event)] = sizes.get((day, event), 0) + 8 + 2 * len(persons)  # about its stored size
    rollups = Rollups(entry.rollups.project_id, entry.rollups.timezone, by_event, any_event)
    return _Entry(generation, entry.timezone, entry.merges, rollups, entry.spans, sizes, sum(sizes.values()))


def _runs(days: list[date]) -> list[tuple[date, date]]:
    """Consecutive runs ``(first, last)`` of the sorted ``days``."""
    out: list[tuple[date, date]] = []
    for d in days:
        if out and d == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def _read(
    store: Any,
    entry: _Entry | None,
    project_id: int,
    timezone: str,
    generation: int,
    span: tuple[date, date],
    events: set[str | None],
    change: ProjectChange | None = None,
) -> _Entry:
    """``entry`` (a new one when None; brought to ``generation`` with ``change`` when given) extended by what
    the query needs, read in one DuckDB transaction."""
    cur = store.cursor()
    local = isinstance(store, EventStore)  # a store reached through a server takes SELECTs only
    try:
        if local:
            cur.execute("BEGIN TRANSACTION")
        try:
            if entry is not None and change is not None:
                got = _refresh(cur, entry, generation, change)
            else:
                got = entry or _new_entry(cur, project_id, generation)
            if got.timezone == timezone:
                got = _extend(cur, got, span[0], span[1], events)
        finally:
            if local:
                cur.execute("COMMIT")
    finally:
        cur.close()
    return got


def cached_rollups(
    store: Any, project_id: int, timezone: str, first: date, last: date, events: set[str | None]
) -> Rollups | None:
    """The canonical sets of ``project_id``'s stored rollup for days ``first``..``last`` and ``events``
    (possibly more), or None when the project has no rollup in ``timezone``."""
    if not isinstance(store, EventStore):
        # A store reached through a running server is written by that server's process, whose write
        # generations this process cannot see: nothing read from it is cached.
        got = _read(store, None, project_id, timezone, -1, (first, last), events)
        return got.rollups if got.timezone == timezone else None
    with _CACHES_LOCK:
        cache = _CACHES.get(store)
        if cache is None:
            cache = _CACHES[store] = _StoreCache()
    span = (first, last)
    for _ in range(3):
        generation, quiet = write_generation(store)
        if not quiet:
            break
        change = None
        with cache.lock:
            entry = cache.entries.get(project_id)
            if entry is not None and entry.generation != generation:
                change = store.rollup_changes(entry.generation, generation, project_id)
                if change is None or entry.timezone is None:
                    del cache.entries[project_id]
                    entry, change = None, None
            if entry is not None:
                cache.entries.move_to_end(project_id)
        if entry is not None and entry.timezone != timezone:
            return None
        if change is None and entry is not None and _covers(entry, first, last, events):
            return entry.rollups
        held = entry  # what the cache holds now: replaced below only if nobody replaced it meanwhile
        if entry is not None and change is not None and change.sets is not None:
            # the writes' appended sets bring the entry to this generation without reading the store
            entry, change = _refresh(None, entry, generation, change), None
            if _covers(entry, first, last, events):
                got = entry
        if entry is None or entry.generation != generation or not _covers(entry, first, last, events):
            got = _read(store, entry, project_id, timezone, generation, span, events, change)
        if write_generation(store) != (generation, True):
            continue  # a commit overlapped the read: what it loaded may be newer than the entry
        with cache.lock:
            if cache.entries.get(project_id, held) is held:
                cache.entries[project_id] = got
                cache.entries.move_to_end(project_id)
                total = sum(e.nbytes for e in cache.entries.values())
                while total > CACHE_BYTES and len(cache.entries) > 1:
                    _, dropped = cache.entries.popitem(last=False)
                    total -= dropped.nbytes
        return got.rollups if got.timezone == timezone else None
    # writes keep coming: one consistent read, not cached
    got = _read(store, None, project_id, timezone, -1, span, events)
    return got.rollups if got.timezone == timezone else None


def answer_from_store(
    store: Any, project_id: int, timezone: str, week_start: str, spec: QuerySpec
) -> dict[str, Any] | None:
    """Answer ``spec`` from the store's rollup of ``project_id``, or None (no rollup, or not answerable).

    ``timezone`` and ``week_start`` are the project's; the spec may override them.
    """
    if not answerable(spec, timezone):
        return None
    first, last, events = needs(spec, week_start)
    rollups = cached_rollups(store, project_id, timezone, first, last, events)
    if rollups is None:
        return None
    return answer(rollups, spec, week_start)
