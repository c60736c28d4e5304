"""Helpers of the revenue and customer-voice tests: import rows through the real importer, run queries."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson

from kpilot.collect.importer import ImportReport
from kpilot.revenue.importing import import_source
from tests.conftest import Env


def import_rows(env: Env, source: str, rows: list[dict[str, Any]]) -> ImportReport:
    """Write ``rows`` to a JSONL file and import it as ``source``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{source}.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(r, default=str) for r in rows) + b"\n")
        return import_source(env.ws, env.project, source, [path])


def revenue(env: Env, measure: str, date_from: str, date_to: str, **extra: Any) -> dict[str, Any]:
    return env.query(
        {"kind": "revenue", "measure": measure, "date_from": date_from, "date_to": date_to, **extra}
    )


def voice(env: Env, measure: str, date_from: str, date_to: str, **extra: Any) -> dict[str, Any]:
    return env.query(
        {"kind": "voice", "measure": measure, "date_from": date_from, "date_to": date_to, **extra}
    )


def series(result: dict[str, Any]) -> list[Any]:
    return [p["value"] for p in result["series"]]


def sub(
    sid: str, customer: str, start: str, end: str | None = None, amount: float = 100, **more: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "subscription_id": sid,
        "customer_id": customer,
        "start_date": start,
        "amount": amount,
    }
    if end is not None:
        row["end_date"] = end
    row.update(more)
    return row
