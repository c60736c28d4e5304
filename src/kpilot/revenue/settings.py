"""The contested conventions of revenue metrics, as settings with documented defaults (docs/revenue.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["RevenueMeasure", "RevenueSettings"]

SpendCategory = Literal["marketing", "sales"]
_ALL_CATEGORIES: tuple[SpendCategory, ...] = ("marketing", "sales")


class RevenueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", description="reporting currency (ISO 4217)")
    discounts: Literal["all", "forever_only", "none"] = Field(
        default="all",
        description="which discounts reduce MRR: all (forever ones, and time-limited ones while they run), "
        "only forever ones (Stripe's older rule), or none",
    )
    past_due_grace_days: int | None = Field(
        default=None,
        ge=0,
        description="a past-due subscription stops counting this many days after it became past due; "
        "None: it counts until it ends (is canceled)",
    )
    churn_recognition: Literal["period_end", "cancellation"] = Field(
        default="period_end",
        description="churn at the end of the paid period (end_date) or on the day it was canceled",
    )
    gross_margin: float = Field(default=1.0, gt=0, le=1, description="for LTV and CAC payback")
    profit_margin: float = Field(default=1.0, gt=0, le=1, description="CLTV = LTV x profit margin")
    ltv_churn_periods: int = Field(
        default=6,
        ge=1,
        le=60,
        description="LTV divides by the customer churn rate averaged over this many periods",
    )
    quick_ratio_reactivation: bool = Field(
        default=False, description="count reactivation MRR with new and expansion in the quick ratio"
    )
    retention_basis: Literal["movements", "cohort"] = Field(
        default="movements",
        description="NRR/GRR from the period's movements, or from the start-of-period customers' MRR at the end",
    )
    lifespan_years: float = Field(
        default=3.0, gt=0, description="customer lifespan of the transactional CLTV"
    )
    active_event: str | None = Field(
        default=None, description="ARPU: users = persons doing this event (None: any)"
    )
    visitor_event: str | None = Field(default="$pageview", description="conversion rate denominator event")
    conversion_event: str | None = Field(default=None, description="conversion event (CPA, conversion rate)")
    conversion_window_days: int = Field(
        default=14, ge=1, le=365, description="conversion rate: conversion within this many days of the visit"
    )
    spend_categories: list[SpendCategory] = Field(
        default_factory=lambda: list(_ALL_CATEGORIES), description="spend counted in CAC"
    )
    horizon_days: int = Field(default=365, ge=1, le=3650, description="predictive CLV horizon")

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not (len(value) == 3 and value.isalpha()):
            raise ValueError(f"currency {value!r} is not a 3-letter ISO 4217 code")
        return value.upper()


RevenueMeasure = Literal[
    "mrr",
    "arr",
    "customers",
    "arpa",
    "arpu",
    "movements",
    "new_mrr",
    "expansion_mrr",
    "contraction_mrr",
    "churned_mrr",
    "reactivation_mrr",
    "net_new_mrr",
    "new_customers",
    "churned_customers",
    "reactivated_customers",
    "customer_churn_rate",
    "gross_mrr_churn_rate",
    "net_mrr_churn_rate",
    "nrr",
    "grr",
    "quick_ratio",
    "ltv",
    "revenue",
    "cltv",
    "spend",
    "cac",
    "cpa",
    "cac_payback_months",
    "ltv_cac",
    "conversions",
    "conversion_rate",
    "predicted_clv",
]
