"""Customer voice: NPS with margins of error, CSAT, CES, sentiment, support times and feature requests."""

from __future__ import annotations

import math

import pytest

from kpilot.errors import KpilotError
from kpilot.voice.feature_requests import merge_request, set_status
from kpilot.voice.metrics import nps_stats, sentiment_score
from kpilot.voice.sentiment import label_for, score
from tests.conftest import Env
from tests.revenue_helpers import import_rows, series, sub, voice

MARCH = ("2024-03-01", "2024-03-31")


def _responses(
    metric: str, scores: list[int], survey: str = "s", day: str = "2024-03-05"
) -> list[dict[str, object]]:
    return [
        {"response_id": f"{survey}-{metric}-{i}", "survey": survey, "metric": metric, "score": v,
         "distinct_id": f"u{i}", "responded_at": f"{day}T12:00:00Z"}
        for i, v in enumerate(scores)
    ]  # fmt: skip


def test_nps_margin_of_error_by_hand() -> None:
    # 5 promoters, 3 passives, 2 detractors: NPS = 50% - 20% = 30
    # variance = 0.5 + 0.2 - 0.3^2 = 0.61; SE = sqrt(0.61 / 10) = 0.246982; MoE = 1.959964 x SE x 100 = 48.407
    s = nps_stats(5, 3, 2)
    assert s["nps"] == pytest.approx(30.0)
    assert s["margin_of_error"] == pytest.approx(1.959964 * math.sqrt(0.061) * 100, rel=1e-6)
    assert s["margin_of_error"] == pytest.approx(48.407, abs=1e-3)
    assert (s["lower"], s["upper"]) == (pytest.approx(30 - 48.407, abs=1e-3), pytest.approx(78.407, abs=1e-3))
    # adjusted Wald: n = 13, P = 5.75, D = 2.75 -> pP = 0.442308, pD = 0.211538, centre 23.077;
    # variance = 0.653846 - 0.230769^2 = 0.600592; SE = sqrt(0.600592 / 13) = 0.214941; MoE = 42.128
    a = nps_stats(5, 3, 2, method="adjusted_wald")
    assert a["nps"] == pytest.approx(30.0)  # the point estimate stays the raw score
    assert a["margin_of_error"] == pytest.approx(42.128, abs=1e-3)
    assert a["lower"] == pytest.approx(23.077 - 42.128, abs=1e-3)
    # 90% confidence: z = 1.644854
    assert nps_stats(5, 3, 2, confidence=0.9)["margin_of_error"] == pytest.approx(
        1.644854 * math.sqrt(0.061) * 100, rel=1e-6
    )
    assert nps_stats(0, 0, 0)["nps"] is None
    # all promoters: variance 0, the interval collapses (Wald) but not with adjusted Wald
    assert nps_stats(4, 0, 0)["margin_of_error"] == 0.0
    assert nps_stats(4, 0, 0, method="adjusted_wald")["margin_of_error"] > 0


def test_nps_query_per_period_with_total_and_breakdown(env: Env) -> None:
    import_rows(env, "surveys", _responses("nps", [9, 10, 9, 10, 9, 7, 8, 7, 3, 6]))
    import_rows(env, "surveys", _responses("nps", [0, 10], survey="onboarding", day="2024-04-02"))
    r = voice(env, "nps", "2024-03-01", "2024-04-30")
    march, april = r["series"]
    assert (march["value"], march["responses"]) == (30.0, 10)
    assert march["margin_of_error"] == pytest.approx(48.407, abs=1e-3)
    assert (april["value"], april["responses"]) == (0.0, 2)
    # total over the range: 6 promoters, 3 passives, 3 detractors of 12 -> 25
    assert r["total"]["value"] == pytest.approx(25.0)
    only = voice(env, "nps", "2024-03-01", "2024-04-30", survey="onboarding")
    assert only["total"]["responses"] == 2
    by_survey = voice(env, "nps", "2024-03-01", "2024-04-30", breakdown={"key": "survey"})
    values = {g["breakdown_value"]: g["total"]["value"] for g in by_survey["results"]}
    assert values == {"s": 30.0, "onboarding": 0.0}
    assert voice(env, "responses", *MARCH)["total"]["value"] == 10


def test_csat_and_ces(env: Env) -> None:
    import_rows(env, "surveys", _responses("csat", [5, 4, 3, 2, 5]) + _responses("ces", [7, 5, 3, 6]))
    # CSAT: 3 of 5 answers are 4 or 5 = 60%; mean (5 + 4 + 3 + 2 + 5) / 5 = 3.8
    assert series(voice(env, "csat", *MARCH)) == [60.0]
    assert series(voice(env, "csat_mean", *MARCH)) == [pytest.approx(3.8)]
    assert series(voice(env, "csat", *MARCH, settings={"csat_satisfied_min": 5})) == [40.0]
    # CES: mean (7 + 5 + 3 + 6) / 4 = 5.25; agree (>= 5) 3 of 4 = 75%
    assert series(voice(env, "ces", *MARCH)) == [5.25]
    assert series(voice(env, "ces_agree_rate", *MARCH)) == [75.0]


def test_vader_labels_and_sentiment_score(env: Env) -> None:
    assert label_for(0.05) == "positive" and label_for(-0.05) == "negative" and label_for(0.049) == "neutral"
    assert score("I love this app, it is great")[1] == "positive"
    assert score("This is terrible and broken")[1] == "negative"
    assert score("The export button is on the left")[1] == "neutral"
    assert score("") == (0.0, "neutral")
    # CSS = %positive - %negative: 2 positive, 1 neutral, 1 negative -> 50% - 25% = 25
    assert sentiment_score(2, 1, 1) == 25.0
    import_rows(env, "feedback", [
        {"item_id": "f1", "text": "I love this app, it is great", "created_at": "2024-03-02T10:00:00Z"},
        {"item_id": "f2", "text": "Wonderful support, thank you", "created_at": "2024-03-03T10:00:00Z"},
        {"item_id": "f3", "text": "The export button is on the left", "created_at": "2024-03-04T10:00:00Z"},
        {"item_id": "f4", "text": "This is terrible and broken", "created_at": "2024-03-05T10:00:00Z"},
    ])  # fmt: skip
    r = voice(env, "sentiment_score", *MARCH)
    assert r["series"][0]["value"] == 25.0
    assert (r["series"][0]["positive"], r["series"][0]["negative"]) == (2, 1)
    assert series(voice(env, "feedback_volume", *MARCH)) == [4]


def test_support_escalation_and_times(env: Env) -> None:
    import_rows(env, "tickets", [
        {"ticket_id": "t1", "created_at": "2024-03-01T10:00:00Z", "first_response_at": "2024-03-01T11:00:00Z",
         "resolved_at": "2024-03-01T20:00:00Z", "escalated": True},
        {"ticket_id": "t2", "created_at": "2024-03-02T10:00:00Z", "first_response_at": "2024-03-02T12:00:00Z",
         "resolved_at": "2024-03-03T06:00:00Z"},
        {"ticket_id": "t3", "created_at": "2024-03-03T10:00:00Z", "first_response_at": "2024-03-03T14:00:00Z"},
        {"ticket_id": "t4", "created_at": "2024-03-04T10:00:00Z", "escalation_level": 0},
    ])  # fmt: skip
    # escalated 1 of 4 tickets = 25%
    assert series(voice(env, "escalation_rate", *MARCH)) == [25.0]
    # first response 1 h, 2 h, 4 h: median 2 h; p90 (interpolated) = 2 + 0.8 x (4 - 2) = 3.6 h
    fr = voice(env, "first_response_time", *MARCH)["series"][0]
    assert (fr["value"], fr["p90"], fr["with_time"], fr["tickets"]) == (2.0, pytest.approx(3.6), 3, 4)
    # resolution 10 h and 20 h: median 15 h
    assert series(voice(env, "resolution_time", *MARCH)) == [15.0]
    assert series(voice(env, "resolution_time", *MARCH, settings={"time_unit": "minutes"})) == [900.0]


def test_feature_requests_merge_moves_votes_and_ranks_by_requesters_mrr(env: Env) -> None:
    import_rows(env, "subscriptions", [sub("a", "c1", "2024-01-01", amount=100), sub("b", "c2", "2024-01-01", amount=50),
                                        sub("d", "c4", "2024-01-01", amount=20)])  # fmt: skip
    import_rows(env, "feedback", [
        {"item_id": "r1", "kind": "feature_request", "title": "Dark mode", "text": "please add dark mode", "votes": 5,
         "voters": "c1;c2", "created_at": "2024-03-01T10:00:00Z"},
        {"item_id": "r2", "kind": "feature_request", "title": "Night theme", "text": "a dark theme", "votes": 3,
         "voters": ["c2", "c3"], "created_at": "2024-03-02T10:00:00Z"},
        {"item_id": "r3", "kind": "feature_request", "title": "CSV export", "text": "export to csv", "votes": 6,
         "customer_id": "c4", "created_at": "2024-03-03T10:00:00Z"},
    ])  # fmt: skip
    before = voice(env, "feature_requests", *MARCH)
    assert [(r["item_id"], r["votes"]) for r in before["requests"]] == [("r3", 6), ("r1", 5), ("r2", 3)]
    merge_request(env.ws, env.project, "r2", "r1")
    after = voice(env, "feature_requests", *MARCH)
    # r1 + r2: 5 + 3 = 8 votes; requesters c1, c2, c3 (c2 once); their MRR 100 + 50 + 0 = 150
    assert after["requests"][0] == {
        "item_id": "r1", "title": "Dark mode", "status": "new", "votes": 8, "requesters": 3,
        "requesters_mrr": 150.0, "merged": ["r2"],
    }  # fmt: skip
    assert [r["item_id"] for r in after["requests"]] == ["r1", "r3"]
    by_mrr = voice(env, "feature_requests", *MARCH, settings={"rank_by": "mrr"})
    assert [(r["item_id"], r["requesters_mrr"]) for r in by_mrr["requests"]] == [("r1", 150.0), ("r3", 20.0)]
    # a re-import of the feedback file keeps the merge
    import_rows(env, "feedback", [{"item_id": "r2", "kind": "feature_request", "text": "a dark theme", "votes": 3,
                                   "created_at": "2024-03-02T10:00:00Z"}])  # fmt: skip
    assert voice(env, "feature_requests", *MARCH)["requests"][0]["votes"] == 8
    with pytest.raises(KpilotError, match="already merged"):
        merge_request(env.ws, env.project, "r1", "r2")
    set_status(env.ws, env.project, "r3", "shipped")
    shipped = voice(env, "feature_requests", *MARCH)
    assert [r["item_id"] for r in shipped["requests"]] == ["r1"]
    assert shipped["by_status"] == {"new": 1, "shipped": 1}
    with pytest.raises(ValueError, match="not one of"):
        set_status(env.ws, env.project, "r3", "someday")
