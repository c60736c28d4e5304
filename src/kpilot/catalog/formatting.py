"""How a metric value prints for people, by unit (machines get the raw number in JSON)."""

from __future__ import annotations

__all__ = ["format_value"]


def format_value(value: float | None, unit: str) -> str:
    """``0.1234`` ratio -> ``12.3%``; seconds -> ``2h 05m``; counts with thousands separators."""
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "seconds":
        return _duration(value)
    if unit == "days":
        return f"{value:,.1f} d"
    if unit == "count":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    if unit == "currency":
        return f"{value:,.2f}"
    return f"{value:,.2f}"


def _duration(seconds: float) -> str:
    total = round(seconds)
    if total < 60:
        return f"{seconds:.0f}s" if seconds >= 1 or seconds == 0 else f"{seconds:.2f}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"
