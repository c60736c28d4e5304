"""DuckDB tables of the business data sources: billing, spend, surveys, support and feedback.

They live in the event store's DuckDB file next to ``events`` and are project-scoped like every other table.
Each table has a natural key (listed in :data:`NATURAL_KEYS`); importing a row whose key already exists
replaces the stored row, so re-importing a file changes nothing. Money is ``DECIMAL(18, 4)`` in major
units (dollars, not cents); dates are naive UTC.

The tables are created on first use (``CREATE TABLE IF NOT EXISTS``), so a store written by an older kpilot
gains them the first time something is imported.
"""

from __future__ import annotations

from typing import Any

from kpilot.errors import NotFoundError

__all__ = ["NATURAL_KEYS", "SCHEMA_SQL", "TABLES", "ensure_schema", "missing_tables"]

SCHEMA_SQL = """
-- customer id <-> person link: distinct_id is the id the product tracks the customer's user under.
CREATE TABLE IF NOT EXISTS customers (
    project_id INTEGER NOT NULL,
    customer_id VARCHAR NOT NULL,
    distinct_id VARCHAR,
    email VARCHAR,
    name VARCHAR,
    channel VARCHAR,
    country VARCHAR,
    created_at TIMESTAMP
);
-- one row per subscription state: the subscription looked like this over [start_date, end_date).
CREATE TABLE IF NOT EXISTS subscriptions (
    project_id INTEGER NOT NULL,
    subscription_id VARCHAR NOT NULL,
    customer_id VARCHAR NOT NULL,
    start_date DATE NOT NULL,
    end_date DATE,
    plan VARCHAR,
    amount DECIMAL(18, 4) NOT NULL,
    currency VARCHAR NOT NULL,
    billing_interval VARCHAR NOT NULL,
    interval_count INTEGER NOT NULL,
    quantity DECIMAL(18, 4) NOT NULL,
    discount_percent DECIMAL(9, 4),
    discount_amount DECIMAL(18, 4),
    discount_end DATE,
    discount_duration VARCHAR NOT NULL,
    trial_end DATE,
    status VARCHAR NOT NULL,
    canceled_at DATE,
    past_due_since DATE,
    tax_percent DECIMAL(9, 4),
    tax_inclusive BOOLEAN NOT NULL,
    source VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS invoices (
    project_id INTEGER NOT NULL,
    invoice_id VARCHAR NOT NULL,
    customer_id VARCHAR NOT NULL,
    subscription_id VARCHAR,
    issued_at TIMESTAMP NOT NULL,
    paid_at TIMESTAMP,
    amount DECIMAL(18, 4) NOT NULL,
    tax DECIMAL(18, 4) NOT NULL,
    discount DECIMAL(18, 4) NOT NULL,
    currency VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    kind VARCHAR NOT NULL
);
-- 1 unit of ``currency`` is worth ``rate`` units of ``quote`` from ``day`` on (until the next row).
CREATE TABLE IF NOT EXISTS fx_rates (
    project_id INTEGER NOT NULL,
    day DATE NOT NULL,
    currency VARCHAR NOT NULL,
    quote VARCHAR NOT NULL,
    rate DECIMAL(18, 8) NOT NULL
);
CREATE TABLE IF NOT EXISTS spend (
    project_id INTEGER NOT NULL,
    day DATE NOT NULL,
    channel VARCHAR NOT NULL,
    campaign VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    amount DECIMAL(18, 4) NOT NULL,
    currency VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS survey_responses (
    project_id INTEGER NOT NULL,
    response_id VARCHAR NOT NULL,
    survey VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    score INTEGER NOT NULL,
    customer_id VARCHAR,
    distinct_id VARCHAR,
    responded_at TIMESTAMP NOT NULL,
    comment VARCHAR
);
CREATE TABLE IF NOT EXISTS tickets (
    project_id INTEGER NOT NULL,
    ticket_id VARCHAR NOT NULL,
    customer_id VARCHAR,
    distinct_id VARCHAR,
    created_at TIMESTAMP NOT NULL,
    first_response_at TIMESTAMP,
    resolved_at TIMESTAMP,
    escalation_level INTEGER NOT NULL,
    channel VARCHAR,
    priority VARCHAR,
    status VARCHAR
);
CREATE TABLE IF NOT EXISTS feedback_items (
    project_id INTEGER NOT NULL,
    item_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    title VARCHAR,
    text VARCHAR NOT NULL,
    customer_id VARCHAR,
    distinct_id VARCHAR,
    source VARCHAR,
    created_at TIMESTAMP NOT NULL,
    votes INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    tags VARCHAR,
    sentiment DOUBLE NOT NULL,
    sentiment_label VARCHAR NOT NULL
);
-- who asked for / voted on a feature request (customer ids or distinct ids), for "top by requesters' MRR".
CREATE TABLE IF NOT EXISTS feedback_voters (
    project_id INTEGER NOT NULL,
    item_id VARCHAR NOT NULL,
    voter VARCHAR NOT NULL
);
-- duplicates: ``item_id`` was merged into ``into_item_id`` (kept apart from feedback_items so a re-import
-- of the feedback file never undoes a merge).
CREATE TABLE IF NOT EXISTS feedback_merges (
    project_id INTEGER NOT NULL,
    item_id VARCHAR NOT NULL,
    into_item_id VARCHAR NOT NULL,
    merged_at TIMESTAMP NOT NULL
);
"""

TABLES = (
    "customers",
    "subscriptions",
    "invoices",
    "fx_rates",
    "spend",
    "survey_responses",
    "tickets",
    "feedback_items",
    "feedback_voters",
    "feedback_merges",
)

NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "subscriptions": ("subscription_id", "start_date"),
    "invoices": ("invoice_id",),
    "fx_rates": ("day", "currency", "quote"),
    "spend": ("day", "channel", "campaign", "category"),
    "survey_responses": ("response_id",),
    "tickets": ("ticket_id",),
    "feedback_items": ("item_id",),
    "feedback_voters": ("item_id", "voter"),
    "feedback_merges": ("item_id",),
}
"""Per table, the columns (besides ``project_id``) that identify a row: re-imports replace on them."""


def missing_tables(engine: Any) -> list[str]:
    """Which of :data:`TABLES` the store does not have yet."""
    names = ", ".join(f"'{t}'" for t in TABLES)
    rows = engine.fetchall(f"SELECT table_name FROM information_schema.tables WHERE table_name IN ({names})")
    present = {str(r[0]) for r in rows}
    return [t for t in TABLES if t not in present]


def ensure_schema(store: Any) -> None:
    """Create the tables if needed. On a read-only store a missing table is a :class:`NotFoundError`."""
    missing = missing_tables(store)
    if not missing:
        return
    if getattr(store, "read_only", False):
        raise NotFoundError(
            f"no business data imported yet (table {missing[0]} is missing): "
            "run `kpilot import subscriptions|invoices|spend|surveys|tickets|feedback FILE` first"
        )
    store.conn.execute(SCHEMA_SQL)
