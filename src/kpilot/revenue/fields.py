"""Reading typed fields out of an imported row, with the column aliases each source accepts.

Every helper takes the row and one or more accepted column names (first present wins) and raises
:class:`FieldError` with a message naming the column when a value is malformed, so the importer can reject
the row with file, line and reason.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from kpilot.collect.timestamps import parse_timestamp

__all__ = [
    "FieldError",
    "get",
    "opt_bool",
    "opt_date",
    "opt_decimal",
    "opt_int",
    "opt_str",
    "opt_ts",
    "req_date",
    "req_decimal",
    "req_str",
    "req_ts",
    "str_list",
]


class FieldError(ValueError):
    """A row's field is missing or malformed; the message names the column."""


def get(row: dict[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    """``(column, value)`` of the first of ``names`` present with a non-empty value, else ``(names[0], None)``."""
    for name in names:
        value = row.get(name)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return name, value
    return names[0], None


def _missing(names: tuple[str, ...]) -> FieldError:
    alts = " or ".join(repr(n) for n in names)
    return FieldError(f"column {alts} is missing or empty")


def opt_str(row: dict[str, Any], *names: str) -> str | None:
    _, value = get(row, names)
    if value is None:
        return None
    return str(value).strip()


def req_str(row: dict[str, Any], *names: str) -> str:
    value = opt_str(row, *names)
    if value is None:
        raise _missing(names)
    return value


def opt_decimal(row: dict[str, Any], *names: str) -> Decimal | None:
    col, value = get(row, names)
    if value is None:
        return None
    if isinstance(value, bool):
        raise FieldError(f"column {col!r} is a boolean, expected a number")
    text = str(value).strip().replace(",", "") if isinstance(value, str) else repr(value)
    try:
        out = Decimal(text)
    except InvalidOperation as exc:
        raise FieldError(f"column {col!r} value {value!r} is not a number") from exc
    if not out.is_finite():
        raise FieldError(f"column {col!r} value {value!r} is not a finite number")
    return out


def req_decimal(row: dict[str, Any], *names: str) -> Decimal:
    value = opt_decimal(row, *names)
    if value is None:
        raise _missing(names)
    return value


def opt_int(row: dict[str, Any], *names: str) -> int | None:
    col, _ = get(row, names)
    value = opt_decimal(row, *names)
    if value is None:
        return None
    if value != value.to_integral_value():
        raise FieldError(f"column {col!r} value {value} is not a whole number")
    return int(value)


def opt_bool(row: dict[str, Any], *names: str) -> bool | None:
    col, value = get(row, names)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "y", "1"):
        return True
    if text in ("false", "f", "no", "n", "0"):
        return False
    raise FieldError(f"column {col!r} value {value!r} is not a boolean (true/false)")


def opt_ts(row: dict[str, Any], *names: str) -> datetime | None:
    col, value = get(row, names)
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    try:
        return parse_timestamp(value, field=f"column {col!r}")
    except ValueError as exc:
        raise FieldError(str(exc)) from exc


def req_ts(row: dict[str, Any], *names: str) -> datetime:
    value = opt_ts(row, *names)
    if value is None:
        raise _missing(names)
    return value


def opt_date(row: dict[str, Any], *names: str) -> date | None:
    """A date (``YYYY-MM-DD``) or a timestamp, of which the UTC date is taken."""
    col, value = get(row, names)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise FieldError(f"column {col!r} value {value!r} is not a date (YYYY-MM-DD)") from exc
    ts = opt_ts(row, *names)
    return ts.date() if ts is not None else None


def req_date(row: dict[str, Any], *names: str) -> date:
    value = opt_date(row, *names)
    if value is None:
        raise _missing(names)
    return value


def str_list(row: dict[str, Any], *names: str) -> list[str]:
    """A list column: a JSON array, a JSON array in text, or text separated by ``;`` or ``|``."""
    col, value = get(row, names)
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise FieldError(f"column {col!r} is not a valid JSON array") from exc
        if not isinstance(parsed, list):
            raise FieldError(f"column {col!r} must be a JSON array")
        return [str(v).strip() for v in parsed if v is not None and str(v).strip()]
    sep = ";" if ";" in text else "|"
    return [part.strip() for part in text.split(sep) if part.strip()]
