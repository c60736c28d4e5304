"""Exception hierarchy. Every error a user can cause is a :class:`KpilotError` with a clear message."""

from __future__ import annotations

__all__ = ["ImportRejected", "KpilotError", "NotFoundError", "SpecError", "WorkspaceError"]


class KpilotError(Exception):
    """Base class of errors caused by input or state a user can fix. ``code`` is stable for machines."""

    code = "error"
    exit_code = 1


class WorkspaceError(KpilotError):
    code = "workspace"
    exit_code = 2


class NotFoundError(KpilotError):
    code = "not_found"
    exit_code = 3


class SpecError(KpilotError):
    """A query or metric spec is malformed. ``field`` names the offending path (dotted)."""

    code = "invalid_spec"
    exit_code = 4

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class ImportRejected(KpilotError):
    code = "rows_rejected"
    exit_code = 5
