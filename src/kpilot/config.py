"""Settings, read from the environment (``KPILOT_*``) by pydantic-settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KPILOT_", extra="ignore")

    home: Path = Field(default=Path("kpilot-data"), description="Workspace directory")
    metadata_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database; default: SQLite inside the workspace",
    )
    project: str | None = Field(default=None, description="Default project name for CLI commands")
    import_batch_rows: int = Field(default=500_000, ge=1)
    rollups: bool = Field(
        default=True,
        description="Maintain per-day person bitmaps at every write and answer queries from them when they can",
    )
    store_memory_limit: str | None = Field(
        default=None,
        description="Cap on the event store's (DuckDB's) memory, e.g. `1GB`; default: DuckDB's (80% of RAM). "
        "Past it DuckDB evicts cached blocks and spills large operations to disk",
    )
    id_index_mb: int = Field(
        default=64,
        ge=0,
        description="Memory budget (MiB) of the event store's index of stored event ids, used by "
        "deduplication: 8 bytes per stored event of the days recent writes touched. Past it, days other "
        "writes touched are dropped (read again from the store when needed) and the older ids of the days "
        "the current writes touch move to files beside the store",
    )
    spark_master: str = Field(default="local[*]", description="Spark master URL for `--engine spark`")
    lake: str | None = Field(default=None, description="Lake directory or URI read by `--engine spark`")


def get_settings(**overrides: object) -> Settings:
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
