"""The demo's population: who arrives when, from where, who signs up, activates, reaches value and churns.

Every person is one entry of the arrays of :class:`DemoPersons`. Times are seconds since the start of
the first demo day (UTC), ``nan`` when it never happens inside the demo window. The life cycle:

1. **Arrival** on a day drawn with a growth trend (later days get up to 60% more arrivals) and weekly
   seasonality (Saturdays and Sundays about half a weekday), at a working-hours-heavy time of day, from an
   acquisition channel (``utm_source``; ``direct`` visitors carry none) and a country.
2. **Signup** with a probability that depends on the channel (about 45% overall): 70% sign up in their
   first session, minutes after arriving, the rest on a later visit (exponential delay, mean 2 days).
   Signup picks a plan (free / pro / team).
3. **Activation** (``project_created``): about 70% of signups (more on paid plans), half of them in the
   signup session, the others after an exponential delay (mean 1.5 days).
4. **Value** (``report_shared``): about 60% of activated persons, an exponential delay after activation
   (mean 2 days).
5. **Churn**: a person stays active for an exponential lifetime after their last milestone: mean 4 days
   without activation, 25 days activated, 75 days after reaching value. Visitors who never sign up
   churn after their last anonymous visit.

Milestones that would fall after the window are dropped (``nan``), so every recorded milestone is inside
the window and in funnel order: signup < activation < value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import numpy.typing as npt

__all__ = ["CHANNELS", "COUNTRIES", "PLANS", "DemoPersons", "build_persons", "weekday_factor"]

DAY = 86_400.0

CHANNELS = ("google", "direct", "newsletter", "twitter", "linkedin", "partner", "producthunt")
_CHANNEL_P = (0.32, 0.24, 0.10, 0.10, 0.08, 0.08, 0.08)
_SIGNUP_P = (0.42, 0.50, 0.60, 0.30, 0.42, 0.55, 0.35)
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "CA", "JP", "NL", "ES")
_COUNTRY_P = (0.35, 0.10, 0.10, 0.08, 0.10, 0.07, 0.06, 0.05, 0.05, 0.04)
PLANS = ("free", "pro", "team")
_PLAN_P = (0.70, 0.22, 0.08)
_ACTIVATE_P = (0.64, 0.80, 0.86)
BROWSERS = ("Chrome", "Safari", "Firefox", "Edge")
_BROWSER_P = (0.62, 0.22, 0.09, 0.07)
OSES = ("Mac OS X", "Windows", "Linux", "iOS", "Android")
_OS_P = (0.38, 0.36, 0.08, 0.10, 0.08)

# share of the day's activity per UTC hour: quiet nights, busy working hours
HOUR_WEIGHTS = np.array(
    [1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 11, 11, 10, 10, 11, 11, 10, 8, 6, 5, 4, 3, 2, 1], dtype=float
)
HOUR_WEIGHTS /= HOUR_WEIGHTS.sum()

FloatArray = npt.NDArray[np.float64]
StrArray = npt.NDArray[np.str_]
BoolArray = npt.NDArray[np.bool_]


def weekday_factor(days: list[date]) -> FloatArray:
    """Relative activity per day: 1.0 on weekdays, 0.55 on Saturdays, 0.5 on Sundays."""
    return np.array([{5: 0.55, 6: 0.5}.get(d.weekday(), 1.0) for d in days])


@dataclass(slots=True)
class DemoPersons:
    """One entry per person. Times are seconds since :attr:`start` (UTC), ``nan`` = never in the window."""

    start: datetime
    end: datetime
    anon_id: StrArray
    user_id: StrArray
    """``""`` for persons who never sign up."""
    channel: StrArray
    country: StrArray
    plan: StrArray
    """``""`` for persons who never sign up."""
    browser: StrArray
    os: StrArray
    arrival_s: FloatArray
    signup_s: FloatArray
    activated_s: FloatArray
    value_s: FloatArray
    churn_s: FloatArray
    """When the person stops being active (may lie after the window: still active at the end)."""
    engagement: FloatArray
    """0..1: how often the person is active on a day while not churned."""
    export_adopter: BoolArray

    @property
    def n(self) -> int:
        return len(self.anon_id)

    @property
    def signed_up(self) -> BoolArray:
        return ~np.isnan(self.signup_s)

    def to_datetime(self, seconds: FloatArray) -> npt.NDArray[np.datetime64]:
        """Seconds since :attr:`start` to ``datetime64[us]`` (``NaT`` for ``nan``)."""
        out = np.full(len(seconds), np.datetime64("NaT"), dtype="datetime64[us]")
        ok = ~np.isnan(seconds)
        out[ok] = np.datetime64(self.start, "us") + (seconds[ok] * 1e6).astype("timedelta64[us]")
        return out


def build_persons(rng: np.random.Generator, n: int, days: list[date]) -> DemoPersons:
    """Draw ``n`` persons over ``days`` (deterministic for a given ``rng`` state)."""
    n_days = len(days)
    start = datetime.combine(days[0], datetime.min.time())
    end = start + timedelta(days=n_days)
    horizon = n_days * DAY
    trend = 1.0 + 0.6 * np.arange(n_days) / max(n_days - 1, 1)
    weights = trend * weekday_factor(days)
    arrival_day = rng.choice(n_days, size=n, p=weights / weights.sum())
    arrival = arrival_day * DAY + time_of_day(rng, n)

    channel_i = rng.choice(len(CHANNELS), size=n, p=_CHANNEL_P)
    signs = rng.random(n) < np.asarray(_SIGNUP_P)[channel_i]
    same_session = rng.random(n) < 0.7
    delay = np.where(same_session, rng.uniform(60, 1200, n), rng.exponential(2 * DAY, n) + 3600)
    signup = np.where(signs, arrival + delay, np.nan)
    signup[signup >= horizon] = np.nan
    plan_i = rng.choice(len(PLANS), size=n, p=_PLAN_P)
    has_signup = ~np.isnan(signup)

    activates = has_signup & (rng.random(n) < np.asarray(_ACTIVATE_P)[plan_i])
    act_delay = np.where(rng.random(n) < 0.5, rng.uniform(120, 900, n), rng.exponential(1.5 * DAY, n) + 1800)
    activated = np.where(activates, signup + act_delay, np.nan)
    activated[activated >= horizon] = np.nan

    reaches = ~np.isnan(activated) & (rng.random(n) < 0.6)
    value = np.where(reaches, activated + rng.exponential(2 * DAY, n) + 600, np.nan)
    value[value >= horizon] = np.nan

    last_milestone = np.fmax(np.fmax(signup, activated), value)  # fmax skips nan
    mean_life = np.where(~np.isnan(value), 75.0, np.where(~np.isnan(activated), 25.0, 4.0)) * DAY
    churn = np.where(has_signup, last_milestone + rng.exponential(mean_life), arrival)

    engagement = rng.beta(2.0, 3.0, n)
    engagement = np.where(~np.isnan(activated), 0.25 + 0.7 * engagement, 0.1 + 0.4 * engagement)
    paid = plan_i > 0
    export_adopter = has_signup & (rng.random(n) < np.where(paid, 0.45, 0.2))

    ids = np.arange(1, n + 1)
    anon_id = np.array([f"anon-{i:06d}-{h:08x}" for i, h in zip(ids, rng.integers(0, 2**32, n), strict=True)])
    user_id = np.where(has_signup, np.char.add("user-", ids.astype(str)), "")
    return DemoPersons(
        start=start,
        end=end,
        anon_id=anon_id,
        user_id=user_id.astype(str),
        channel=np.asarray(CHANNELS)[channel_i],
        country=np.asarray(COUNTRIES)[rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_P)],
        plan=np.where(has_signup, np.asarray(PLANS)[plan_i], ""),
        browser=np.asarray(BROWSERS)[rng.choice(len(BROWSERS), size=n, p=_BROWSER_P)],
        os=np.asarray(OSES)[rng.choice(len(OSES), size=n, p=_OS_P)],
        arrival_s=arrival,
        signup_s=signup,
        activated_s=activated,
        value_s=value,
        churn_s=churn,
        engagement=engagement,
        export_adopter=export_adopter,
    )


def time_of_day(rng: np.random.Generator, n: int) -> FloatArray:
    """Seconds into the day, hours drawn from :data:`HOUR_WEIGHTS`, uniform within the hour."""
    hours = rng.choice(24, size=n, p=HOUR_WEIGHTS)
    return hours * 3600.0 + rng.uniform(0, 3600, n)
