"""Naive trends: per local day, totals, distinct persons and rolling windows."""

from __future__ import annotations

from datetime import date, timedelta

from tests.reference.events import Log


def daily(log: Log, tz: str, first: date, last: date, math: str, event: str | None) -> list[float]:
    rows = [(p, ts.date()) for p, e, ts, _ in log.local(tz) if event is None or e == event]
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    out: list[float] = []
    for day in days:
        if math == "total":
            out.append(sum(1 for _, d in rows if d == day))
        elif math in ("dau", "unique"):
            out.append(len({p for p, d in rows if d == day}))
        elif math in ("wau", "mau"):
            width = 7 if math == "wau" else 30
            out.append(len({p for p, d in rows if day - timedelta(days=width - 1) <= d <= day}))
        elif math == "dau_mau_ratio":
            dau = len({p for p, d in rows if d == day})
            mau = len({p for p, d in rows if day - timedelta(days=29) <= d <= day})
            out.append(dau / mau if mau else 0.0)
        else:
            raise ValueError(math)
    return out
