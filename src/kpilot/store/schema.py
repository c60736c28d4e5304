"""DuckDB schema of the event store. Timestamps are naive UTC; the project timezone is applied by queries."""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_SQL", "SCHEMA_VERSION"]

SCHEMA_VERSION = 6

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS kpilot_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    project_id INTEGER NOT NULL,
    uuid VARCHAR NOT NULL,
    event VARCHAR NOT NULL,
    distinct_id VARCHAR NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    properties JSON NOT NULL,
    received_at TIMESTAMP NOT NULL,
    -- md5_number_lower(uuid): a stable 64-bit hash, so deduplication scans one integer column
    uuid_hash UBIGINT
);
-- one row per distinct id; person_id is dense per project (1, 2, 3, ...). A merge re-points the ids of
-- the absorbed person to the surviving (smaller) person id, so every past event counts for the merged person.
CREATE TABLE IF NOT EXISTS person_distinct_ids (
    project_id INTEGER NOT NULL,
    distinct_id VARCHAR NOT NULL,
    person_id BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS person_merges (
    project_id INTEGER NOT NULL,
    from_person BIGINT NOT NULL,
    into_person BIGINT NOT NULL,
    merged_at TIMESTAMP NOT NULL
);
-- person properties are kept per distinct id and per write, and resolved at query time:
-- $set: the value with the latest timestamp wins; $set_once: the earliest, and only when no $set exists.
CREATE TABLE IF NOT EXISTS person_property_writes (
    project_id INTEGER NOT NULL,
    distinct_id VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    value VARCHAR,
    ts TIMESTAMP NOT NULL,
    set_once BOOLEAN NOT NULL
);
-- per project, day (UTC) and event: rows accepted and rows dropped as duplicates (for `kpilot audit`).
CREATE TABLE IF NOT EXISTS ingest_stats (
    project_id INTEGER NOT NULL,
    day DATE NOT NULL,
    event VARCHAR NOT NULL,
    accepted BIGINT NOT NULL,
    deduplicated BIGINT NOT NULL
);
-- rollups (kpilot.store.rollup_store): per local day and event (NULL = any event), persons as roaring bitmaps
CREATE TABLE IF NOT EXISTS rollup_projects (
    project_id INTEGER NOT NULL,
    timezone VARCHAR NOT NULL,
    built_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS rollup_persons (
    project_id INTEGER NOT NULL,
    day DATE NOT NULL,
    event VARCHAR,
    persons BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rollup_merges (
    project_id INTEGER NOT NULL,
    absorbed BIGINT NOT NULL,
    survivor BIGINT NOT NULL
);
-- materialised sessions (kpilot.store.session_store): one row per session of every current person
CREATE TABLE IF NOT EXISTS session_projects (
    project_id INTEGER NOT NULL,
    inactivity_seconds INTEGER NOT NULL,
    max_seconds INTEGER NOT NULL,
    built_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS person_sessions (
    project_id INTEGER NOT NULL,
    person_id BIGINT NOT NULL,
    start_ts TIMESTAMP NOT NULL,
    end_ts TIMESTAMP NOT NULL,
    run_start TIMESTAMP NOT NULL,
    events STRUCT(event VARCHAR, n INTEGER)[] NOT NULL
);
-- projects whose sessions lack the upkeep of some stored events (kpilot.store.session_pending)
CREATE TABLE IF NOT EXISTS session_pending (
    project_id INTEGER NOT NULL,
    since TIMESTAMP NOT NULL
);
-- per local day (project timezone), aggregates of the sessions starting that day (kpilot.store.session_store)
CREATE TABLE IF NOT EXISTS session_day_projects (
    project_id INTEGER NOT NULL,
    timezone VARCHAR NOT NULL,
    built_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS session_days (
    project_id INTEGER NOT NULL,
    day DATE NOT NULL,
    sessions BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    engaged BIGINT NOT NULL,
    min_run_start TIMESTAMP NOT NULL,
    max_end TIMESTAMP NOT NULL,
    max_run_seconds DOUBLE NOT NULL,
    persons BLOB NOT NULL
);
-- the day's session durations (seconds, ascending float64), in slices of values (bucket: top 16 bits)
CREATE TABLE IF NOT EXISTS session_day_durations (
    project_id INTEGER NOT NULL,
    day DATE NOT NULL,
    bucket INTEGER NOT NULL,
    n BIGINT NOT NULL,
    durations BLOB NOT NULL
);
CREATE OR REPLACE VIEW person_properties AS
WITH resolved AS (
    SELECT w.project_id, p.person_id, w.key,
           arg_max(w.value, w.ts) FILTER (WHERE NOT w.set_once) AS set_value,
           count(*) FILTER (WHERE NOT w.set_once) AS n_set,
           arg_min(w.value, w.ts) FILTER (WHERE w.set_once) AS once_value
    FROM person_property_writes w
    JOIN person_distinct_ids p ON p.project_id = w.project_id AND p.distinct_id = w.distinct_id
    GROUP BY ALL
)
SELECT project_id, person_id, key, CASE WHEN n_set > 0 THEN set_value ELSE once_value END AS value
FROM resolved;
"""

# Upgrades of an existing store, by the version they bring it to. Each runs in one transaction.
MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE events ADD COLUMN IF NOT EXISTS uuid_hash UBIGINT;
UPDATE events SET uuid_hash = md5_number_lower(uuid) WHERE uuid_hash IS NULL;
""",
    # v3 adds the rollup tables (created by SCHEMA_SQL); projects get their rollup when the workspace opens.
    3: "SELECT 1;",
    # v4 adds the materialised session tables; projects get their sessions built when the workspace opens.
    4: "SELECT 1;",
    # v5 adds the per-day session aggregates; projects get them built when the workspace opens.
    5: "SELECT 1;",
    # v6 adds session_pending (created by SCHEMA_SQL): sessions whose upkeep an import put off.
    6: "SELECT 1;",
}
