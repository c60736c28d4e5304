"""Identity: distinct ids merge into persons; person properties resolve latest-wins / first-wins."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.collect.normalize import Normalized
from kpilot.store.identity import plan_identity
from kpilot.workspace import Workspace
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


# ---- against a plain-Python reference --------------------------------------------------------------------
_ids = st.sampled_from([f"d{i}" for i in range(10)])


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(_ids, st.none() | _ids), min_size=1, max_size=8), min_size=1, max_size=5
    )
)
def test_persons_are_the_components_of_every_merge_so_far(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[str, str | None]]]
) -> None:
    """Batches of events, some merging their id with another (as identify/alias do): after each batch the
    persons are exactly the connected components of all merges so far, each keeps the smallest person id
    any of its ids ever had, and no absorbed person id is current again."""
    with Workspace.init(tmp_path_factory.mktemp("ws") / "ws") as ws:
        project = ws.create_project("p")
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        ever: dict[str, set[int]] = {}
        for i, batch in enumerate(batches):
            events = [
                Normalized(uuid=f"{i}-{j}", event="e", distinct_id=who, timestamp=datetime(2024, 6, 1, 12),
                           properties={}, merges=[] if other is None else [(other, who)])
                for j, (who, other) in enumerate(batch)
            ]  # fmt: skip
            ws.store.write_batch(project.id, events)
            for who, other in batch:
                find(who)
                if other is not None:
                    parent[find(other)] = find(who)
            current = dict(ws.store.fetchall("SELECT distinct_id, person_id FROM person_distinct_ids"))
            for d, person in current.items():
                ever.setdefault(d, set()).add(person)
            components: dict[str, set[str]] = {}
            for d in parent:
                components.setdefault(find(d), set()).add(d)
            by_person: dict[int, set[str]] = {}
            for d, person in current.items():
                by_person.setdefault(person, set()).add(d)
            assert sorted(map(sorted, by_person.values())) == sorted(map(sorted, components.values()))
            for person, members in by_person.items():
                assert person == min(p for d in members for p in ever[d])  # the oldest person survives
            absorbed = {r[0] for r in ws.store.fetchall("SELECT from_person FROM person_merges")}
            assert not absorbed & set(by_person)
