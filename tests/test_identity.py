"""Identity: distinct ids merge into persons; person properties resolve latest-wins / first-wins."""

from __future__ import annotations

from kpilot.store.identity import plan_identity
from tests.conftest import Env, ev, values

DAY = {"kind": "trends", "date_from": "2024-06-01", "date_to": "2024-06-01", "math": "dau"}


def persons(env: Env) -> dict[str, int]:
    return dict(env.ws.store.fetchall("SELECT distinct_id, person_id FROM person_distinct_ids ORDER BY 1"))


def test_segment_alias_and_identify_merge(env: Env) -> None:
    env.load(
        [
            {
                "type": "track",
                "event": "a",
                "anonymousId": "anon",
                "timestamp": "2024-06-01T01:00:00Z",
                "messageId": "1",
            },
            {
                "type": "track",
                "event": "a",
                "userId": "old-user",
                "timestamp": "2024-06-01T02:00:00Z",
                "messageId": "2",
            },
            {
                "type": "alias",
                "previousId": "old-user",
                "userId": "new-user",
                "timestamp": "2024-06-01T03:00:00Z",
                "messageId": "3",
            },
        ]
    )
    assert values(env.query(DAY)) == [2]
    env.load(
        [
            {
                "type": "identify",
                "anonymousId": "anon",
                "userId": "new-user",
                "timestamp": "2024-06-01T04:00:00Z",
                "messageId": "4",
            }
        ]
    )
    ids = persons(env)
    assert ids["anon"] == ids["old-user"] == ids["new-user"]
    assert values(env.query(DAY)) == [1]


def test_posthog_identify_and_create_alias(env: Env) -> None:
    env.load(
        [
            ev("$pageview", "anon-1", "2024-06-01T01:00:00Z"),
            ev("$pageview", "anon-2", "2024-06-01T01:00:00Z"),
            ev("$identify", "user", "2024-06-01T02:00:00Z", **{"$anon_distinct_id": "anon-1"}),
        ]
    )
    assert values(env.query(DAY)) == [2]
    env.load([ev("$create_alias", "user", "2024-06-01T05:00:00Z", alias="anon-2")])
    assert values(env.query(DAY)) == [1]


def test_merge_chain_across_batches_keeps_oldest_person_id(env: Env) -> None:
    env.load([ev("x", "a", "2024-06-01T01:00:00Z"), ev("x", "b", "2024-06-01T01:00:00Z")])
    env.load([ev("x", "c", "2024-06-01T01:00:00Z"), ev("x", "d", "2024-06-01T01:00:00Z")])
    before = persons(env)
    env.load(
        [
            ev("$create_alias", "b", "2024-06-01T02:00:00Z", alias="c"),
            ev("$create_alias", "d", "2024-06-01T02:00:00Z", alias="a"),
        ]
    )
    # b~c and a~d: two persons remain until c~d links the two pairs
    assert len(set(persons(env).values())) == 2
    env.load([ev("$create_alias", "c", "2024-06-01T03:00:00Z", alias="d")])
    after = persons(env)
    assert len(set(after.values())) == 1
    assert next(iter(set(after.values()))) == min(before.values())
    merges = env.ws.store.fetchall("SELECT count(*) FROM person_merges")[0][0]
    assert merges == 3


def test_person_properties_latest_set_wins_even_out_of_order(env: Env) -> None:
    env.load(
        [{"event": "x", "distinct_id": "a", "timestamp": "2024-06-01T10:00:00Z", "$set": {"plan": "pro"}}]
    )
    env.load(
        [{"event": "x", "distinct_id": "a", "timestamp": "2024-06-01T09:00:00Z", "$set": {"plan": "free"}}]
    )
    env.load(
        [{"event": "x", "distinct_id": "a", "timestamp": "2024-06-01T08:00:00Z", "$set_once": {"first": "x"}}]
    )
    env.load(
        [{"event": "x", "distinct_id": "a", "timestamp": "2024-06-01T11:00:00Z", "$set_once": {"first": "y"}}]
    )
    props = dict(env.ws.store.fetchall("SELECT key, value FROM person_properties"))
    assert props == {"plan": "pro", "first": "x"}


def test_merged_person_gets_properties_of_both(env: Env) -> None:
    env.load(
        [
            {
                "event": "x",
                "distinct_id": "anon",
                "timestamp": "2024-06-01T10:00:00Z",
                "$set_once": {"utm": "ads"},
            },
            {
                "event": "x",
                "distinct_id": "user",
                "timestamp": "2024-06-01T11:00:00Z",
                "$set": {"plan": "pro"},
            },
            ev("$identify", "user", "2024-06-01T12:00:00Z", **{"$anon_distinct_id": "anon"}),
        ]
    )
    rows = env.ws.store.fetchall("SELECT person_id, key, value FROM person_properties ORDER BY key")
    assert [(k, v) for _, k, v in rows] == [("plan", "pro"), ("utm", "ads")]
    assert len({p for p, _, _ in rows}) == 1


def test_plan_identity_pure() -> None:
    plan = plan_identity(["a", "b", "c", "n"], [("a", "b"), ("c", "b")], {"a": 5, "c": 2}, next_person_id=10)
    assert plan.remap == {5: 2}
    assert plan.new_ids == {"b": 2, "n": 10}
    assert plan.next_person_id == 11
