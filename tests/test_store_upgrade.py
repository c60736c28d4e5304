"""An event store written by schema version 1 is upgraded in place and keeps deduplicating."""

from __future__ import annotations

from pathlib import Path

import duckdb

from kpilot.collect.normalize import normalize
from kpilot.store.duckdb_store import EventStore
from kpilot.store.schema import SCHEMA_VERSION

V1_EVENTS = """
CREATE TABLE kpilot_schema (version INTEGER NOT NULL);
INSERT INTO kpilot_schema VALUES (1);
CREATE TABLE events (project_id INTEGER NOT NULL, uuid VARCHAR NOT NULL, event VARCHAR NOT NULL,
    distinct_id VARCHAR NOT NULL, timestamp TIMESTAMP NOT NULL, properties JSON NOT NULL,
    received_at TIMESTAMP NOT NULL);
INSERT INTO events VALUES (1, 'old-1', 'x', 'a', TIMESTAMP '2024-01-01 10:00:00', '{}', TIMESTAMP '2024-01-01 10:00:00');
"""


def test_v1_store_is_upgraded_and_old_ids_still_deduplicate(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    con = duckdb.connect(str(path))
    con.execute(V1_EVENTS)
    con.close()
    store = EventStore(path)
    try:
        assert store.fetchall("SELECT max(version) FROM kpilot_schema")[0][0] == SCHEMA_VERSION
        assert store.fetchall("SELECT uuid_hash = md5_number_lower(uuid) FROM events")[0][0] is True
        row = {"event": "x", "distinct_id": "a", "uuid": "old-1", "timestamp": "2024-01-01T10:00:00Z"}
        result = store.write_batch(1, [normalize(row), normalize({**row, "uuid": "new-1"})])
        assert (result.accepted, result.deduplicated) == (1, 1)
        assert store.fetchall("SELECT count(*) FROM person_distinct_ids")[0][0] == 1
    finally:
        store.close()
    # opening again is a no-op
    EventStore(path).close()
