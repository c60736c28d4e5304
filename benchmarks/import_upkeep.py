"""What the rollup and session upkeep costs an import into a project that already holds data.

An import smaller than the project keeps the rollup batch by batch and catches the sessions up at the end
(``KPILOT_IMPORT_UPKEEP=auto``, docs/rollups.md "Bulk imports"). This benchmark measures the cost the issue
budgets (at most 20% of import throughput): it imports ``--base`` into two template workspaces, one keeping
rollups and sessions and one without (``KPILOT_ROLLUPS=false``), then imports ``--extra`` into fresh copies of
each, alternately, ``--pairs`` times, each run in a process of its own. Every run's time includes the final
checkpoint; the phases inside the store (deduplication, identity, rollups, sessions, day aggregates, COMMIT)
are timed too (``benchmarks.store_write.PhaseClock``), since wall times on a shared 2-core machine vary by
10-20% from run to run while the phases are steadier.

    python -m benchmarks.import_upkeep --base BASE.parquet --extra EXTRA.parquet [--pairs 5]
        [--upkeep auto|incremental|deferred] [--work DIR] [--out F.json] [--md F.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run import PROJECT, import_worker

ROOT = Path(__file__).resolve().parent.parent


def one_run(template: Path, extra: Path, rollups: bool) -> dict[str, Any]:
    """Copy ``template`` and import ``extra`` into it; seconds (with the final checkpoint) and phases."""
    from benchmarks.store_write import PhaseClock
    from kpilot.collect.importer import import_events
    from kpilot.workspace import Workspace

    clock = PhaseClock.of_store(write=True)
    os.environ["KPILOT_ROLLUPS"] = "true" if rollups else "false"
    with tempfile.TemporaryDirectory(dir=template.parent) as tmp:
        home = Path(tmp) / "ws"
        shutil.copytree(template, home)
        ws = Workspace.open(home)
        project = ws.project(PROJECT)
        clock.take()
        t0 = time.perf_counter()
        report = import_events(ws, project, [extra])
        ws.store.checkpoint()
        seconds = time.perf_counter() - t0
        ws.close()
    phases = clock.take()
    return {
        "rollups": rollups,
        "imported": report.imported,
        "seconds": round(seconds, 3),
        "phases": {k: round(v, 3) for k, v in sorted(phases.items())},
    }


def _in_process(template: Path, extra: Path, rollups: bool, upkeep: str) -> dict[str, Any]:
    env = {**os.environ, "KPILOT_IMPORT_UPKEEP": upkeep, "PYTHONPATH": str(ROOT)}
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.import_upkeep",
            "--one",
            str(template),
            str(extra),
            str(int(rollups)),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(got.stdout.strip().splitlines()[-1]))


def _cost(on: float, off: float) -> float:
    """The share of throughput the upkeep costs: 1 - (events/s with) / (events/s without)."""
    return 1 - off / on


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Import upkeep: {Path(result['extra']).name} into a project holding {Path(result['base']).name}",
        "",
        f"`KPILOT_IMPORT_UPKEEP={result['upkeep']}`, {result['pairs']} pairs run alternately, each run in its own "
        f"process; {result['machine']}. Times include the final checkpoint.",
        "",
        "| pair | with upkeep s | without s | cost | rollups s | sessions s | day aggregates s | COMMIT s (with / without) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, (on, off) in enumerate(zip(result["with"], result["without"], strict=True), 1):
        p, q = on["phases"], off["phases"]
        lines.append(
            f"| {i} | {on['seconds']:.2f} | {off['seconds']:.2f} | {_cost(on['seconds'], off['seconds']):.1%} "
            f"| {p.get('rollups', 0):.2f} | {p.get('sessions', 0):.2f} | {p.get('session_days', 0):.2f} "
            f"| {p.get('commit', 0):.2f} / {q.get('commit', 0):.2f} |"
        )
    s = result["summary"]
    lines += [
        "",
        f"Cost of the summed times: **{s['cost_of_sums']:.1%}**; median of the pairs {s['median_cost']:.1%} "
        f"(range {s['min_cost']:.1%} to {s['max_cost']:.1%}). Budget: 20%.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="the data the project holds (Parquet)")
    ap.add_argument("--extra", type=Path, help="the data imported into it (Parquet)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--upkeep", default="auto", choices=("auto", "incremental", "deferred"))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--one", nargs=3, metavar=("TEMPLATE", "EXTRA", "ROLLUPS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(Path(args.one[0]), Path(args.one[1]), args.one[2] == "1")))
        return
    if args.base is None or args.extra is None:
        ap.error("--base and --extra are required")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        templates = {}
        for rollups in (True, False):
            home = Path(tmp) / ("with" if rollups else "without")
            print(f"importing {args.base.name} into {home.name} ...", file=sys.stderr)
            import_worker(home, args.base, "UTC", rollups=rollups)
            templates[rollups] = home
        runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for i in range(args.pairs):
            for rollups in (True, False) if i % 2 == 0 else (False, True):  # alternate which goes first
                got = _in_process(templates[rollups], args.extra, rollups, args.upkeep)
                runs[rollups].append(got)
                print(f"pair {i + 1} {'with' if rollups else 'without'}: {got['seconds']} s", file=sys.stderr)
    costs = [_cost(a["seconds"], b["seconds"]) for a, b in zip(runs[True], runs[False], strict=True)]
    result = {
        "benchmark": "import_upkeep",
        "base": str(args.base),
        "extra": str(args.extra),
        "upkeep": args.upkeep,
        "pairs": args.pairs,
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "with": runs[True],
        "without": runs[False],
        "summary": {
            "cost_of_sums": _cost(
                sum(r["seconds"] for r in runs[True]), sum(r["seconds"] for r in runs[False])
            ),
            "median_cost": statistics.median(costs),
            "min_cost": min(costs),
            "max_cost": max(costs),
        },
    }
    text = markdown(result)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.md:
        args.md.write_text(text)


if __name__ == "__main__":
    main()
