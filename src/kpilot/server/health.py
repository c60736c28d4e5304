"""Liveness and writer statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from kpilot import __version__
from kpilot.server.deps import WriterDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(writer: WriterDep) -> dict[str, Any]:
    """``{"status": "ok", ...}`` while the server accepts events, with the writer's counters."""
    return {
        "status": "ok",
        "version": __version__,
        "pending_events": writer.pending_events,
        "writer": writer.stats.as_dict(),
    }
