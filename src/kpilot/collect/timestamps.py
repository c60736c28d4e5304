"""Parsing of the timestamp forms that tracking clients and exports use."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

__all__ = ["parse_timestamp", "to_utc_naive"]


def to_utc_naive(dt: datetime) -> datetime:
    """Convert an aware datetime to naive UTC; a naive one is taken to be UTC already."""
    if dt.tzinfo is None:
        return dt
    return dt.astimezone(UTC).replace(tzinfo=None)


def parse_timestamp(value: object, field: str = "timestamp") -> datetime:
    """ISO 8601 text (``Z`` or offsets, naive means UTC), epoch seconds or milliseconds, or a datetime.

    Raises ``ValueError`` with a message naming ``field``.
    """
    if isinstance(value, datetime):
        return to_utc_naive(value)
    if isinstance(value, bool):
        raise ValueError(f"{field} is a boolean, expected an ISO 8601 timestamp")
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0 if abs(value) > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"{field} {value!r} is out of range") from exc
    if isinstance(value, str):
        parsed = _parse_text(value)
        if isinstance(parsed, datetime):
            return parsed
        raise ValueError(parsed.format(field=field, value=value))
    if value is None:
        raise ValueError(f"{field} is missing")
    raise ValueError(f"{field} has type {type(value).__name__}, expected an ISO 8601 timestamp")


@lru_cache(maxsize=16_384)
def _parse_text(value: str) -> datetime | str:
    """The naive UTC instant of ISO text, or an error message template (``{field}``, ``{value!r}``).

    Cached: a batch repeats its ``sentAt`` in every message, and the server checks each timestamp before it
    normalises the message."""
    text = value.strip()
    if not text:
        return "{field} is empty"
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return "{field} {value!r} is not an ISO 8601 timestamp"
    try:
        return to_utc_naive(parsed)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        return "{field} {value!r} is out of range"
