"""The compute engine interface: run compiled SQL, and the entry point that runs any query spec."""

from __future__ import annotations

from typing import Any, Protocol, assert_never, runtime_checkable

from kpilot.compute.context import QueryContext
from kpilot.compute.dialect import DIALECTS, Dialect
from kpilot.compute.spec import (
    FeatureAdoptionSpec,
    FunnelSpec,
    QuerySpec,
    RetentionSpec,
    RevenueSpec,
    SessionsSpec,
    StickinessSpec,
    TimeToValueSpec,
    TrendsSpec,
    VoiceSpec,
)
from kpilot.store.duckdb_store import EventStore
from kpilot.workspace import ProjectInfo

__all__ = ["DuckDBEngine", "Engine", "RollupSource", "run_query"]


class Engine(Protocol):
    """Narrow interface every compute engine offers: a dialect and a way to run one SELECT."""

    @property
    def dialect(self) -> Dialect: ...

    def fetchall(self, sql: str) -> list[tuple[Any, ...]]: ...


@runtime_checkable
class RollupSource(Protocol):
    """Optional ability of an engine: answer a spec from precomputed rollups, or None to use raw events."""

    def from_rollups(self, project: ProjectInfo, spec: QuerySpec) -> dict[str, Any] | None: ...


class DuckDBEngine:
    """Runs queries on the embedded store through a fresh cursor each time (safe across threads).

    With ``rollups`` (the default, setting ``KPILOT_ROLLUPS``), specs the store's rollup can answer are
    answered from it (:mod:`kpilot.compute.rollups`), sessions specs its materialised sessions can answer
    from those (:mod:`kpilot.compute.sessions_mat`); the rest from raw events.
    """

    def __init__(self, store: EventStore, *, rollups: bool | None = None) -> None:
        self.store = store
        if rollups is None:
            from kpilot.config import get_settings

            rollups = get_settings().rollups
        self.rollups = rollups
        self.last_source = "events"
        """Where the last :func:`run_query` answer came from: "rollups", "sessions" or "events"."""

    def from_rollups(self, project: ProjectInfo, spec: QuerySpec) -> dict[str, Any] | None:
        self.last_source = "events"
        if not self.rollups:
            return None
        if isinstance(spec, SessionsSpec):
            from kpilot.compute.sessions_mat import answer_from_store as from_sessions

            got = from_sessions(self.store, project, spec)
            self.last_source = "events" if got is None else "sessions"
            return got
        from kpilot.compute.rollup_cache import answer_from_store

        got = answer_from_store(self.store, project.id, project.timezone, project.week_start, spec)
        self.last_source = "events" if got is None else "rollups"
        return got

    @property
    def dialect(self) -> Dialect:
        return DIALECTS["duckdb"]

    def fetchall(self, sql: str) -> list[tuple[Any, ...]]:
        return self.store.fetchall(sql)


def context_for(engine: Engine, project: ProjectInfo, spec: QuerySpec) -> QueryContext:
    week_start = project.week_start
    if isinstance(spec, RetentionSpec) and spec.week_start is not None:
        week_start = spec.week_start
    return QueryContext(project.id, spec.timezone or project.timezone, week_start, engine.dialect)


def run_query(engine: Engine, project: ProjectInfo, spec: QuerySpec) -> dict[str, Any]:
    """Compute ``spec`` for ``project``; the result is plain JSON-ready data."""
    from kpilot.compute.queries import (
        adoption,
        funnel,
        retention,
        sessions,
        stickiness,
        time_to_value,
        trends,
    )

    if isinstance(engine, RollupSource):
        got = engine.from_rollups(project, spec)
        if got is not None:
            return got
    ctx = context_for(engine, project, spec)
    if isinstance(spec, TrendsSpec):
        return trends.run(engine, ctx, spec)
    if isinstance(spec, StickinessSpec):
        return stickiness.run(engine, ctx, spec)
    if isinstance(spec, RetentionSpec):
        return retention.run(engine, ctx, spec)
    if isinstance(spec, FunnelSpec):
        return funnel.run(engine, ctx, spec)
    if isinstance(spec, SessionsSpec):
        return sessions.run(engine, ctx, spec)
    if isinstance(spec, FeatureAdoptionSpec):
        return adoption.run(engine, ctx, spec)
    if isinstance(spec, TimeToValueSpec):
        return time_to_value.run(engine, ctx, spec)
    if isinstance(spec, RevenueSpec):
        from kpilot.revenue.query import run as run_revenue

        return run_revenue(engine, ctx, spec)
    if isinstance(spec, VoiceSpec):
        from kpilot.voice.query import run as run_voice

        return run_voice(engine, ctx, spec)
    assert_never(spec)
