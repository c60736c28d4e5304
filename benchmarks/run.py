"""The benchmark harness: generate, import, run every implementation, check agreement, report.

Steps (``python -m benchmarks.run --events N --persons P --days D``):

1. Generate the synthetic product (:mod:`benchmarks.generator`) as Parquet, unless the same parameters were
   generated before in the work directory.
2. Import it into a fresh kpilot workspace with kpilot's bulk importer, timing events/s (Parquet), and import
   the first ``--jsonl-events`` events as JSON lines into another fresh workspace (events/s for JSONL).
3. Run the workload (:mod:`benchmarks.workload`) with kpilot's engine and with each plain implementation,
   each in its own process: a cold pass (new process: open or load the data, then every query once), then
   ``--repeat`` warm passes in the same process; per query the warm time is the median of the warm passes.
   Each process reports its peak resident memory (``VmHWM``).
4. Check that every implementation gives the same numbers as kpilot (and the plain ones as each other); any
   difference fails the run, listing the differences.
5. Write ``results/<scale>.json`` and rebuild the Markdown summary ``results/README.md`` from every result
   file there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from benchmarks.generator import Params, generate, to_jsonl
from benchmarks.workload import canonical, compare, workload

__all__ = ["IMPLS", "Config", "main", "run_benchmark", "write_readme"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
RAW = "kpilot_events"
"""kpilot with its rollups switched off (``DuckDBEngine(rollups=False)``): every query on raw events."""
IMPLS = ("kpilot", RAW, "duckdb_sql", "polars", "pandas")
PROJECT = "bench"


class DisagreementError(AssertionError):
    """Two implementations gave different numbers for the same workload query."""


@dataclass(frozen=True, slots=True)
class Config:
    params: Params
    work: Path
    timezone: str = "UTC"
    impls: tuple[str, ...] = IMPLS
    repeat: int = 3
    jsonl_events: int = 0
    isolate: bool = True
    """Run each implementation in its own process (needed for per-implementation peak memory)."""
    reuse_workspace: bool = False
    """Skip the imports when the workspace of this scale already exists (no import numbers then)."""
    label: str = ""
    """Appended to the scale in the result file name and heading."""
    import_without_rollups: bool = True
    """Also import the Parquet file with rollups off, to measure what maintaining them costs."""

    @property
    def tag(self) -> str:
        p = self.params
        return f"{_human(p.events)}ev-{_human(p.persons)}p-{p.days}d"


def _human(n: int) -> str:
    for div, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return str(n)


def _peak_mib() -> float:
    """This process's peak resident memory in MiB.

    Linux's ``VmHWM`` is reset by ``exec``; ``ru_maxrss`` is not (a child would report its parent's peak
    when that is higher), so it is only the fallback.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---- workers (run in a child process, or in-process for tests) ---------------------------------------------
def import_worker(home: Path, data: Path, timezone: str, rollups: bool = True) -> dict[str, Any]:
    """Import ``data`` into a new workspace at ``home``; the time includes the final checkpoint.

    With ``rollups`` off the store keeps no rollup (``KPILOT_ROLLUPS=false``), for the cost comparison.
    """
    from kpilot.collect.importer import import_events
    from kpilot.workspace import Workspace

    saved = os.environ.get("KPILOT_ROLLUPS")
    os.environ["KPILOT_ROLLUPS"] = "true" if rollups else "false"
    try:
        ws = Workspace.init(home)
        project = ws.create_project(PROJECT, timezone)
        t0 = time.perf_counter()
        report = import_events(ws, project, [data])
        ws.store.checkpoint()
        seconds = time.perf_counter() - t0
        ws.close()
    finally:
        if saved is None:
            os.environ.pop("KPILOT_ROLLUPS", None)
        else:
            os.environ["KPILOT_ROLLUPS"] = saved
    return {
        "file": data.name,
        "rollups": rollups,
        "rows_read": report.rows_read,
        "imported": report.imported,
        "rejected": report.rejected,
        "seconds": round(seconds, 3),
        "events_per_s": round(report.rows_read / seconds) if seconds else None,
        "peak_mib": _peak_mib(),
    }


def _kpilot_runner(home: Path, rollups: bool = True) -> tuple[Any, Any]:
    from kpilot.compute.engine import DuckDBEngine, run_query
    from kpilot.compute.spec import parse_spec
    from kpilot.workspace import Workspace

    ws = Workspace.open(home, read_only=True)
    project = ws.project(PROJECT)
    engine = DuckDBEngine(ws.store, rollups=rollups)

    def run(name: str, spec: dict[str, Any]) -> Any:
        return canonical(name, run_query(engine, project, parse_spec(spec)))

    return run, ws


def _plain(name: str) -> Any:
    if name == "pandas":
        from benchmarks.plain.pandas_impl import PandasImpl

        return PandasImpl()
    if name == "polars":
        from benchmarks.plain.polars_impl import PolarsImpl

        return PolarsImpl()
    if name == "duckdb_sql":
        from benchmarks.plain.duckdb_impl import DuckDBImpl

        return DuckDBImpl()
    raise ValueError(f"unknown implementation {name!r}; expected one of {', '.join(IMPLS)}")


def query_worker(
    impl: str, home: Path, data: Path, timezone: str, params: Params, repeat: int
) -> dict[str, Any]:
    """Cold pass then ``repeat`` warm passes of the workload; results of the cold pass, times, peak memory."""
    queries = workload(params.start, params.days)
    if impl in ("kpilot", RAW):
        import kpilot.compute.engine  # module imports are not part of the measured time
        import kpilot.compute.rollups
        import kpilot.workspace  # noqa: F401
    else:
        plain = _plain(impl)  # imports the library
    t0 = time.perf_counter()
    if impl in ("kpilot", RAW):
        run, _keep = _kpilot_runner(home, rollups=impl == "kpilot")
    else:
        plain.load([str(data)], timezone)
        run = plain.run
    load_s = time.perf_counter() - t0
    results: dict[str, Any] = {}
    cold: dict[str, float] = {}
    for name, spec in queries:
        q0 = time.perf_counter()
        results[name] = run(name, spec)
        cold[name] = time.perf_counter() - q0
    warm_runs: dict[str, list[float]] = {name: [] for name, _ in queries}
    for _ in range(repeat):
        for name, spec in queries:
            q0 = time.perf_counter()
            run(name, spec)
            warm_runs[name].append(time.perf_counter() - q0)
    warm = {name: statistics.median(v) for name, v in warm_runs.items() if v}
    return {
        "impl": impl,
        "load_s": round(load_s, 4),
        "cold_total_s": round(load_s + sum(cold.values()), 4),
        "warm_total_s": round(sum(warm.values()), 4) if warm else None,
        "per_query": {
            name: {"cold_s": round(cold[name], 5), "warm_s": round(warm[name], 5) if name in warm else None}
            for name, _ in queries
        },
        "peak_mib": _peak_mib(),
        "results": results,
    }


def _in_child(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "benchmarks.run", "--worker", kind, json.dumps(payload), str(out)]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _dispatch(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    if kind == "import":
        return import_worker(
            Path(payload["home"]), Path(payload["data"]), payload["timezone"], payload.get("rollups", True)
        )
    if kind == "query":
        params = Params(**{**payload["params"], "start": date.fromisoformat(payload["params"]["start"])})
        return query_worker(
            payload["impl"],
            Path(payload["home"]),
            Path(payload["data"]),
            payload["timezone"],
            params,
            int(payload["repeat"]),
        )
    raise ValueError(kind)


def _run(cfg: Config, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return _in_child(kind, payload) if cfg.isolate else _dispatch(kind, payload)


# ---- the harness -------------------------------------------------------------------------------------------
def _dataset(cfg: Config, log: Any) -> tuple[Path, dict[str, Any]]:
    p = cfg.params
    data = cfg.work / f"data-{cfg.tag}-s{p.seed}.parquet"
    manifest = data.with_suffix(".json")
    if data.exists() and manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("params") == p.as_dict():
            log(f"reusing {data}")
            return data, dict(saved["generated"])
    log(f"generating {p.events:,} events, {p.persons:,} persons, {p.days} days -> {data}")
    report = generate(p, data)
    generated = {
        "events": report.events,
        "identifies": report.identifies,
        "second_device_merges": report.late_merges,
        "seconds": report.seconds,
        "per_event": report.per_event,
        "parquet_mib": round(data.stat().st_size / 2**20, 1),
    }
    manifest.write_text(json.dumps({"params": p.as_dict(), "generated": generated}, indent=2))
    return data, generated


def _fresh(path: Path) -> Path:
    import shutil

    if path.exists():
        shutil.rmtree(path)
    return path


def check_agreement(results: dict[str, dict[str, Any]], limit: int = 20) -> list[str]:
    """Differences of every implementation from the first one (kpilot when it ran), per query."""
    names = list(results)
    if not names:
        return []
    ref = names[0]
    diffs: list[str] = []
    for other in names[1:]:
        for query, expected in results[ref].items():
            found = compare(expected, results[other].get(query), query)
            diffs += [f"{other} vs {ref}: {d}" for d in found[:limit]]
            if len(found) > limit:
                diffs.append(f"{other} vs {ref}: {query}: ... {len(found) - limit} more")
    return diffs


def run_benchmark(cfg: Config, log: Any = print) -> dict[str, Any]:
    """Run everything and return the result record; raises :class:`DisagreementError` on any difference."""
    cfg.work.mkdir(parents=True, exist_ok=True)
    data, generated = _dataset(cfg, log)
    out: dict[str, Any] = {
        "scale": cfg.tag + (f"-{cfg.label}" if cfg.label else ""),
        "params": cfg.params.as_dict(),
        "timezone": cfg.timezone,
        "run_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "machine": _machine(),
        "generated": generated,
        "import": {},
        "impls": {},
    }
    home = cfg.work / f"ws-{cfg.tag}"
    if cfg.reuse_workspace and home.exists():
        log(f"reusing the workspace {home} (no import measured)")
    else:
        _fresh(home)
        log("importing Parquet with kpilot's bulk importer ...")
        out["import"]["parquet"] = _run(
            cfg, "import", {"home": str(home), "data": str(data), "timezone": cfg.timezone}
        )
        log(f"  {out['import']['parquet']}")
        if cfg.import_without_rollups:
            nohome = _fresh(cfg.work / f"ws-{cfg.tag}-norollups")
            log("importing Parquet again with rollups off (their maintenance cost) ...")
            out["import"]["parquet_without_rollups"] = _run(
                cfg,
                "import",
                {"home": str(nohome), "data": str(data), "timezone": cfg.timezone, "rollups": False},
            )
            log(f"  {out['import']['parquet_without_rollups']}")
            _fresh(nohome)
            with_r = out["import"]["parquet"]["seconds"]
            without = out["import"]["parquet_without_rollups"]["seconds"]
            out["import"]["rollup_cost"] = {
                "extra_seconds": round(with_r - without, 3),
                "throughput_loss": round(1 - without / with_r, 4) if with_r else None,
            }
    if cfg.jsonl_events and "parquet" in out["import"]:
        jsonl = cfg.work / f"data-{cfg.tag}-s{cfg.params.seed}-first{cfg.jsonl_events}.jsonl"
        if not jsonl.exists():
            to_jsonl(data, jsonl, cfg.jsonl_events)
        jhome = _fresh(cfg.work / f"ws-{cfg.tag}-jsonl")
        log(f"importing the first {cfg.jsonl_events:,} events as JSONL ...")
        out["import"]["jsonl"] = _run(
            cfg, "import", {"home": str(jhome), "data": str(jsonl), "timezone": cfg.timezone}
        )
        log(f"  {out['import']['jsonl']}")
        _fresh(jhome)
    results: dict[str, dict[str, Any]] = {}
    for impl in cfg.impls:
        log(f"running the workload with {impl} ...")
        payload = {
            "impl": impl,
            "home": str(home),
            "data": str(data),
            "timezone": cfg.timezone,
            "params": cfg.params.as_dict(),
            "repeat": cfg.repeat,
        }
        rec = _run(cfg, "query", payload)
        results[impl] = rec.pop("results")
        out["impls"][impl] = rec
        log(
            f"  load {rec['load_s']} s, cold {rec['cold_total_s']} s, warm {rec['warm_total_s']} s, peak {rec['peak_mib']} MiB"
        )
    diffs = check_agreement(results)
    out["agreement"] = {"ok": not diffs, "checked": list(results), "differences": diffs}
    out["ratios"] = _ratios(out["impls"])
    if diffs:
        raise DisagreementError("implementations disagree:\n" + "\n".join(diffs))
    return out


def _ratios(impls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Time and memory of each plain implementation divided by kpilot's (above 1: kpilot is ahead).

    ``kpilot_events`` (kpilot on raw events, rollups off) is compared the same way.
    """
    k = impls.get("kpilot")
    if not k:
        return {}
    out: dict[str, Any] = {}
    for name, rec in impls.items():
        if name == "kpilot":
            continue
        out[name] = {
            "warm": _div(rec["warm_total_s"], k["warm_total_s"]),
            "cold": _div(rec["cold_total_s"], k["cold_total_s"]),
            "peak_memory": _div(rec["peak_mib"], k["peak_mib"]),
        }
    plain = [n for n in impls if n not in ("kpilot", RAW) and impls[n]["warm_total_s"] is not None]
    if plain:
        fastest = min(plain, key=lambda n: impls[n]["warm_total_s"])
        out["fastest_plain"] = {"impl": fastest, "warm_speedup": out[fastest]["warm"]}
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _machine() -> dict[str, Any]:
    import duckdb

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "platform": platform.platform(),
    }


# ---- reporting ---------------------------------------------------------------------------------------------
def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def write_readme(results_dir: Path) -> Path:
    """Rebuild ``README.md`` in ``results_dir`` from every ``*.json`` result there (largest scale first)."""
    records = []
    for f in sorted(results_dir.glob("*.json")):
        try:
            record = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "impls" in record and "params" in record:
            records.append(record)  # other benchmarks (ingest_http*.json) share the folder
    records.sort(key=lambda r: -int(r["params"]["events"]))
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks.run` (see ../README.md for what is measured). Times are wall-clock on",
        "the machine listed; *warm* is the median of the warm passes summed over the workload; *cold* is a new",
        "process that opens the workspace (kpilot) or loads the Parquet file into memory (plain implementations)",
        "and runs every query once. Ratios are other time / kpilot time (above 1: kpilot is faster).",
        "`kpilot` is the product as shipped: queries its rollups can answer (per-day person bitmaps maintained",
        "by every import and ingestion write, cached in the reading process until the next write) come from",
        "them, session statistics from its materialised sessions and their per-day aggregates (maintained the",
        "same way), the rest (funnel) from raw events, which bulk imports store clustered by event name;",
        "`kpilot_events` is kpilot with rollups and sessions switched off (`KPILOT_ROLLUPS=false`).",
        "*parquet_without_rollups* is the same import with that upkeep off: the difference is what maintaining",
        "rollups and sessions costs.",
        "",
    ]
    for r in records:
        g, m = r["generated"], r["machine"]
        lines += [
            f"## {r['scale']} ({g['events']:,} events, {r['params']['persons']:,} persons, {r['params']['days']} days)",
            "",
            f"Run {r['run_at']} on {m['cpus']} CPUs / {m['memory_gib']} GiB, Python {m['python']}, DuckDB {m['duckdb']}. "
            f"Agreement: {'all implementations gave identical numbers' if r['agreement']['ok'] else 'DIFFERENCES'} "
            f"({', '.join(r['agreement']['checked'])}).",
            "",
        ]
        if r["import"]:
            lines += ["| import | events | seconds | events/s | peak memory |", "|---|---:|---:|---:|---:|"]
        else:
            lines.append("Imports were not measured in this run (it reused the workspace of an earlier one).")
        for fmt, rec in r["import"].items():
            if fmt == "rollup_cost":
                continue
            lines.append(
                f"| {fmt} | {rec['rows_read']:,} | {rec['seconds']:.1f} | {rec['events_per_s']:,} | {rec['peak_mib']:,.0f} MiB |"
            )
        if "rollup_cost" in r["import"]:
            cost = r["import"]["rollup_cost"]
            loss = cost["throughput_loss"]
            lines += [
                "",
                f"Maintaining the rollups and sessions during the Parquet import cost {cost['extra_seconds']} s "
                f"({'-' if loss is None else f'{loss:.1%}'} of import throughput).",
            ]
        impls = r["impls"]
        lines += [
            "",
            "| implementation | load | cold total | warm total | peak memory | warm ratio | cold ratio | memory ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, rec in impls.items():
            ratio = r["ratios"].get(name, {})
            lines.append(
                f"| {name} | {_fmt_s(rec['load_s'])} | {_fmt_s(rec['cold_total_s'])} | {_fmt_s(rec['warm_total_s'])} | "
                f"{rec['peak_mib']:,.0f} MiB | {ratio.get('warm', '-')} | {ratio.get('cold', '-')} | {ratio.get('peak_memory', '-')} |"
            )
        names = list(impls)
        queries = list(next(iter(impls.values()))["per_query"]) if impls else []
        lines += [
            "",
            "Warm time per query:",
            "",
            "| query | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for q in queries:
            lines.append(
                f"| {q} | " + " | ".join(_fmt_s(impls[n]["per_query"][q]["warm_s"]) for n in names) + " |"
            )
        if r.get("notes"):
            lines += ["", *r["notes"]]
        lines.append("")
    path = results_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _, kind, payload, out = argv
        Path(out).write_text(json.dumps(_dispatch(kind, json.loads(payload))))
        return 0
    d = Params()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--events", type=int, default=d.events)
    ap.add_argument("--persons", type=int, default=d.persons)
    ap.add_argument("--days", type=int, default=d.days)
    ap.add_argument("--start", type=date.fromisoformat, default=d.start)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--timezone", default="UTC", help="the project timezone (default UTC)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kpilot-bench")
    ap.add_argument("--impls", default=",".join(IMPLS), help="comma-separated, kpilot first")
    ap.add_argument("--repeat", type=int, default=3, help="warm passes per implementation")
    ap.add_argument(
        "--jsonl-events", type=int, default=0, help="also time a JSONL import of this many events"
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="where to write <scale>.json and README.md")
    ap.add_argument("--reuse-workspace", action="store_true", help="skip the imports if the workspace exists")
    ap.add_argument(
        "--no-import-without-rollups",
        action="store_true",
        help="skip the second Parquet import with rollups off (their maintenance cost)",
    )
    ap.add_argument("--label", default="", help="suffix for the result file name and heading")
    ap.add_argument("--note", action="append", default=[], help="a line added under this run in README.md")
    args = ap.parse_args(argv)
    cfg = Config(
        params=replace(
            d, events=args.events, persons=args.persons, days=args.days, start=args.start, seed=args.seed
        ),
        work=args.work,
        timezone=args.timezone,
        impls=tuple(i.strip() for i in args.impls.split(",") if i.strip()),
        repeat=args.repeat,
        jsonl_events=args.jsonl_events,
        reuse_workspace=args.reuse_workspace,
        label=args.label,
        import_without_rollups=not args.no_import_without_rollups,
    )
    try:
        record = run_benchmark(cfg, log=lambda m: print(m, flush=True))
    except DisagreementError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    record["notes"] = args.note
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{record['scale']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path} and {write_readme(args.results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
