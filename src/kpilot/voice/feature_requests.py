"""Feature requests: status pipeline, merging duplicates, and the top requests by votes or requesters' MRR.

* A feature request is a feedback item of kind ``feature_request`` with a status in the pipeline
  ``new -> planned -> in_progress -> shipped`` (or ``declined``).
* Merging a duplicate into another request records ``item -> into`` (kept apart from the imported items, so
  a re-import never undoes it). Merges chain: the request a group is reported under is the end of the chain
  (its *root*). A group's votes are the sum of its items' votes; its requesters are the union of its items'
  requesters (authors and voters), so a customer who asked twice counts once for the MRR ranking.
* Requesters' MRR = the sum of the current MRR (on ``date_to``) of the distinct customers among the
  requesters (a requester is matched to a customer by customer id or by the customer's distinct id).
* Listed: groups whose root was created within the query range and whose root's status is in
  ``settings.statuses``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from kpilot.compute.dialect import lit
from kpilot.errors import KpilotError, NotFoundError
from kpilot.revenue.mrr import pieces_sql
from kpilot.revenue.schema import ensure_schema
from kpilot.revenue.settings import RevenueSettings
from kpilot.voice.settings import VoiceSettings
from kpilot.voice.sources import request_status
from kpilot.workspace import ProjectInfo, Workspace

__all__ = ["merge_request", "roots", "set_status", "top_requests"]


def _exists(ws: Workspace, project_id: int, item_id: str) -> bool:
    rows = ws.store.fetchall(
        "SELECT count(*) FROM feedback_items WHERE project_id = ? AND item_id = ?", [project_id, item_id]
    )
    return bool(rows[0][0])


def roots(merges: dict[str, str]) -> dict[str, str]:
    """Each merged item's root (end of its merge chain)."""
    out: dict[str, str] = {}
    for item in merges:
        seen = {item}
        cur = item
        while cur in merges:
            cur = merges[cur]
            if cur in seen:
                break
            seen.add(cur)
        out[item] = cur
    return out


def merge_request(ws: Workspace, project: ProjectInfo, item_id: str, into_id: str) -> str:
    """Merge ``item_id`` into ``into_id``; returns the root the votes now count under."""
    ensure_schema(ws.store)
    for i in (item_id, into_id):
        if not _exists(ws, project.id, i):
            raise NotFoundError(f"no feedback item {i!r}")
    merges = dict(
        ws.store.fetchall(
            "SELECT item_id, into_item_id FROM feedback_merges WHERE project_id = ?", [project.id]
        )
    )
    root = roots({**merges, "\0probe": into_id})["\0probe"]
    if root == item_id or item_id == into_id:
        raise KpilotError(f"cannot merge {item_id!r} into {into_id!r}: {into_id!r} is already merged into it")
    now = datetime.now(UTC).replace(tzinfo=None)
    with ws.store._transaction() as cur:
        cur.execute("DELETE FROM feedback_merges WHERE project_id = ? AND item_id = ?", [project.id, item_id])
        cur.execute("INSERT INTO feedback_merges VALUES (?, ?, ?, ?)", [project.id, item_id, into_id, now])
    return root


def set_status(ws: Workspace, project: ProjectInfo, item_id: str, status: str) -> str:
    ensure_schema(ws.store)
    value = request_status(status)
    if not _exists(ws, project.id, item_id):
        raise NotFoundError(f"no feedback item {item_id!r}")
    with ws.store._transaction() as cur:
        cur.execute(
            "UPDATE feedback_items SET status = ? WHERE project_id = ? AND item_id = ?",
            [value, project.id, item_id],
        )
    return value


def top_requests(
    engine: Any, project_id: int, first: date, last: date, s: VoiceSettings, revenue: RevenueSettings
) -> dict[str, Any]:
    items = {
        str(r[0]): {"title": r[1], "status": r[2], "votes": int(r[3]), "created": r[4]}
        for r in engine.fetchall(
            f"SELECT item_id, coalesce(title, text), status, votes, CAST(created_at AS DATE) FROM feedback_items "
            f"WHERE project_id = {project_id} AND kind = 'feature_request'"
        )
    }
    merges = {
        str(a): str(b)
        for a, b in engine.fetchall(
            f"SELECT item_id, into_item_id FROM feedback_merges WHERE project_id = {project_id}"
        )
    }
    root_of = roots(merges)
    requesters: dict[str, set[str]] = {}
    for item, voter in engine.fetchall(
        f"SELECT item_id, voter FROM feedback_voters WHERE project_id = {project_id}"
    ):
        requesters.setdefault(root_of.get(str(item), str(item)), set()).add(str(voter))
    customer_of = {
        str(v): str(c)
        for v, c in engine.fetchall(
            f"SELECT DISTINCT v.voter, c.customer_id FROM feedback_voters v JOIN customers c "
            f"ON c.project_id = v.project_id AND (c.customer_id = v.voter OR c.distinct_id = v.voter) "
            f"WHERE v.project_id = {project_id}"
        )
    }
    mrr = {
        str(c): Decimal(v)
        for c, v in engine.fetchall(
            f"WITH {pieces_sql(project_id, revenue)} SELECT customer_id, sum(mrr) FROM pieces "
            f"WHERE piece_start <= {lit(last)} AND (piece_end IS NULL OR piece_end > {lit(last)}) GROUP BY 1"
        )
    }
    groups: dict[str, dict[str, Any]] = {}
    for item_id, info in items.items():
        root = root_of.get(item_id, item_id)
        if root not in items:
            continue
        g = groups.setdefault(root, {"item_id": root, "votes": 0, "merged": []})
        g["votes"] += info["votes"]
        if item_id != root:
            g["merged"].append(item_id)
    listed = []
    by_status: dict[str, int] = {}
    for root, g in groups.items():
        info = items[root]
        by_status[info["status"]] = by_status.get(info["status"], 0) + 1
        if not (first <= info["created"] <= last) or info["status"] not in s.statuses:
            continue
        customers = {customer_of[v] for v in requesters.get(root, set()) if v in customer_of}
        listed.append(
            {
                "item_id": root,
                "title": info["title"],
                "status": info["status"],
                "votes": g["votes"],
                "requesters": len(requesters.get(root, set())),
                "requesters_mrr": float(sum((mrr.get(c, Decimal(0)) for c in customers), Decimal(0))),
                "merged": sorted(g["merged"]),
            }
        )
    key = "votes" if s.rank_by == "votes" else "requesters_mrr"
    listed.sort(key=lambda r: (-r[key], -r["votes"], r["item_id"]))
    return {"requests": listed[: s.top], "by_status": dict(sorted(by_status.items()))}
