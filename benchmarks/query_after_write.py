"""The first rollup query after a write: refreshing the cached sets against reading them all again.

A dashboard over live data asks its queries between writes, so each one comes right after a commit. The
readers' cache (:mod:`kpilot.compute.rollup_cache`) unions in the sets a write appended and applies its
merges (the store's change log tells it both); without that knowledge it reads every set again. This benchmark imports a generated data set
(``benchmarks/generator.py``; the ``.json`` manifest beside it gives the days), warms the cache with the
rollup queries of the standard workload, then repeats: write a batch of live-like events (new and returning
persons on the data set's last day, and identifies that merge a known person with an anonymous one of the
previous write), and time
each rollup query once; both ways, in one run:

* ``refresh``: the store's change log tells the cache what the write appended (the default);
* ``reload``: the cache is emptied after the write, so the queries read everything again (what every query
  after a write did before the change log).

Every answer of both ways is compared with the other's; the run fails if they differ.

    python -m benchmarks.query_after_write --data DATA.parquet [--writes 5] [--batch 10000] [--merges 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.run import PROJECT, import_worker
from benchmarks.workload import canonical, workload

ROOT = Path(__file__).resolve().parent.parent
ROLLUP_QUERIES = ("dau", "wau", "mau", "dau_mau", "stickiness", "retention")


def live_batch(
    rng: np.random.Generator, day: date, n: int, persons: int, merges: float, tag: str, anonymous: list[str]
) -> list[Any]:
    """``n`` events on ``day``: page views of known and new persons, page views of new anonymous ids, and
    identifies that link a known person to an anonymous id of the previous batch (``anonymous``, replaced by
    this batch's), each of which merges two stored persons."""
    from kpilot.collect.normalize import Normalized

    start = datetime.combine(day, datetime.min.time())

    def at() -> datetime:
        return start + timedelta(seconds=float(rng.uniform(0, 86_399)))

    k = int(n * merges)
    out = [
        Normalized(uuid=f"{tag}-id-{i}", event="$identify", distinct_id=f"u{int(rng.integers(0, persons))}",
                   timestamp=at(), properties={"$anon_distinct_id": anon})
        for i, anon in enumerate(anonymous[:k])
    ]  # fmt: skip
    fresh = [f"anon-{tag}-{i}" for i in range(k)]
    out += [
        Normalized(uuid=f"{tag}-anon-{i}", event="$pageview", distinct_id=who, timestamp=at(), properties={})
        for i, who in enumerate(fresh)
    ]
    out += [
        Normalized(uuid=f"{tag}-{i}", event="$pageview", distinct_id=f"u{int(rng.integers(0, persons * 2))}",
                   timestamp=at(), properties={})
        for i in range(n - len(out))
    ]  # fmt: skip
    anonymous[:] = fresh
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--writes", type=int, default=5, help="writes (each followed by the queries) per way")
    ap.add_argument("--batch", type=int, default=10_000, help="events per write")
    ap.add_argument("--merges", type=float, default=0.01, help="share of a write's events that merge persons")
    ap.add_argument(
        "--work", type=Path, default=None, help="directory for the workspace (default: a temp dir)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/query_after_write.json")
    ap.add_argument("--md", type=Path, default=ROOT / "benchmarks/results/query_after_write.md")
    args = ap.parse_args()

    from kpilot.compute import rollup_cache
    from kpilot.compute.engine import DuckDBEngine, run_query
    from kpilot.compute.spec import parse_spec
    from kpilot.workspace import Workspace

    manifest = json.loads(args.data.with_suffix(".json").read_text())["params"]
    first, days = date.fromisoformat(manifest["start"]), int(manifest["days"])
    last = first + timedelta(days=days - 1)
    queries = [(n, s) for n, s in workload(first, days) if n in ROLLUP_QUERIES]
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        home = Path(tmp) / "ws"
        imported = import_worker(home, args.data, "UTC")
        ws = Workspace.open(home)
        try:
            project = ws.project(PROJECT)
            engine = DuckDBEngine(ws.store, rollups=True)
            rng = np.random.default_rng(11)

            def run_all() -> tuple[dict[str, float], dict[str, Any]]:
                times, answers = {}, {}
                for name, spec in queries:
                    t0 = time.perf_counter()
                    got = run_query(engine, project, parse_spec(spec))
                    times[name] = (time.perf_counter() - t0) * 1000
                    assert engine.last_source == "rollups", (name, engine.last_source)
                    answers[name] = canonical(name, got)
                return times, answers

            run_all()  # warm: every set the queries need is in the cache
            warm, _ = run_all()
            per_way: dict[str, list[dict[str, float]]] = {"refresh": [], "reload": []}
            anonymous: list[str] = []
            write_ms: list[float] = []
            for i in range(args.writes):
                for way in ("refresh", "reload"):
                    batch = live_batch(
                        rng, last, args.batch, int(manifest["persons"]), args.merges, f"{way}{i}", anonymous
                    )
                    t0 = time.perf_counter()
                    ws.store.write_batch(project.id, batch)
                    write_ms.append((time.perf_counter() - t0) * 1000)
                    if way == "reload":
                        rollup_cache._CACHES.pop(ws.store, None)  # what every query after a write did before
                    times, answers = run_all()
                    per_way[way].append(times)
                    rollup_cache._CACHES.pop(ws.store, None)
                    _, fresh = run_all()
                    if answers != fresh:
                        raise SystemExit(f"{way}: answers after write {i} differ from a fresh read")
        finally:
            ws.close()

    def med(way: str, name: str) -> float:
        return round(statistics.median(t[name] for t in per_way[way]), 1)

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "data": args.data.name,
        "events": imported["rows_read"],
        "writes_per_way": args.writes,
        "events_per_write": args.batch,
        "merge_share": args.merges,
        "write_ms_median": round(statistics.median(write_ms), 1),
        "warm_ms": {n: round(v, 1) for n, v in warm.items()},
        "first_after_write_ms": {
            way: {n: med(way, n) for n, _ in queries}
            | {"total": round(statistics.median(sum(t.values()) for t in per_way[way]), 1)}
            for way in per_way
        },
        "runs_ms": per_way,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    after = result["first_after_write_ms"]
    lines = [
        "# The first rollup query after a write",
        "",
        f"Run {result['date']} on {result['machine']['cpus']} CPUs, Python {result['machine']['python']}: "
        f"{result['events']:,} events imported from `{args.data.name}`, then {args.writes} writes of "
        f"{args.batch:,} live-like events each way ({args.merges:.0%} of them merging two stored persons), "
        "each followed by the rollup queries of the dashboard workload (`benchmarks/query_after_write.py`). "
        "*refresh*: the cache unions in the sets the write appended and applies its merges, without reading "
        "the store; *reload*: it reads every set again (as before the change log). Median ms per query; every "
        "answer equals a fresh read's.",
        "",
        "| query | warm (cached, no write) | first after a write, refresh | first after a write, reload |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, _ in queries:
        lines.append(
            f"| {name} | {result['warm_ms'][name]} | {after['refresh'][name]} | {after['reload'][name]} |"
        )
    lines.append(
        f"| **all six** | {round(sum(result['warm_ms'].values()), 1)} | **{after['refresh']['total']}** | "
        f"**{after['reload']['total']}** |"
    )
    lines += ["", f"A write itself took {result['write_ms_median']} ms (median)."]
    args.md.write_text("\n".join(lines) + "\n")
    print(args.md.read_text())


if __name__ == "__main__":
    main()
