"""Server settings, read from ``KPILOT_*`` environment variables by pydantic-settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServerSettings"]


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KPILOT_", extra="ignore")

    home: Path = Field(default=Path("kpilot-data"), description="Workspace directory")
    metadata_url: str | None = Field(default=None, description="SQLAlchemy URL of the metadata database")
    host: str = Field(default="127.0.0.1", description="Interface to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port)")

    segment_max_event_bytes: int = Field(default=32 * 1024, ge=1, description="Largest Segment message")
    segment_max_request_bytes: int = Field(
        default=500 * 1024, ge=1, description="Largest Segment request body, after decompression"
    )
    posthog_max_event_bytes: int = Field(default=1024 * 1024, ge=1, description="Largest PostHog event")
    posthog_max_request_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest PostHog request body, after decompression"
    )
    future_tolerance_hours: float = Field(
        default=23.0, gt=0, description="Events further in the future are clamped to the receive time"
    )

    commit_max_events: int = Field(
        default=100_000, ge=1, description="A group commit takes queued requests up to this many events"
    )
    queue_max_events: int = Field(
        default=400_000,
        ge=1,
        description="While this many events wait to be stored, new requests wait for room (then 503)",
    )
    prepare_workers: int = Field(
        default=1,
        ge=0,
        le=16,
        description="Processes that normalise ingested requests (0: in the server process itself)",
    )
    overload_wait_seconds: float = Field(
        default=10.0, ge=0, description="How long a request waits for room in a full queue before 503"
    )
    import_max_request_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1,
        description="Largest file accepted by the REST import API (413 beyond), compressed and decompressed",
    )
    key_cache_seconds: float = Field(
        default=2.0, ge=0, description="How long a key lookup is cached (a revocation takes this long)"
    )
