"""Liveness and writer statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from kpilot import __version__
from kpilot.server.deps import StateDep, WriterDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
def health(writer: WriterDep, state: StateDep) -> dict[str, Any]:
    """``{"status": "ok", ...}`` while the server accepts events, with the writer's counters and the
    memory DuckDB reports for its buffers (``store_memory_bytes``) and the id index holds
    (``id_index_bytes``; its run files on disk: ``id_index_disk_bytes``). Runs on a worker thread."""
    rows = state.ws.store.fetchall("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()")
    return {
        "status": "ok",
        "version": __version__,
        "pending_events": writer.pending_events,
        "ingest_log": writer.positions,
        "store_memory_bytes": int(rows[0][0]),
        "id_index_bytes": state.ws.store.id_index_bytes,
        "id_index_disk_bytes": state.ws.store.id_index_disk_bytes,
        "writer": writer.stats.as_dict(),
    }
