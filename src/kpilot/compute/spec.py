"""The JSON query language: one pydantic model per query ``kind``.

Every spec has ``kind``, ``date_from``/``date_to`` (inclusive dates, in the query timezone), optional
property ``filters`` and an optional ``breakdown``. Errors name the field and what was expected.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kpilot.errors import SpecError
from kpilot.revenue.settings import RevenueMeasure, RevenueSettings
from kpilot.voice.settings import VoiceMeasure, VoiceSettings

__all__ = [
    "Breakdown",
    "Exclusion",
    "FeatureAdoptionSpec",
    "FunnelSpec",
    "FunnelStep",
    "PropertyFilter",
    "QuerySpec",
    "RetentionSpec",
    "RevenueSpec",
    "SessionsSpec",
    "StickinessSpec",
    "TimeToValueSpec",
    "TrendsSpec",
    "VoiceSpec",
    "Window",
    "parse_spec",
]

Interval = Literal["hour", "day", "week", "month"]
Operator = Literal[
    "exact", "is_not", "icontains", "not_icontains", "gt", "gte", "lt", "lte", "is_set", "is_not_set"
]
Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PropertyFilter(_Model):
    key: str = Field(min_length=1)
    type: Literal["event", "person"] = "event"
    operator: Operator = "exact"
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _value_needed(self) -> PropertyFilter:
        if self.operator not in ("is_set", "is_not_set") and self.value is None:
            raise ValueError(f"operator {self.operator!r} needs a value")
        if self.operator in ("gt", "gte", "lt", "lte") and not isinstance(self.value, int | float):
            raise ValueError(f"operator {self.operator!r} needs a number")
        if isinstance(self.value, list) and self.operator not in ("exact", "is_not"):
            raise ValueError(f"operator {self.operator!r} does not take a list")
        return self


class Breakdown(_Model):
    key: str = Field(min_length=1)
    type: Literal["event", "person"] = "event"
    limit: int = Field(default=10, ge=1, le=100)


WindowUnit = Literal["second", "minute", "hour", "day", "week", "month"]
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800, "month": 2592000}


class Window(_Model):
    value: int = Field(default=14, ge=1)
    unit: WindowUnit = "day"

    @property
    def seconds(self) -> int:
        """Length in seconds; a month counts 30 days."""
        return self.value * _UNIT_SECONDS[self.unit]


class _Base(_Model):
    date_from: date | datetime
    date_to: date | datetime
    timezone: str | None = None
    filters: list[PropertyFilter] = Field(default_factory=list)
    breakdown: Breakdown | None = None

    @model_validator(mode="after")
    def _range(self) -> _Base:
        if _as_date(self.date_to) < _as_date(self.date_from):
            raise ValueError("date_to is before date_from")
        return self

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}, expected an IANA name") from exc
        return value

    @property
    def first_day(self) -> date:
        return _as_date(self.date_from)

    @property
    def last_day(self) -> date:
        return _as_date(self.date_to)

    def local_bounds(self) -> tuple[datetime, datetime]:
        """[start, end) in local wall-clock time: whole days unless datetimes were given."""
        start = (
            self.date_from
            if isinstance(self.date_from, datetime)
            else datetime.combine(self.date_from, datetime.min.time())
        )
        if isinstance(self.date_to, datetime):
            end = self.date_to
        else:
            end = datetime.combine(self.date_to + timedelta(days=1), datetime.min.time())
        return start.replace(tzinfo=None), end.replace(tzinfo=None)


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


class TrendsSpec(_Base):
    kind: Literal["trends"]
    event: str | None = None
    math: Literal["total", "dau", "wau", "mau", "unique", "dau_mau_ratio"] = "total"
    interval: Interval = "day"
    compare: bool = False

    @model_validator(mode="after")
    def _math_interval(self) -> TrendsSpec:
        if self.math in ("wau", "mau") and self.interval == "hour":
            raise ValueError(f"math {self.math!r} needs interval day, week or month")
        if self.math == "dau_mau_ratio" and self.interval != "day":
            raise ValueError("math 'dau_mau_ratio' needs interval 'day'")
        return self


class StickinessSpec(_Base):
    kind: Literal["stickiness"]
    event: str | None = None
    interval: Literal["day", "week", "month"] = "day"
    cumulative: bool = False
    min_events: int = Field(default=1, ge=1, description="events needed in an interval for it to count")


class RetentionSpec(_Base):
    kind: Literal["retention"]
    start_event: str | None = "$pageview"
    return_event: str | None = "$pageview"
    period: Interval = "day"
    intervals: int = Field(default=7, ge=1, le=400)
    retention_type: Literal["recurring", "first_time"] = "recurring"
    cumulative: bool = False
    week_start: Literal["monday", "sunday"] | None = None


class FunnelStep(_Model):
    """One funnel step: an event name (``None`` = any event) and property filters for that step only."""

    event: str | None = Field(min_length=1)
    filters: list[PropertyFilter] = Field(default_factory=list)

    def definition_key(self) -> tuple[str | None, tuple[str, ...]]:
        """Two steps with equal keys match exactly the same events (filter order does not matter)."""
        return self.event, tuple(sorted(f.model_dump_json() for f in self.filters))


class Exclusion(_Model):
    """Doing ``event`` after step ``from_step`` and before step ``to_step`` removes the person from the funnel."""

    event: str = Field(min_length=1)
    from_step: int = Field(default=0, ge=0)
    to_step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _order(self) -> Exclusion:
        if self.to_step <= self.from_step:
            raise ValueError("to_step must be after from_step")
        return self


class FunnelSpec(_Base):
    kind: Literal["funnel"]
    steps: list[FunnelStep] = Field(min_length=2, max_length=20)
    order: Literal["ordered", "strict", "unordered"] = "ordered"
    window: Window = Field(default_factory=Window)
    exclusions: list[Exclusion] = Field(default_factory=list)

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"event": s} if s is None or isinstance(s, str) else s for s in value]
        return value

    @field_validator("exclusions")
    @classmethod
    def _exclusion_steps(cls, value: list[Exclusion], info: ValidationInfo) -> list[Exclusion]:
        steps = info.data.get("steps")
        if value and info.data.get("order") == "unordered":
            raise ValueError("exclusions are not supported with order 'unordered'")
        if steps is not None:
            for i, ex in enumerate(value):
                if ex.to_step >= len(steps):
                    raise ValueError(
                        f"exclusions[{i}].to_step {ex.to_step} is past the last step {len(steps) - 1}"
                    )
        return value


class SessionsSpec(_Base):
    """Sessions split after ``inactivity_minutes`` without events or ``max_hours`` after their start."""

    kind: Literal["sessions"]
    interval: Literal["day", "week", "month"] = "day"
    inactivity_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    max_hours: int = Field(default=24, ge=1, le=24 * 31)
    engaged_seconds: int = Field(default=10, ge=0)
    key_events: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    pageview_events: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["$pageview", "$screen"]
    )


class FeatureAdoptionSpec(_Base):
    """Share of active persons (``active_event``, any event when null) who did ``event``, per interval."""

    kind: Literal["feature_adoption"]
    event: str = Field(min_length=1)
    active_event: str | None = Field(default=None, min_length=1)
    interval: Literal["day", "week", "month"] = "week"


class TimeToValueSpec(_Base):
    """Time from a person's first ``signup_event`` to their first ``value_event``, by signup cohort."""

    kind: Literal["time_to_value"]
    signup_event: str = Field(min_length=1)
    value_event: str = Field(min_length=1)
    cohort_interval: Literal["day", "week", "month"] = "week"
    window: Window = Field(default_factory=lambda: Window(value=7, unit="day"))

    @model_validator(mode="after")
    def _distinct_events(self) -> TimeToValueSpec:
        if self.value_event == self.signup_event:
            raise ValueError(
                "value_event must differ from signup_event (every person would reach value at 0 s)"
            )
        return self


class RevenueSpec(_Base):
    """Revenue, SaaS and acquisition measures from billing, spend and event data (docs/revenue.md)."""

    kind: Literal["revenue"]
    measure: RevenueMeasure = "mrr"
    interval: Literal["day", "week", "month"] = "month"
    settings: RevenueSettings = Field(default_factory=RevenueSettings)


class VoiceSpec(_Base):
    """Customer-voice measures: surveys, feedback, feature requests, support (docs/customer_voice.md)."""

    kind: Literal["voice"]
    measure: VoiceMeasure = "nps"
    interval: Literal["day", "week", "month"] = "month"
    survey: str | None = Field(default=None, min_length=1, description="only responses to this survey")
    settings: VoiceSettings = Field(default_factory=VoiceSettings)


QuerySpec = Annotated[
    TrendsSpec
    | StickinessSpec
    | RetentionSpec
    | FunnelSpec
    | SessionsSpec
    | FeatureAdoptionSpec
    | TimeToValueSpec
    | RevenueSpec
    | VoiceSpec,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[QuerySpec] = TypeAdapter(QuerySpec)
KINDS = (
    "trends",
    "stickiness",
    "retention",
    "funnel",
    "sessions",
    "feature_adoption",
    "time_to_value",
    "revenue",
    "voice",
)


def parse_spec(data: Any) -> QuerySpec:
    """Validate ``data`` (a dict or JSON text) into a spec; raises :class:`SpecError` naming the field."""
    if isinstance(data, str | bytes):
        import orjson

        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SpecError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"a query spec must be a JSON object, got {type(data).__name__}")
    if "kind" not in data:
        raise SpecError(f"missing; expected one of {', '.join(KINDS)}", field="kind")
    if data["kind"] not in KINDS:
        raise SpecError(
            f"{data['kind']!r} is not a query kind; expected one of {', '.join(KINDS)}", field="kind"
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if p != data["kind"]]
        field = ".".join(loc) or None
        msg = err["msg"].removeprefix("Value error, ")
        if len(exc.errors()) > 1:
            msg += f" (and {len(exc.errors()) - 1} more problem(s))"
        raise SpecError(msg, field=field) from exc
