"""Customer-voice formulas on plain counts (docs/customer_voice.md has worked examples).

* NPS = %promoters (9-10) - %detractors (0-6), in [-100, 100].
* Its margin of error treats each answer as +1 (promoter), 0 (passive) or -1 (detractor): the variance of
  that score is ``pP + pD - (pP - pD)^2``, the standard error ``sqrt(variance / n)``, and the margin
  ``z x SE x 100`` with ``z`` the normal quantile of the confidence level (1.96 at 95%). The adjusted-Wald
  variant adds 3 answers (3/4 promoter, 3/4 detractor, 3/2 passive) before computing the interval, which is
  centred on the adjusted score; it behaves better on small samples and near the ends of the scale.
* CSAT = % of answers >= ``csat_satisfied_min`` (4 on 1-5: "top-2-box"), and the mean answer.
* CES = mean answer on the 1-7 scale, and the agree rate = % of answers >= ``ces_agree_min`` (5).
* Customer Sentiment Score = %positive - %negative feedback items (VADER labels), in [-100, 100].
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

__all__ = ["nps_stats", "percent", "sentiment_score", "z_for"]


def z_for(confidence: float) -> float:
    """Two-sided normal quantile: 1.959964 for 0.95."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def percent(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def nps_stats(
    promoters: int, passives: int, detractors: int, confidence: float = 0.95, method: str = "wald"
) -> dict[str, Any]:
    """NPS with its margin of error and interval; every number is ``None`` when there are no answers."""
    n = promoters + passives + detractors
    out: dict[str, Any] = {
        "responses": n,
        "promoters": promoters,
        "passives": passives,
        "detractors": detractors,
        "nps": None,
        "margin_of_error": None,
        "lower": None,
        "upper": None,
    }
    if n == 0:
        return out
    z = z_for(confidence)
    nps = 100.0 * (promoters - detractors) / n
    if method == "adjusted_wald":
        n_adj = n + 3
        p_p, p_d = (promoters + 0.75) / n_adj, (detractors + 0.75) / n_adj
        denom = n_adj
    elif method == "wald":
        p_p, p_d = promoters / n, detractors / n
        denom = n
    else:
        raise ValueError(f"unknown margin of error method {method!r}")
    variance = p_p + p_d - (p_p - p_d) ** 2
    moe = 100.0 * z * math.sqrt(variance / denom)
    center = 100.0 * (p_p - p_d)
    out.update(
        nps=nps,
        margin_of_error=moe,
        lower=max(-100.0, center - moe),
        upper=min(100.0, center + moe),
    )
    return out


def sentiment_score(positive: int, neutral: int, negative: int) -> float | None:
    """Customer Sentiment Score = %positive - %negative."""
    total = positive + neutral + negative
    return None if total == 0 else 100.0 * (positive - negative) / total
