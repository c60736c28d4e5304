"""Protocol behaviour of the ingestion endpoints, pinned: shapes, limits, encodings, keys, warnings."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kpilot.keys import list_warnings, project_by_name, revoke_key
from tests.server_helpers import ThreadServer, make_workspace, start_thread_server


class Api:
    def __init__(self, server: ThreadServer, client: httpx.Client, keys: dict[str, str]) -> None:
        self.server = server
        self.client = client
        self.keys = keys

    @property
    def ws(self) -> Any:
        """The served workspace, once the server stored every event it acknowledged."""
        self.server.flush()
        return self.server.ws

    def events(self, project: str = "alpha") -> list[tuple[Any, ...]]:
        pid = self.ws.project(project).id
        return self.ws.store.fetchall(
            "SELECT uuid, event, distinct_id, timestamp FROM events WHERE project_id = ? ORDER BY timestamp, uuid",
            [pid],
        )

    def warnings(self, project: str = "alpha") -> list[Any]:
        return list_warnings(self.ws.meta, project_by_name(self.ws.meta, project))

    def segment(self, body: Any, path: str = "/v1/batch", key: str | None = None, **kw: Any) -> Any:
        auth = (self.keys["alpha"] if key is None else key, "")
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.client.post(path, content=content, auth=auth, **kw)

    def posthog(self, body: Any, path: str = "/batch/", **kw: Any) -> Any:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.client.post(path, content=content, **kw)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    keys = make_workspace(tmp_path / "ws", ("alpha", "beta"))
    server = start_thread_server(tmp_path / "ws", key_cache_seconds=0)
    with httpx.Client(base_url=server.url) as client:
        yield Api(server, client, keys)
    server.stop()


def seg(event: str = "e", who: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": who, **extra}


# ---- error shapes (pinned: clients parse these) ---------------------------------------------------
def test_error_shapes_per_protocol(api: Api) -> None:
    r = api.segment({"batch": [seg()]}, key="kp_nope")
    assert (r.status_code, r.json()) == (
        401,
        {"code": "invalid_api_key", "message": "the API key is unknown or revoked"},
    )
    r = api.posthog({"api_key": "kp_nope", "batch": []})
    assert (r.status_code, r.json()) == (
        401,
        {
            "type": "authentication_error",
            "code": "invalid_api_key",
            "detail": "the API key is unknown or revoked",
        },
    )
    r = api.client.get("/api/nothing")
    assert (r.status_code, r.json()) == (404, {"error": {"code": "not_found", "message": "Not Found"}})
    r = api.client.post("/api/projects/alpha/query", json={})
    assert (r.status_code, r.json()) == (
        401,
        {"error": {"code": "unauthorized", "message": "missing or wrong admin token (see server.json)"}},
    )
    token = api.server.app_state.admin_token
    r = api.client.post(
        "/api/projects/alpha/query", json={"kind": "nope"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_spec"
    r = api.client.post("/api/projects/zeta/query", json={}, headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()) == (
        404,
        {"error": {"code": "not_found", "message": "no project named 'zeta'"}},
    )


def test_success_shapes(api: Api) -> None:
    assert api.segment({"batch": [seg()]}).json() == {"success": True}
    assert api.posthog(
        {"api_key": api.keys["alpha"], "event": "x", "distinct_id": "d"}, "/capture/"
    ).json() == {"status": 1}


def test_missing_key_is_401_for_both(api: Api) -> None:
    r = api.client.post("/v1/batch", json={"batch": [seg()]})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    r = api.posthog({"batch": [{"event": "x", "distinct_id": "d"}]})
    assert r.status_code == 401 and "detail" in r.json()
    assert api.events() == []


def test_revoked_key_is_refused(api: Api) -> None:
    assert api.segment({"batch": [seg()]}).status_code == 200
    revoke_key(api.ws.meta, project_by_name(api.ws.meta, "alpha"), api.keys["alpha"])
    r = api.segment({"batch": [seg(who="u2")]})
    assert r.status_code == 401
    assert [e[2] for e in api.events()] == ["u1"]


# ---- limits and bad bodies -------------------------------------------------------------------------
def test_segment_limits(api: Api) -> None:
    big = seg(properties={"x": "y" * (32 * 1024)})
    r = api.segment({"batch": [seg(), big]})
    assert r.status_code == 400 and r.json()["code"] == "event_too_large"
    many = {"batch": [seg(properties={"x": "y" * 20_000}) for _ in range(30)]}  # ~600 KB
    r = api.segment(many)
    assert r.status_code == 400 and r.json()["code"] == "request_too_large"
    # the limit applies after decompression too
    r = api.segment(gzip.compress(orjson.dumps(many)), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["code"] == "request_too_large"
    assert api.events() == []


def test_invalid_json_and_compression(api: Api) -> None:
    r = api.segment(b'{"batch": [')
    assert r.status_code == 400 and r.json()["code"] == "invalid_json"
    r = api.posthog(b"\x1f\x8b\x08\x00garbage")
    assert r.status_code == 400 and r.json()["code"] == "invalid_compression"
    r = api.segment(b"[1, 2]")
    assert r.status_code == 400 and r.json()["code"] == "invalid_payload"
    r = api.segment({"batch": "nope"})
    assert r.status_code == 400
    assert api.events() == []


def test_gzip_by_header_or_magic_bytes_and_text_plain(api: Api) -> None:
    body = gzip.compress(orjson.dumps({"batch": [seg(who="a")]}))
    assert api.segment(body, headers={"Content-Encoding": "gzip"}).status_code == 200
    body = gzip.compress(orjson.dumps({"batch": [seg(who="b")]}))
    assert api.segment(body, headers={"Content-Type": "text/plain"}).status_code == 200
    # posthog-js: gzip body as text/plain, no Content-Encoding, key inside the events
    events = [{"event": "$pageview", "distinct_id": "c", "properties": {"token": api.keys["alpha"]}}]
    r = api.posthog(
        gzip.compress(orjson.dumps(events)), "/e/?compression=gzip-js", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 200
    assert sorted(e[2] for e in api.events()) == ["a", "b", "c"]


def test_posthog_form_encoded_base64(api: Api) -> None:
    data = base64.b64encode(
        orjson.dumps({"event": "x", "distinct_id": "f", "api_key": api.keys["alpha"]})
    ).decode()
    r = api.client.post(
        "/e/", content=f"data={data}", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200
    assert [e[1:3] for e in api.events()] == [("x", "f")]


@pytest.mark.parametrize(
    ("path", "body", "event"),
    [
        ("/v1/track", {"event": "Clicked", "userId": "u"}, "Clicked"),
        ("/v1/t", {"event": "Clicked", "userId": "u"}, "Clicked"),
        ("/v1/identify", {"userId": "u", "traits": {"a": 1}}, "$identify"),
        ("/v1/i", {"userId": "u"}, "$identify"),
        ("/v1/page", {"userId": "u", "name": "Home"}, "$pageview"),
        ("/v1/p", {"userId": "u"}, "$pageview"),
        ("/v1/screen", {"userId": "u"}, "$screen"),
        ("/v1/s", {"userId": "u"}, "$screen"),
        ("/v1/group", {"userId": "u", "groupId": "g"}, "$groupidentify"),
        ("/v1/g", {"userId": "u", "groupId": "g"}, "$groupidentify"),
        ("/v1/alias", {"userId": "u", "previousId": "p"}, "$create_alias"),
        ("/v1/a", {"userId": "u", "previousId": "p"}, "$create_alias"),
        ("/v1/b", {"batch": [{"type": "track", "event": "B", "userId": "u"}]}, "B"),
    ],
)
def test_every_segment_path(api: Api, path: str, body: dict[str, Any], event: str) -> None:
    # analytics.js sends text/plain with the write key in the body
    r = api.client.post(
        path,
        content=orjson.dumps({**body, "writeKey": api.keys["alpha"]}),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 200, r.text
    assert [e[1] for e in api.events()] == [event]


@pytest.mark.parametrize(
    "path", ["/batch/", "/batch", "/capture/", "/capture", "/e/", "/e", "/i/v0/e/", "/i/v0/e"]
)
def test_every_posthog_path(api: Api, path: str) -> None:
    r = api.posthog({"api_key": api.keys["alpha"], "event": "x", "distinct_id": "d"}, path)
    assert r.status_code == 200 and r.json() == {"status": 1}
    assert len(api.events()) == 1


def test_conflicting_keys_in_one_request_are_refused(api: Api) -> None:
    r = api.segment({"batch": [seg()], "writeKey": api.keys["beta"]})
    assert r.status_code == 401
    events = [
        {"event": "x", "distinct_id": "a", "properties": {"token": api.keys["alpha"]}},
        {"event": "x", "distinct_id": "b", "properties": {"token": api.keys["beta"]}},
    ]
    assert api.posthog(events, "/e/").status_code == 400
    assert api.events("alpha") == [] and api.events("beta") == []


def test_keys_isolate_projects(api: Api) -> None:
    assert api.segment({"batch": [seg(who="a")]}, key=api.keys["alpha"]).status_code == 200
    assert api.segment({"batch": [seg(who="b")]}, key=api.keys["beta"]).status_code == 200
    # the payload cannot name another project: only the key decides
    assert (
        api.posthog(
            {"api_key": api.keys["beta"], "event": "x", "distinct_id": "c", "project_id": 1}, "/capture/"
        ).status_code
        == 200
    )
    assert [e[2] for e in api.events("alpha")] == ["a"]
    assert sorted(e[2] for e in api.events("beta")) == ["b", "c"]


# ---- event semantics ------------------------------------------------------------------------------
def test_invalid_events_are_dropped_with_a_warning_and_200(api: Api) -> None:
    r = api.segment(
        {
            "batch": [
                seg(who="ok"),
                {"type": "track", "event": "x", "userId": None, "anonymousId": None},
                {"type": "track", "userId": "u"},
                "not an object",
            ]
        }
    )
    assert r.status_code == 200
    assert [e[2] for e in api.events()] == ["ok"]
    kinds = sorted((w.kind, w.reason) for w in api.warnings())
    assert kinds == [
        ("invalid_event", "dropped: message has neither userId nor anonymousId"),
        ("invalid_event", "dropped: track message has no event name"),
        ("invalid_event", "expected a JSON object, got a string"),
    ]
    assert {w.source for w in api.warnings()} == {"segment"}
    assert {w.key_prefix for w in api.warnings()} == {api.keys["alpha"][:10]}


def test_anonymous_id_null_means_absent(api: Api) -> None:
    assert api.segment({"batch": [seg(who="u7", anonymousId=None)]}).status_code == 200
    assert [e[2] for e in api.events()] == ["u7"]


def test_clock_skew_correction_and_future_clamp(api: Api) -> None:
    # The client's clock is 2 hours fast: it stamped the event 10 s before it sent the batch.
    # Stored time = receive time - (sentAt - timestamp) = receive time - 10 s.
    before = datetime.now(UTC).replace(tzinfo=None)
    fast = datetime.now(UTC) + timedelta(hours=2)
    r = api.segment(
        {
            "batch": [seg(who="skew", messageId="m1", timestamp=(fast - timedelta(seconds=10)).isoformat())],
            "sentAt": fast.isoformat(),
        }
    )
    after = datetime.now(UTC).replace(tzinfo=None)
    assert r.status_code == 200
    (ts,) = [e[3] for e in api.events()]
    assert (
        before - timedelta(seconds=10, milliseconds=1)
        <= ts
        <= after - timedelta(seconds=10) + timedelta(milliseconds=1)
    )
    # No sentAt and a timestamp 2 days ahead: clamped to the receive time, with a warning.
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert api.segment({"batch": [seg(who="fut", messageId="m2", timestamp=future)]}).status_code == 200
    ts2 = next(e[3] for e in api.events() if e[2] == "fut")
    assert ts2 <= datetime.now(UTC).replace(tzinfo=None)
    assert [w.kind for w in api.warnings()] == ["timestamp_in_future"]


def test_invalid_timestamp_stores_at_receive_time_with_warning(api: Api) -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    r = api.posthog(
        {
            "api_key": api.keys["alpha"],
            "batch": [{"event": "x", "distinct_id": "d", "timestamp": "yesterday"}],
        }
    )
    assert r.status_code == 200
    (ts,) = [e[3] for e in api.events()]
    assert ts >= before
    assert [w.kind for w in api.warnings()] == ["invalid_timestamp"]


def test_posthog_ignore_sent_at_and_sent_at_correction(api: Api) -> None:
    r = api.posthog(
        {
            "api_key": api.keys["alpha"],
            "sent_at": "2030-01-01T00:00:10Z",
            "batch": [
                {
                    "event": "kept",
                    "distinct_id": "d",
                    "timestamp": "2024-03-01T00:00:00Z",
                    "properties": {"$ignore_sent_at": True},
                },
            ],
        }
    )
    assert r.status_code == 200
    assert [e[3] for e in api.events()] == [datetime(2024, 3, 1)]


def test_retries_are_deduplicated(api: Api) -> None:
    body = {"batch": [seg(who="d", messageId="msg-1", timestamp="2024-03-01T10:00:00Z")]}
    for _ in range(3):
        assert api.segment(body).status_code == 200
    ph = {
        "api_key": api.keys["alpha"],
        "batch": [
            {
                "event": "p",
                "distinct_id": "d",
                "uuid": "0190a5c4-0000-7000-8000-000000000001",
                "timestamp": "2024-03-01T10:00:00Z",
            }
        ],
    }
    for _ in range(2):
        assert api.posthog(ph).status_code == 200
    assert [e[0] for e in api.events()] == ["0190a5c4-0000-7000-8000-000000000001", "msg-1"]


def test_rudderstack_context_traits_and_posthog_top_level_set(api: Api) -> None:
    api.segment({"batch": [{"type": "identify", "userId": "r", "context": {"traits": {"plan": "pro"}}}]})
    api.posthog(
        {
            "api_key": api.keys["alpha"],
            "batch": [
                {"event": "$set", "distinct_id": "p", "$set": {"tier": "gold"}, "$set_once": {"first": "yes"}}
            ],
        }
    )
    pid = api.ws.project("alpha").id
    rows = api.ws.store.fetchall(
        """SELECT d.distinct_id, pp.key, pp.value FROM person_properties pp
           JOIN person_distinct_ids d USING (project_id, person_id) WHERE pp.project_id = ? ORDER BY 1, 2""",
        [pid],
    )
    assert rows == [("p", "first", "yes"), ("p", "tier", "gold"), ("r", "plan", "pro")]


def test_health_reports_writer_counters(api: Api) -> None:
    api.segment({"batch": [seg(who=str(i)) for i in range(5)]})
    api.server.flush()
    body = api.client.get("/health").json()
    assert body["status"] == "ok"
    assert body["writer"]["events_stored"] == 5
    assert body["writer"]["requests"] == 1 and body["writer"]["log_flushes"] == 1
    assert body["store_memory_bytes"] >= 0 and body["pending_events"] == 0
    assert body["id_index_bytes"] == 5 * 8  # the five stored ids' hashes, 8 bytes each
    assert body["id_index_disk_bytes"] == 0  # far under the budget: nothing moved to run files
    assert body["ingest_log"]["applied"] == body["ingest_log"]["logged"] > 0


def test_cors_preflight_only_on_ingestion_paths(api: Api) -> None:
    pre = {"Origin": "https://app.test", "Access-Control-Request-Method": "POST"}
    r = api.client.options("/v1/t", headers=pre)
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "https://app.test"
    r = api.client.options("/api/projects/alpha/query", headers=pre)
    assert "access-control-allow-origin" not in r.headers


def test_openapi_lists_the_endpoints(api: Api) -> None:
    paths = json.loads(api.client.get("/openapi.json").text)["paths"]
    assert {
        "/v1/batch",
        "/v1/track",
        "/batch/",
        "/e/",
        "/i/v0/e/",
        "/health",
        "/api/projects/{name}/query",
    } <= set(paths)


def test_analytics_js_settings_point_back_at_the_server(api: Api) -> None:
    r = api.client.get(f"/v1/projects/{api.keys['alpha']}/settings")
    assert r.status_code == 200
    seg_io = r.json()["integrations"]["Segment.io"]
    assert seg_io["apiKey"] == api.keys["alpha"]
    assert seg_io["apiHost"] == api.server.url.removeprefix("http://") + "/v1"
    assert api.client.get("/v1/projects/kp_nope/settings").status_code == 401
