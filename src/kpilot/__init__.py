"""kpilot: self-hosted product metrics and KPIs.

Architecture (folders follow the data's path): ``collect`` (normalise and import events) ->
``store`` (the embedded DuckDB event store and identity graph) -> ``compute`` (query specs compiled
to SQL for an engine) -> ``catalog`` (declarative metric specs) -> ``cli`` (presentation).
"""

from kpilot.errors import KpilotError, SpecError, WorkspaceError

__all__ = ["KpilotError", "SpecError", "WorkspaceError", "__version__"]
__version__ = "0.1.0"
