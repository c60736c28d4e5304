"""Identity resolution: distinct ids -> persons, with merges from identify/alias calls.

Pure Python over one batch: the store hands in the existing mapping of the batch's distinct ids and gets
back which new ids to insert and which existing persons to re-point. Persons are dense integers per
project; a merge keeps the smaller (older) person id so earlier events keep counting for the same person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["IdentityPlan", "plan_identity"]


@dataclass(slots=True)
class IdentityPlan:
    new_ids: dict[str, int] = field(default_factory=dict)
    """distinct id -> person id, for ids the store has not seen."""
    remap: dict[int, int] = field(default_factory=dict)
    """existing person id -> surviving person id, for persons absorbed by a merge."""
    next_person_id: int = 1


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent.setdefault(x, x)
        if parent != x:
            root = self.find(parent)
            self.parent[x] = root
            return root
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def plan_identity(
    distinct_ids: Iterable[str],
    merges: Iterable[tuple[str, str]],
    existing: Mapping[str, int],
    next_person_id: int,
) -> IdentityPlan:
    """Plan the identity writes of one batch.

    ``existing`` maps the batch's already-known distinct ids to their person. Every id in ``distinct_ids``
    and in ``merges`` ends up mapped; ids linked by a merge (directly or through a chain) share one person.
    """
    uf = _UnionFind()
    for d in distinct_ids:
        uf.find(d)
    for a, b in merges:
        uf.union(a, b)
    # Persons that already exist are linked too: two ids of the same existing person are one component.
    by_person: dict[int, str] = {}
    for d in list(uf.parent):
        person = existing.get(d)
        if person is None:
            continue
        if person in by_person:
            uf.union(by_person[person], d)
        else:
            by_person[person] = d
    components: dict[str, list[str]] = {}
    for d in list(uf.parent):
        components.setdefault(uf.find(d), []).append(d)
    plan = IdentityPlan(next_person_id=next_person_id)
    for members in components.values():
        persons = sorted({existing[d] for d in members if d in existing})
        if persons:
            root = persons[0]
            for other in persons[1:]:
                plan.remap[other] = root
        else:
            root = plan.next_person_id
            plan.next_person_id += 1
        for d in sorted(members):
            if d not in existing:
                plan.new_ids[d] = root
    return plan
