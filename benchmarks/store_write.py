"""The store's write path without HTTP (not a test): microseconds per event, phase by phase.

What the server's apply thread does, in one process: batches of ``--batch`` live-like events (the
ingestion benchmark's shape: ``--persons`` users, each batch's timestamps advancing as if ``--rate`` events
a second arrived) written with :meth:`EventStore.write_arrow` into a store whose project has its rollups,
sessions and session day aggregates built (as every served project has). The canonical tables are made
before the clock starts, so only the store's work is timed. Each phase is timed by wrapping the store's
own functions; ``insert+rest`` is what is left of the transaction (staging, the INSERT, ingest stats).

    .venv/bin/python -m benchmarks.store_write --batches 100 --json out.json

``--no-upkeep`` writes with rollup and session upkeep off (the store drops them), for the upkeep's share.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kpilot.store import rollup_store, session_store  # noqa: E402
from kpilot.store.duckdb_store import EventStore, uuid_hash  # noqa: E402

PHASES = ("dedupe", "identity", "rollups", "sessions", "session_days", "commit", "insert+rest")


def batches(n: int, size: int, persons: int, rate: float, seed: int) -> list[pa.Table]:
    """``n`` canonical event tables of ``size`` rows; batch k covers ``size / rate`` seconds after the last."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 11, 30, 8, 0, 0)
    span_us = int(size / rate * 1e6)
    out = []
    for k in range(n):
        who = rng.integers(0, persons, size)
        offs = np.sort(rng.integers(0, span_us, size))
        ts = (np.datetime64(t0, "us") + (k * span_us + offs).astype("timedelta64[us]")).astype(
            "datetime64[us]"
        )
        uuids = [f"b{seed}-{k}-{i}" for i in range(size)]
        table = pa.table(
            {
                "uuid": pa.array(uuids, pa.string()),
                "event": pa.array(["bench_signup" if i % 10 == 0 else "bench_event" for i in range(size)]),
                "distinct_id": pa.array([f"user-{w}" for w in who.tolist()], pa.string()),
                "timestamp": pa.array(ts, pa.timestamp("us")),
                "properties": pa.array(['{"plan":"pro","value":1}'] * size, pa.string()),
                "received_at": pa.array(ts, pa.timestamp("us")),
                "uuid_hash": pa.array([uuid_hash(u) for u in uuids], pa.uint64()),
            }
        )
        out.append(table)
    return out


class PhaseClock:
    """Seconds spent in each wrapped function, per batch (nested phases are subtracted from their parent)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        fn: Callable[..., Any] = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(phase)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                self._stack.pop()
                self.current[phase] += dt
                if self._stack:
                    self.current[self._stack[-1]] -= dt

        setattr(owner, name, timed)

    def commit_hooks(self) -> None:
        began: list[float] = []
        begins, ended = rollup_store.commit_begins, rollup_store.commit_ended

        def on_begin(store: Any) -> None:
            began.append(time.perf_counter())
            begins(store)

        def on_end(store: Any) -> None:
            ended(store)
            self.current["commit"] += time.perf_counter() - began.pop()

        rollup_store.commit_begins = on_begin  # type: ignore[assignment]
        rollup_store.commit_ended = on_end  # type: ignore[assignment]

    @classmethod
    def of_store(cls, write: bool = False) -> PhaseClock:
        """A clock of the write path's phases (dedupe, identity, rollups, sessions, session_days, commit;
        with ``write``, the rest of ``write_arrow`` too)."""
        clock = cls()
        clock.wrap(EventStore, "_drop_stored_duplicates", "dedupe")
        clock.wrap(EventStore, "_resolve_identity", "identity")
        clock.wrap(EventStore, "_maintain_rollups", "rollups")
        clock.wrap(session_store, "maintain", "sessions")
        clock.wrap(session_store, "_update_days", "session_days")
        if write:
            clock.wrap(EventStore, "write_arrow", "write")
        clock.commit_hooks()
        return clock

    def take(self) -> dict[str, float]:
        out, self.current = dict(self.current), defaultdict(float)
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--persons", type=int, default=50_000)
    p.add_argument("--rate", type=float, default=50_000.0, help="simulated events per second of traffic")
    p.add_argument("--memory-limit", default="512MB")
    p.add_argument("--no-upkeep", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.add_argument("--label", default="")
    args = p.parse_args()

    print(f"making {args.batches} batches of {args.batch} events ...", file=sys.stderr)
    tables = batches(args.batches, args.batch, args.persons, args.rate, args.seed)
    clock = PhaseClock.of_store()
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore(Path(tmp) / "events.duckdb", memory_limit=args.memory_limit)
        # an empty project with its rollups, sessions and day aggregates built, as a served project has
        store.ensure_rollups(1, "UTC")
        store.maintain_rollups = not args.no_upkeep
        for k, table in enumerate(tables):
            t = time.perf_counter()
            store.write_arrow(1, table, [], [])
            total = time.perf_counter() - t
            phases = clock.take()
            phases["insert+rest"] = total - sum(phases.values())
            phases["total"] = total
            rows.append(phases)
            if (k + 1) % 10 == 0:
                last = rows[-10:]
                us = 1e6 / args.batch
                parts = "  ".join(
                    f"{ph} {statistics.fmean(r.get(ph, 0.0) for r in last) * us:5.1f}" for ph in PHASES
                )
                print(
                    f"batches {k - 8:4d}-{k + 1:4d}: {statistics.fmean(r['total'] for r in last) * us:5.1f} us/event"
                    f"  ({parts})",
                    file=sys.stderr,
                )
        store.close()
    us = 1e6 / args.batch
    summary = {ph: statistics.fmean(r.get(ph, 0.0) for r in rows) * us for ph in (*PHASES, "total")}
    second_half = rows[len(rows) // 2 :]
    result = {
        "label": args.label,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "us_per_event": summary,
        "us_per_event_second_half": statistics.fmean(r["total"] for r in second_half) * us,
        "events_per_second": args.batch / statistics.fmean(r["total"] for r in rows),
    }
    print(json.dumps(result["us_per_event"], indent=1), file=sys.stderr)
    print(
        f"mean {summary['total']:.1f} us/event = {result['events_per_second']:,.0f} events/s; "
        f"second half {result['us_per_event_second_half']:.1f} us/event",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
