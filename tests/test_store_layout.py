"""How the store lays events out on disk: bulk batches clustered by event name."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kpilot.collect.normalize import Normalized
from kpilot.store.duckdb_store import EventStore

T0 = datetime(2024, 3, 10, 12, 0)


def ev(uuid: str, ts: datetime, name: str) -> Normalized:
    return Normalized(uuid=uuid, event=name, distinct_id="u", timestamp=ts, properties={})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "events.duckdb")
    yield s
    s.close()


def test_bulk_batches_are_stored_clustered_by_event(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kpilot.store.duckdb_store as ds

    names = ["zeta", "alpha", "mid"]
    batch = [ev(f"id{i}", T0 + timedelta(seconds=i), name=names[i % 3]) for i in range(30)]
    store.write_batch(1, batch[:15])  # small: kept in arrival order
    monkeypatch.setattr(ds, "CLUSTER_MIN_ROWS", 10)
    store.write_batch(1, batch[15:])  # bulk: sorted by event, then time
    rows = store.fetchall("SELECT event, timestamp FROM events ORDER BY rowid")
    assert [r[0] for r in rows[:15]] == [names[i % 3] for i in range(15)]
    assert rows[15:] == sorted(rows[15:])
