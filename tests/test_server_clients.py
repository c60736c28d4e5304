"""The real tracking libraries from PyPI, unmodified, against the server on an ephemeral loopback port.

Each client sends track, identify, page and alias calls (gzip on and off); the test checks through the
query engine the exact events, their counts and the merged persons, and that the client saw no error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.server_helpers import ThreadServer, make_workspace, start_thread_server

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
DAY = {"date_from": "2024-03-01", "date_to": "2024-03-01"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ThreadServer, dict[str, str]]]:
    keys = make_workspace(tmp_path / "ws", ("alpha", "beta"))
    server = start_thread_server(tmp_path / "ws")
    yield server, keys
    server.stop()


def _events(server: ThreadServer, project: str) -> list[tuple[str, str]]:
    pid = server.ws.project(project).id
    return sorted(
        (r[0], r[1]) for r in server.sql("SELECT event, distinct_id FROM events WHERE project_id = ?", [pid])
    )


def _total(server: ThreadServer, project: str, event: str | None = None, math: str = "total") -> int:
    spec: dict[str, Any] = {"kind": "trends", **DAY, "math": math}
    if event:
        spec["event"] = event
    return int(server.query(project, spec)["series"][0]["value"])


def _person_of(server: ThreadServer, project: str, distinct_id: str) -> int:
    pid = server.ws.project(project).id
    rows = server.sql(
        "SELECT person_id FROM person_distinct_ids WHERE project_id = ? AND distinct_id = ?",
        [pid, distinct_id],
    )
    return int(rows[0][0])


def _person_props(server: ThreadServer, project: str, distinct_id: str) -> dict[str, str]:
    pid = server.ws.project(project).id
    person = _person_of(server, project, distinct_id)
    rows = server.sql(
        "SELECT key, value FROM person_properties WHERE project_id = ? AND person_id = ?", [pid, person]
    )
    return dict(rows)


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_python_client(served: tuple[ThreadServer, dict[str, str]], gzip: bool) -> None:
    from segment.analytics import Client

    server, keys = served
    errors: list[Any] = []
    client = Client(
        write_key=keys["alpha"],
        host=server.url,
        gzip=gzip,
        on_error=lambda exc, batch: errors.append(exc),
        upload_interval=0.05,
        max_retries=0,
    )
    client.track(user_id=None, anonymous_id="anon-1", event="Viewed Pricing", timestamp=T0)
    client.identify(user_id="u1", anonymous_id="anon-1", traits={"email": "u1@example.com"}, timestamp=T0)
    client.track(user_id="u1", event="Signed Up", properties={"plan": "pro"}, timestamp=T0)
    client.page(user_id="u1", name="Home", properties={"url": "https://x.test/"}, timestamp=T0)
    client.alias(previous_id="anon-2", user_id="u1", timestamp=T0)
    client.track(anonymous_id="anon-2", event="Viewed Pricing", timestamp=T0)
    client.track(user_id="u2", event="Signed Up", timestamp=T0)
    client.flush()
    client.shutdown()
    assert errors == []
    assert _events(server, "alpha") == [
        ("$create_alias", "u1"),
        ("$identify", "u1"),
        ("$pageview", "u1"),
        ("Signed Up", "u1"),
        ("Signed Up", "u2"),
        ("Viewed Pricing", "anon-1"),
        ("Viewed Pricing", "anon-2"),
    ]
    # anon-1 (identify) and anon-2 (alias) are u1: one person did everything but u2's sign-up.
    assert _person_of(server, "alpha", "anon-1") == _person_of(server, "alpha", "u1")
    assert _person_of(server, "alpha", "anon-2") == _person_of(server, "alpha", "u1")
    assert _total(server, "alpha", "Viewed Pricing") == 2
    assert _total(server, "alpha", "Viewed Pricing", "dau") == 1
    assert _total(server, "alpha", "Signed Up", "dau") == 2
    assert _total(server, "alpha", math="dau") == 2
    assert _total(server, "alpha") == 7
    assert _person_props(server, "alpha", "anon-1") == {"email": "u1@example.com"}
    # nothing leaked into the other project
    assert _events(server, "beta") == []


@pytest.mark.parametrize("gzip", [True, False])
def test_rudderstack_python_client(served: tuple[ThreadServer, dict[str, str]], gzip: bool) -> None:
    from rudderstack.analytics.client import Client

    server, keys = served
    errors: list[Any] = []
    client = Client(
        write_key=keys["beta"],
        host=server.url,
        gzip=gzip,
        on_error=lambda exc, batch: errors.append(exc),
        upload_interval=0.05,
        max_retries=0,
    )
    client.identify(user_id="r1", anonymous_id="ra", traits={"name": "Ria"}, timestamp=T0)
    client.track(user_id="r1", event="Order Completed", properties={"revenue": 12.5}, timestamp=T0)
    client.page(anonymous_id="ra", name="Checkout", timestamp=T0)
    client.alias(previous_id="rb", user_id="r1", timestamp=T0)
    client.track(anonymous_id="rb", event="Order Completed", timestamp=T0)
    client.flush()
    client.shutdown()
    assert errors == []
    assert _events(server, "beta") == [
        ("$create_alias", "r1"),
        ("$identify", "r1"),
        ("$pageview", "ra"),
        ("Order Completed", "r1"),
        ("Order Completed", "rb"),
    ]
    assert _total(server, "beta", "Order Completed") == 2
    assert _total(server, "beta", "Order Completed", "dau") == 1
    assert _total(server, "beta", math="dau") == 1
    # RudderStack sends identify traits in context.traits.
    assert _person_props(server, "beta", "r1") == {"name": "Ria"}
    assert _events(server, "alpha") == []


@pytest.mark.parametrize("gzip", [False, True])
def test_posthog_python_client(served: tuple[ThreadServer, dict[str, str]], gzip: bool) -> None:
    from posthog import Posthog

    server, keys = served
    errors: list[Any] = []
    client = Posthog(
        keys["alpha"],
        host=server.url,
        gzip=gzip,
        on_error=lambda exc, batch: errors.append(exc),
        flush_at=10,
        flush_interval=0.05,
        max_retries=0,
        enable_local_evaluation=False,
    )
    client.capture(
        "$pageview", distinct_id="anon-9", properties={"$current_url": "https://x.test/"}, timestamp=T0
    )
    client.capture(
        "$identify",
        distinct_id="p1",
        properties={"$anon_distinct_id": "anon-9", "$set": {"plan": "free"}},
        timestamp=T0,
    )
    client.capture("purchase", distinct_id="p1", properties={"amount": 3}, timestamp=T0)
    client.set(distinct_id="p1", properties={"plan": "team"}, timestamp=T0.replace(hour=11))
    client.alias("anon-10", "p1", timestamp=T0)
    client.capture("purchase", distinct_id="anon-10", timestamp=T0)
    client.capture("purchase", distinct_id="p2", timestamp=T0)
    client.flush()
    client.shutdown()
    assert errors == []
    # posthog's alias(previous_id, distinct_id) sends distinct_id=previous_id, properties.alias=distinct_id.
    assert _events(server, "alpha") == [
        ("$create_alias", "anon-10"),
        ("$identify", "p1"),
        ("$pageview", "anon-9"),
        ("$set", "p1"),
        ("purchase", "anon-10"),
        ("purchase", "p1"),
        ("purchase", "p2"),
    ]
    assert _total(server, "alpha", "purchase") == 3
    assert _total(server, "alpha", "purchase", "dau") == 2
    assert _total(server, "alpha", math="dau") == 2
    assert _person_of(server, "alpha", "anon-9") == _person_of(server, "alpha", "p1")
    assert _person_of(server, "alpha", "anon-10") == _person_of(server, "alpha", "p1")
    # $set at 11:00 beats the identify's $set at 10:00.
    assert _person_props(server, "alpha", "p1") == {"plan": "team"}


def test_wrong_key_is_refused_and_each_client_parses_the_error(
    served: tuple[ThreadServer, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    from posthog import Posthog
    from segment.analytics import Client

    server, _ = served
    caplog.set_level(logging.CRITICAL)
    seg_errors: list[Any] = []
    seg = Client(
        write_key="kp_wrong", host=server.url, on_error=lambda e, b: seg_errors.append(e), max_retries=0
    )
    seg.track(user_id="u", event="x", timestamp=T0)
    seg.flush()
    seg.shutdown()
    assert len(seg_errors) == 1
    # segment-analytics-python's APIError carries the status and our {"code", "message"} body.
    assert seg_errors[0].status == 401
    assert seg_errors[0].code == "invalid_api_key"
    assert "unknown or revoked" in seg_errors[0].message

    from rudderstack.analytics.client import Client as Rudder

    rs_errors: list[Any] = []
    rs = Rudder(
        write_key="kp_wrong", host=server.url, on_error=lambda e, b: rs_errors.append(e), max_retries=0
    )
    rs.track(user_id="u", event="x", timestamp=T0)
    rs.flush()
    rs.shutdown()
    assert [(e.status, e.code) for e in rs_errors] == [(401, "invalid_api_key")]

    ph_errors: list[Any] = []
    ph = Posthog(
        "kp_wrong",
        host=server.url,
        on_error=lambda e, b: ph_errors.append(e),
        max_retries=0,
        flush_interval=0.05,
        enable_local_evaluation=False,
    )
    ph.capture("x", distinct_id="u", timestamp=T0)
    ph.flush()
    ph.shutdown()
    assert len(ph_errors) == 1
    # posthog's APIError reads "detail".
    assert ph_errors[0].status == 401
    assert "unknown or revoked" in ph_errors[0].message
    assert server.sql("SELECT count(*) FROM events") == [(0,)]


def test_oversize_event_is_refused_by_server(served: tuple[ThreadServer, dict[str, str]]) -> None:
    import httpx

    server, keys = served
    big = {"type": "track", "userId": "u", "event": "x", "properties": {"blob": "y" * 40_000}}
    reply = httpx.post(server.url + "/v1/batch", json={"batch": [big]}, auth=(keys["alpha"], ""))
    assert reply.status_code == 400
    assert reply.json()["code"] == "event_too_large"
    assert server.sql("SELECT count(*) FROM events") == [(0,)]
