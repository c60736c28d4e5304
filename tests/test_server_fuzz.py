"""Fuzzing every ingestion endpoint: random bytes, random JSON, and near-valid messages.

Invariants: never a 5xx; a rejected request (4xx) stores nothing (no event, no warning); the writer never
fails a request.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from kpilot.meta.models import IngestionWarning
from tests.server_helpers import ThreadServer, make_workspace, start_thread_server

SEGMENT_PATHS = [
    "/v1/batch",
    "/v1/track",
    "/v1/identify",
    "/v1/page",
    "/v1/screen",
    "/v1/group",
    "/v1/alias",
    "/v1/b",
    "/v1/t",
    "/v1/i",
    "/v1/p",
    "/v1/s",
    "/v1/g",
    "/v1/a",
]
POSTHOG_PATHS = ["/batch/", "/capture/", "/e/", "/i/v0/e/", "/e"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from(
        [
            "2024-03-01T10:00:00Z",
            "2024-03-01T10:00:00+05:00",
            "",
            "yesterday",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
        ]
    ),
)
ids = st.one_of(
    st.none(),
    st.text(max_size=10),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.just(""),
    st.text(min_size=401, max_size=410),
)
message_fields: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "bogus", 3]),
    "event": st.one_of(st.text(max_size=12), json_values),
    "userId": ids,
    "anonymousId": ids,
    "previousId": ids,
    "groupId": ids,
    "messageId": ids,
    "timestamp": timestamps,
    "originalTimestamp": timestamps,
    "sentAt": timestamps,
    "properties": json_values,
    "traits": json_values,
    "context": st.one_of(
        json_values,
        st.fixed_dictionaries({"traits": json_values, "page": json_values, "campaign": json_values}),
    ),
    "distinct_id": ids,
    "uuid": ids,
    "sent_at": timestamps,
    "$set": json_values,
    "$set_once": json_values,
}
names = st.text(min_size=1, max_size=12).filter(str.strip)
plausible = st.one_of(
    # near-valid Segment messages: a type, an id and an event name, plus any of the fuzzed fields
    st.fixed_dictionaries(
        {"type": st.sampled_from(["track", "identify", "page", "alias"]), "event": names, "userId": names},
        optional={k: v for k, v in message_fields.items() if k not in ("type", "event", "userId")},
    ),
    # near-valid PostHog events
    st.fixed_dictionaries(
        {"event": names, "distinct_id": names},
        optional={k: v for k, v in message_fields.items() if k not in ("event", "distinct_id", "type")},
    ),
)
messages = st.one_of(plausible, st.fixed_dictionaries({}, optional=message_fields))
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(orjson.dumps),
    st.builds(
        lambda ms, sent: orjson.dumps({"batch": ms, "sentAt": sent, "sent_at": sent}),
        st.lists(messages, max_size=5),
        timestamps,
    ),
    messages.map(orjson.dumps),
    st.lists(messages, max_size=4).map(orjson.dumps),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadServer, str, httpx.Client]]:
    home = tmp_path_factory.mktemp("fuzz") / "ws"
    key = make_workspace(home)["alpha"]
    server = start_thread_server(home)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield server, key, client
    assert server.app_state.writer.stats.failed_requests == 0
    assert server.app_state.writer.stats.failed_records == 0
    server.stop()


def _counts(server: ThreadServer) -> tuple[int, int]:
    events = server.sql("SELECT count(*) FROM events")[0][0]
    with server.ws.meta.session() as s:
        warnings = s.scalar(select(func.count()).select_from(IngestionWarning))
    return int(events), int(warnings or 0)


def _check(server: ThreadServer, reply: httpx.Response, before: tuple[int, int]) -> None:
    assert reply.status_code < 500, reply.text
    body = reply.json()
    if reply.status_code >= 400:
        assert _counts(server) == before
        assert isinstance(body, dict)
    else:
        assert reply.status_code == 200


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    path=st.sampled_from(SEGMENT_PATHS),
    body=bodies,
    gz=st.booleans(),
    text_plain=st.booleans(),
    key_in_body=st.booleans(),
)
def test_fuzz_segment(
    served: tuple[ThreadServer, str, httpx.Client],
    path: str,
    body: bytes,
    gz: bool,
    text_plain: bool,
    key_in_body: bool,
) -> None:
    server, key, client = served
    headers = {"Content-Type": "text/plain" if text_plain else "application/json"}
    auth: tuple[str, str] | None = (key, "")
    if key_in_body and body.startswith(b"{"):
        try:
            obj = orjson.loads(body)
            body = orjson.dumps({**obj, "writeKey": key})
            auth = None
        except orjson.JSONDecodeError:
            pass
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    before = _counts(server)
    reply = client.post(path, content=body, headers=headers, auth=auth)
    _check(server, reply, before)
    assert "code" in reply.json() if reply.status_code >= 400 else reply.json() == {"success": True}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(path=st.sampled_from(POSTHOG_PATHS), body=bodies, gz=st.booleans(), with_key=st.booleans())
def test_fuzz_posthog(
    served: tuple[ThreadServer, str, httpx.Client], path: str, body: bytes, gz: bool, with_key: bool
) -> None:
    server, key, client = served
    if with_key and body.startswith(b"{"):
        with contextlib.suppress(orjson.JSONDecodeError):
            body = orjson.dumps({**orjson.loads(body), "api_key": key})
    if gz:
        body = gzip.compress(body)
    before = _counts(server)
    reply = client.post(path, content=body, headers={"Content-Type": "text/plain"})
    _check(server, reply, before)
    assert "detail" in reply.json() if reply.status_code >= 400 else reply.json() == {"status": 1}


def test_fuzz_found_nothing_stored_from_unknown_keys(served: tuple[ThreadServer, str, httpx.Client]) -> None:
    server, _, client = served
    before = _counts(server)
    # the fuzz tests above (same module, same server) reached the writer: events and warnings were stored
    assert before[0] > 0 and before[1] > 0
    for path in SEGMENT_PATHS:
        assert (
            client.post(
                path,
                json={"batch": [{"type": "track", "event": "x", "userId": "u"}], "event": "x", "userId": "u"},
                auth=("kp_x", ""),
            ).status_code
            == 401
        )
    for path in POSTHOG_PATHS:
        assert (
            client.post(path, json={"api_key": "kp_x", "event": "x", "distinct_id": "u"}).status_code == 401
        )
    assert _counts(server) == before


spec_values = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["trends", "stickiness", "retention", "funnel", "sessions", "nope", ""]),
        "date_from": st.sampled_from(["2024-03-01", "2024-02-30", "x", "2024-03-01T10:00:00"]),
        "date_to": st.sampled_from(["2024-03-02", "2024-03-01", "2023-01-01"]),
    },
    optional={
        "event": st.one_of(st.text(max_size=8), json_values),
        "math": st.sampled_from(["total", "dau", "wau", "mau", "unique", "bogus"]),
        "interval": st.sampled_from(["hour", "day", "week", "month", "year"]),
        "timezone": st.sampled_from(["UTC", "Europe/Paris", "Mars/Base"]),
        "filters": json_values,
        "breakdown": json_values,
        "steps": json_values,
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(spec_values.map(orjson.dumps), json_values.map(orjson.dumps), st.binary(max_size=50)))
def test_fuzz_query_api(served: tuple[ThreadServer, str, httpx.Client], body: bytes) -> None:
    server, _, client = served
    token = server.app_state.admin_token
    reply = client.post(
        "/api/projects/alpha/query", content=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status_code in (200, 400), reply.text
    if reply.status_code == 400:
        assert set(reply.json()) == {"error"}
