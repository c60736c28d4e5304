"""Predictive CLV against the published CDNOW values (Fader, Hardie & Lee 2005).

The CDNOW files come from the ``lifetimes`` package (a dev dependency); they are read as plain files, the
package itself is never imported (it warns under pandas 3). Published: BG/NBD r = 0.243, alpha = 4.414,
a = 0.793, b = 2.426, log-likelihood -9582.4 (2,357 customers, 39-week calibration); Gamma-Gamma p = 6.25,
q = 3.74, gamma = 15.44 (946 repeat buyers).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kpilot.revenue.clv import BgNbd, GammaGamma, fit_bgnbd, fit_gamma_gamma
from tests.conftest import Env
from tests.revenue_helpers import import_rows


def _datasets() -> Path | None:
    spec = importlib.util.find_spec("lifetimes")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    return path if path.is_dir() else None


DATA = _datasets()
needs_cdnow = pytest.mark.skipif(DATA is None, reason="the lifetimes package (CDNOW data) is not installed")


def _csv(name: str) -> list[dict[str, str]]:
    assert DATA is not None
    with (DATA / name).open(newline="") as fh:
        return list(csv.DictReader(fh))


@needs_cdnow
def test_bgnbd_fit_reproduces_the_published_cdnow_parameters() -> None:
    rows = _csv("cdnow_customers_summary.csv")
    assert len(rows) == 2357
    bg = fit_bgnbd(
        [float(r["frequency"]) for r in rows],
        [float(r["recency"]) for r in rows],
        [float(r["T"]) for r in rows],
    )
    assert (round(bg.r, 3), round(bg.alpha, 3), round(bg.a, 3), round(bg.b, 3)) == (
        0.243,
        4.414,
        0.793,
        2.426,
    )
    assert round(bg.log_likelihood, 1) == -9582.4


@needs_cdnow
def test_gamma_gamma_fit_reproduces_the_published_cdnow_parameters() -> None:
    rows = _csv("cdnow_customers_summary_with_transactions.csv")
    x = [float(r["x"]) for r in rows]
    assert sum(1 for v in x if v > 0) == 946
    gg = fit_gamma_gamma(x, [float(r["zbar"]) for r in rows])
    assert (round(gg.p, 2), round(gg.q, 2)) == (6.25, 3.74)
    assert gg.gamma == pytest.approx(15.44, abs=0.01)


def test_conditional_expectations_by_hand() -> None:
    bg = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=0.0)
    x, t_x, T = np.array([0.0, 2.0]), np.array([0.0, 30.43]), np.array([38.86, 38.86])
    # a customer with no repeat purchase is alive with probability 1 (BG/NBD: dropout only after a purchase)
    alive = bg.p_alive(x, t_x, T)
    assert alive[0] == 1.0
    # x = 2: a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x) = 0.793/3.426 x (43.274/34.844)^2.243 = 0.3774; 1/1.3774
    assert alive[1] == pytest.approx(1 / (1 + 0.793 / 3.426 * (43.274 / 34.844) ** 2.243), rel=1e-9)
    # Fader & Hardie's worked example: x = 2, t_x = 30.43, T = 38.86 expects 1.226 purchases in 39 weeks
    assert bg.expected_purchases(39.0, x, t_x, T)[1] == pytest.approx(1.226, abs=0.001)
    gg = GammaGamma(p=6.25, q=3.74, gamma=15.44, log_likelihood=0.0)
    # no repeat: the population mean p x gamma / (q - 1) = 96.5 / 2.74 = 35.22
    # x = 2, m = 20: p (gamma + x m) / (p x + q - 1) = 6.25 x 55.44 / 15.24 = 22.736
    assert gg.expected_value(np.array([0.0, 2.0]), np.array([0.0, 20.0])) == pytest.approx(
        [96.5 / 2.74, 346.5 / 15.24]
    )


def _cdnow_invoices() -> list[dict[str, Any]]:
    assert DATA is not None
    out = []
    with (DATA / "CDNOW_sample.txt").open() as fh:
        for i, line in enumerate(fh):
            cust, _, day, _, amount = line.split()
            out.append({
                "invoice_id": f"t{i}", "customer_id": cust, "amount": amount,
                "issued_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00:00Z",
            })  # fmt: skip
    return out


@needs_cdnow
@pytest.mark.slow
def test_predicted_clv_query_on_cdnow_transactions(env: Env) -> None:
    report = import_rows(env, "invoices", _cdnow_invoices())
    assert report.rejected == 0
    # calibration: purchases on 1997-01-01 .. 1997-09-30; T of a Jan 1 buyer = 272 days = 38.86 weeks
    r = env.query(
        {"kind": "revenue", "measure": "predicted_clv", "date_from": "1997-01-01", "date_to": "1997-09-30"}
    )
    summary = _csv("cdnow_customers_summary.csv")
    assert r["total"]["customers"] == len(summary)
    bg = r["bgnbd"]
    assert (round(bg["r"], 3), round(bg["alpha"], 3), round(bg["a"], 3), round(bg["b"], 3)) == (
        0.243,
        4.414,
        0.793,
        2.426,
    )
    gg = r["gamma_gamma"]
    assert (round(gg["p"], 2), round(gg["q"], 2), round(gg["gamma"], 2)) == (6.25, 3.74, 15.44)
    top = r["customers"][0]
    assert top["predicted_clv"] == pytest.approx(top["expected_purchases"] * top["expected_value"])
    assert 0 <= top["p_alive"] <= 1
