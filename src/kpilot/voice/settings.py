"""Conventions of customer-voice measures, as settings with documented defaults (docs/customer_voice.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RequestStatus", "VoiceMeasure", "VoiceSettings"]

RequestStatus = Literal["new", "planned", "in_progress", "shipped", "declined"]
_OPEN_STATUSES: tuple[RequestStatus, ...] = ("new", "planned", "in_progress")


class VoiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: float = Field(
        default=0.95, gt=0, lt=1, description="confidence level of the NPS margin of error"
    )
    moe_method: Literal["wald", "adjusted_wald"] = Field(
        default="wald",
        description="NPS margin of error: trinomial Wald, or adjusted-Wald (n + 3, 3/4 added to promoters "
        "and to detractors)",
    )
    csat_satisfied_min: int = Field(
        default=4, ge=1, le=5, description="CSAT: answers >= this count as satisfied"
    )
    ces_agree_min: int = Field(default=5, ge=1, le=7, description="CES agree rate: answers >= this agree")
    feedback_kind: Literal["all", "feedback", "feature_request"] = "all"
    escalation_min_level: int = Field(
        default=1, ge=1, description="a ticket is escalated at this level or above"
    )
    time_unit: Literal["seconds", "minutes", "hours", "days"] = "hours"
    top: int = Field(default=10, ge=1, le=1000, description="feature requests: how many to list")
    rank_by: Literal["votes", "mrr"] = Field(
        default="votes", description="feature requests: votes or requesters' MRR"
    )
    statuses: list[RequestStatus] = Field(
        default_factory=lambda: list(_OPEN_STATUSES),
        description="feature requests: statuses listed",
    )


VoiceMeasure = Literal[
    "responses",
    "nps",
    "csat",
    "csat_mean",
    "ces",
    "ces_agree_rate",
    "feedback_volume",
    "sentiment_score",
    "sentiment_mean",
    "tickets",
    "escalation_rate",
    "first_response_time",
    "resolution_time",
    "feature_requests",
]
