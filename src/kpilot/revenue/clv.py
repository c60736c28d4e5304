"""Predictive customer value: BG/NBD (purchases and being alive) and Gamma-Gamma (spend per purchase).

Both are fitted by maximum likelihood with scipy (Fader, Hardie & Lee 2005 for BG/NBD; Fader, Hardie & Lee
2005, "RFM and CLV", for Gamma-Gamma). Per customer the input is the RFM summary in weeks:

* ``x`` (frequency) = number of repeat purchases = distinct purchase days - 1;
* ``t_x`` (recency) = weeks from the first to the last purchase; ``T`` = weeks from the first purchase to the
  end of the observation;
* ``m`` = mean value of the repeat purchases (the first purchase excluded, as the model requires).

Outputs per customer over a horizon of ``t`` weeks: expected purchases, probability of being alive, expected
value per purchase, and predicted value = expected purchases x expected value per purchase (undiscounted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

from kpilot.errors import KpilotError

__all__ = [
    "BgNbd",
    "GammaGamma",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "run_predicted",
]

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float

    def _ratio_term(self, x: Array, t_x: Array, T: Array) -> Array:
        """``a / (b + x - 1) x ((alpha + T) / (alpha + t_x))^(r + x)`` for x > 0, else 0."""
        xs = np.maximum(x, 1)
        term = (
            self.a
            / (self.b + xs - 1)
            * np.exp((self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x)))
        )
        return np.where(x > 0, term, 0.0)

    def p_alive(self, x: Array, t_x: Array, T: Array) -> Array:
        return 1.0 / (1.0 + self._ratio_term(x, t_x, T))

    def expected_purchases(self, t: float, x: Array, t_x: Array, T: Array) -> Array:
        """Expected purchases in the next ``t`` weeks given the customer's history."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
        return np.asarray(head * body / (1 + self._ratio_term(x, t_x, T)), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class GammaGamma:
    p: float
    q: float
    gamma: float
    log_likelihood: float

    def expected_value(self, x: Array, m: Array) -> Array:
        """Expected value per purchase; customers without repeat purchases get the population mean."""
        p, q, g = self.p, self.q, self.gamma
        population = p * g / (q - 1)
        cond = (p * (g + x * m)) / (p * x + q - 1)
        return np.where(x > 0, cond, population)


_PENALTY = 1e100
"""Negative log-likelihood given to parameters where the likelihood is not a finite number."""


def _bgnbd_ll(params: Array, x: Array, t_x: Array, T: Array, w: Array) -> float:
    # The optimiser may try parameters whose exp() under- or overflows: such a point gets a hugely negative
    # (finite, so the optimiser's own arithmetic stays finite) score instead of raising numpy warnings.
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        r, alpha, a, b = np.exp(params)
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        a3 = -(r + x) * np.log(alpha + T)
        xs = np.maximum(x, 1)
        a4 = np.where(x > 0, np.log(a) - np.log(b + xs - 1) - (r + x) * np.log(alpha + t_x), -np.inf)
        ll = float(np.sum(w * (a1 + a2 + np.logaddexp(a3, a4))))
    return ll if np.isfinite(ll) else -_PENALTY


def _compress(*cols: Sequence[float] | Array) -> tuple[list[Array], Array]:
    """Unique rows and their counts (CDNOW's 2,357 customers have a few hundred distinct summaries)."""
    stacked = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype(np.float64)


def fit_bgnbd(x: Sequence[float] | Array, t_x: Sequence[float] | Array, T: Sequence[float] | Array) -> BgNbd:
    """Maximum likelihood BG/NBD parameters."""
    (xa, ta, Ta), w = _compress(x, t_x, T)
    if len(xa) == 0 or not np.any(xa > 0):
        raise KpilotError("BG/NBD needs customers with repeat purchases")

    def nll(p: Array) -> float:
        return -_bgnbd_ll(p, xa, ta, Ta, w)

    best = None
    for start in (np.log([0.5, 5.0, 0.5, 2.0]), np.zeros(4)):
        res = minimize(
            nll,
            start,
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20000, "maxfev": 20000},
        )
        res = minimize(nll, res.x, method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    return BgNbd(r, alpha, a, b, -float(best.fun))


def fit_gamma_gamma(x: Sequence[float] | Array, m: Sequence[float] | Array) -> GammaGamma:
    """Maximum likelihood Gamma-Gamma parameters on the customers with repeat purchases (x > 0, m > 0)."""
    xa_all, ma_all = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    keep = (xa_all > 0) & (ma_all > 0)
    xa, ma = xa_all[keep], ma_all[keep]
    if len(xa) < 2:
        raise KpilotError("Gamma-Gamma needs at least two customers with repeat purchases")

    def nll(params: Array) -> float:
        with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
            p, q, g = np.exp(params)
            ll = (
                gammaln(p * xa + q) - gammaln(p * xa) - gammaln(q) + q * np.log(g)
                + (p * xa - 1) * np.log(ma) + p * xa * np.log(xa) - (p * xa + q) * np.log(g + ma * xa)
            )  # fmt: skip
            total = -float(np.sum(ll))
        return total if np.isfinite(total) else _PENALTY

    res = minimize(
        nll,
        np.log([1.0, 1.0, 1.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 20000, "maxfev": 20000},
    )
    res = minimize(nll, res.x, method="L-BFGS-B")
    p, q, g = (float(v) for v in np.exp(res.x))
    return GammaGamma(p, q, g, -float(res.fun))


def rfm_sql(project_id: int, first: Any, last: Any, dialect: Any = None) -> str:
    """Per customer ``(customer_id, x, t_x_days, T_days, m)`` from paid invoices issued on ``first .. last``
    (whole days); ``T`` runs from the first purchase to ``last`` (the last observed day), as in the CDNOW
    summary the published fits use."""
    end = last + timedelta(days=1)
    from kpilot.compute.dialect import DIALECTS

    d = dialect or DIALECTS["duckdb"]

    def diff(a: str, b: str) -> str:
        return str(d.periods_between("day", a, b))

    from kpilot.compute.dialect import lit

    return (
        f"WITH d AS (SELECT customer_id, CAST(issued_at AS DATE) AS day, sum(CAST(amount AS DOUBLE)) AS v FROM invoices\n"
        f"  WHERE project_id = {project_id} AND status = 'paid' AND issued_at >= {lit(first)} AND issued_at < {lit(end)}\n"
        f"  GROUP BY 1, 2),\n"
        f"r AS (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY day) AS k FROM d)\n"
        f"SELECT customer_id, count(*) - 1, {diff('min(day)', 'max(day)')}, {diff('min(day)', lit(last))},\n"
        f"  coalesce(avg(CASE WHEN k > 1 THEN v END), 0)\n"
        f"FROM r GROUP BY customer_id ORDER BY customer_id"
    )


def run_predicted(engine: Any, ctx: Any, spec: Any) -> dict[str, Any]:
    """Fit both models on the paid invoices of the query range and predict over ``settings.horizon_days``."""
    if spec.breakdown is not None:
        from kpilot.errors import SpecError

        raise SpecError("predicted_clv has no breakdown", field="breakdown")
    rows = engine.fetchall(rfm_sql(ctx.project_id, spec.first_day, spec.last_day, ctx.dialect))
    if len(rows) < 3:
        raise KpilotError("predicted_clv needs paid invoices of at least 3 customers in the range")
    ids = [str(r[0]) for r in rows]

    def days(v: Any) -> float:
        return float(v.days) if hasattr(v, "days") else float(v)

    x = np.array([float(r[1]) for r in rows])
    t_x = np.array([days(r[2]) / 7 for r in rows])
    T = np.array([days(r[3]) / 7 for r in rows])
    m = np.array([float(r[4]) for r in rows])
    bg = fit_bgnbd(x, t_x, T)
    gg = fit_gamma_gamma(x, m)
    horizon = spec.settings.horizon_days / 7
    purchases = bg.expected_purchases(horizon, x, t_x, T)
    alive = bg.p_alive(x, t_x, T)
    value = gg.expected_value(x, m)
    clv = purchases * value
    order = sorted(range(len(ids)), key=lambda i: (-clv[i], ids[i]))
    customers = [
        {
            "customer_id": ids[i],
            "frequency": int(x[i]),
            "recency_weeks": float(t_x[i]),
            "age_weeks": float(T[i]),
            "p_alive": float(alive[i]),
            "expected_purchases": float(purchases[i]),
            "expected_value": float(value[i]),
            "predicted_clv": float(clv[i]),
        }
        for i in order[:100]
    ]
    return {
        "measure": "predicted_clv",
        "currency": spec.settings.currency,
        "horizon_days": spec.settings.horizon_days,
        "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b, "log_likelihood": bg.log_likelihood},
        "gamma_gamma": {"p": gg.p, "q": gg.q, "gamma": gg.gamma, "log_likelihood": gg.log_likelihood},
        "total": {
            "customers": len(ids),
            "expected_purchases": float(np.sum(purchases)),
            "predicted_clv": float(np.sum(clv)) if math.isfinite(float(np.sum(clv))) else None,
        },
        "customers": customers,
    }
