"""Identity resolution: distinct ids -> persons, with merges from identify/alias calls.

:func:`resolve` runs inside the store's write transaction (the batch's events are in the temp table
``staged``): every distinct id of the batch gets a person in one SQL pass, and the ids named by the batch's
merges are planned first by :func:`plan_identity`, pure Python: given the existing mapping of those ids, it
says which new ids to insert and which existing persons to re-point. Persons are dense integers per project;
a merge keeps the smaller (older) person id so earlier events keep counting for the same person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

__all__ = ["IdentityPlan", "plan_identity", "resolve"]


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


def resolve(
    cur: duckdb.DuckDBPyConnection,
    project_id: int,
    merges: Sequence[tuple[str, str]],
    prop_rows: Sequence[tuple[str, str, str | None, datetime, bool]],
) -> dict[int, int]:
    """Give every distinct id of the batch a person and apply merges; returns absorbed -> survivor."""
    remap: dict[int, int] = {}
    extra = {d for pair in merges for d in pair} | {row[0] for row in prop_rows}
    cur.register("extra_ids", pa.table({"distinct_id": pa.array(sorted(extra), pa.string())}))
    cur.execute(
        """CREATE OR REPLACE TEMP TABLE batch_ids AS
           SELECT DISTINCT distinct_id FROM (SELECT distinct_id FROM staged UNION ALL SELECT distinct_id FROM extra_ids)"""
    )
    cur.unregister("extra_ids")
    # Ids never seen before and not part of any merge get a fresh person each, in SQL.
    # New ids lie above every id ever absorbed by a merge too: an absorbed id is never reused, so a
    # rollup bitmap holding it means the absorbed person (see kpilot.store.rollup_store).
    next_id = cur.execute(
        """SELECT greatest(
               (SELECT coalesce(max(person_id), 0) FROM person_distinct_ids WHERE project_id = $1),
               (SELECT coalesce(max(from_person), 0) FROM person_merges WHERE project_id = $1)) + 1""",
        [project_id],
    ).fetchall()[0][0]
    if merges:
        # Only the ids named by merges need planning (a union-find in Python); every other id of the
        # batch keeps its person or gets a fresh one in the SQL pass below, like a batch without merges.
        # Ids of an existing person that a merge absorbs follow it through the UPDATE of its person.
        involved = sorted({d for pair in merges for d in pair})
        cur.register("involved_ids", pa.table({"distinct_id": pa.array(involved, pa.string())}))
        existing = dict(
            cur.execute(
                """SELECT p.distinct_id, p.person_id FROM person_distinct_ids p
                   JOIN involved_ids b USING (distinct_id) WHERE p.project_id = ?""",
                [project_id],
            ).fetchall()
        )
        cur.unregister("involved_ids")
        plan = plan_identity(involved, merges, existing, int(next_id))
        next_id = plan.next_person_id
        if plan.new_ids:
            cur.register(
                "new_ids",
                pa.table(
                    {
                        "distinct_id": pa.array(list(plan.new_ids), pa.string()),
                        "person_id": pa.array(list(plan.new_ids.values()), pa.int64()),
                    }
                ),
            )
            cur.execute(
                "INSERT INTO person_distinct_ids SELECT ?, distinct_id, person_id FROM new_ids",
                [project_id],
            )
            cur.unregister("new_ids")
        if plan.remap:
            # one UPDATE and one INSERT for every merge of the batch (the plan's survivors are final:
            # no survivor is absorbed in the same plan), not one statement per merge
            now = datetime.now(UTC).replace(tzinfo=None)
            remap = {int(old): int(new) for old, new in plan.remap.items()}
            cur.register(
                "batch_remap",
                pa.table(
                    {
                        "old": pa.array(list(remap), pa.int64()),
                        "new": pa.array(list(remap.values()), pa.int64()),
                    }
                ),
            )
            cur.execute(
                """UPDATE person_distinct_ids p SET person_id = r.new FROM batch_remap r
                   WHERE p.project_id = ? AND p.person_id = r.old""",
                [project_id],
            )
            cur.execute("INSERT INTO person_merges SELECT ?, old, new, ? FROM batch_remap", [project_id, now])
            cur.unregister("batch_remap")
    # One pass over the project's ids: known ones keep their (final) person; new ones get the next ids
    # in distinct-id order. The batch's ids and persons stay in batch_persons for the rollups.
    cur.execute(
        """CREATE OR REPLACE TEMP TABLE batch_persons AS
           SELECT b.distinct_id,
                  coalesce(p.person_id,
                           $2 + row_number() OVER (PARTITION BY p.person_id IS NULL ORDER BY b.distinct_id) - 1)
                    AS person_id,
                  p.person_id IS NULL AS new
           FROM batch_ids b
           LEFT JOIN (SELECT distinct_id, person_id FROM person_distinct_ids WHERE project_id = $1) p
           USING (distinct_id)""",
        [project_id, next_id],
    )
    cur.execute(
        "INSERT INTO person_distinct_ids SELECT ?, distinct_id, person_id FROM batch_persons WHERE new",
        [project_id],
    )
    if prop_rows:
        cur.register(
            "prop_rows",
            pa.table(
                {
                    "distinct_id": pa.array([r[0] for r in prop_rows], pa.string()),
                    "key": pa.array([r[1] for r in prop_rows], pa.string()),
                    "value": pa.array([r[2] for r in prop_rows], pa.string()),
                    "ts": pa.array([r[3] for r in prop_rows], pa.timestamp("us")),
                    "set_once": pa.array([r[4] for r in prop_rows], pa.bool_()),
                }
            ),
        )
        cur.execute(
            """INSERT INTO person_property_writes
               SELECT DISTINCT ?, r.distinct_id, r.key, r.value, r.ts, r.set_once FROM prop_rows r
               ANTI JOIN (SELECT * FROM person_property_writes WHERE project_id = ?) w
               ON w.distinct_id = r.distinct_id AND w.key = r.key AND w.ts = r.ts
                  AND w.set_once = r.set_once AND w.value IS NOT DISTINCT FROM r.value""",
            [project_id, project_id],
        )
        cur.unregister("prop_rows")
    cur.execute("DROP TABLE batch_ids")
    return remap
