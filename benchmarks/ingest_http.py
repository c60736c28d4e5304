"""Ingestion benchmark over loopback HTTP (not a test): events/s, latency per batch, server memory.

Starts ``kpilot serve --port 0`` on a fresh workspace, then ``--clients`` threads each POST batches of
``--batch`` Segment track events to ``/v1/batch`` over keep-alive connections, as fast as the server
answers, for ``--duration`` seconds (after ``--warmup`` seconds that are not measured). Every event has a
unique messageId, so every event is stored (nothing is deduplicated). The server's resident memory is
sampled every second. Results go to a JSON file and a Markdown table.

    .venv/bin/python benchmarks/ingest_http.py --duration 60 --clients 8
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kpilot.keys import create_key, project_by_name  # noqa: E402
from kpilot.workspace import Workspace  # noqa: E402


def health(port: int) -> dict[str, Any]:
    """The server's /health: writer counters, events waiting to be stored, DuckDB's buffer memory."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/health")
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def flush(port: int, token: str) -> None:
    """Wait until the server stored every event it acknowledged (``POST /api/ingestion/flush``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        while True:
            conn.request("POST", "/api/ingestion/flush", b"{}", {"Authorization": f"Bearer {token}"})
            if json.loads(conn.getresponse().read())["flushed"]:
                return
    finally:
        conn.close()


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> tuple[int, int]:
    """Resident memory of the server process alone, and of the server with its prepare worker and the
    fork server it came from (both descend from the server process)."""
    own = rss_kib(pid)
    total = own
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == pid:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in cmdline and _descends(int(proc.name), pid):
            total += rss_kib(int(proc.name))
    return own, total


def _descends(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is on ``pid``'s parent chain."""
    for _ in range(5):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == ancestor:
            return True
        if parent <= 1:
            return False
        pid = parent
    return False


class Client(threading.Thread):
    def __init__(
        self,
        n: int,
        port: int,
        key: str,
        batch: int,
        start: float,
        warm_end: float,
        end: float,
        interval: float | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.n, self.port, self.batch = n, port, batch
        # Open loop (``interval`` seconds between sends, staggered per client): latency counts from the
        # scheduled send time, so a stalled server is not hidden by clients that stop sending (no
        # coordinated omission). Closed loop (None): the next batch leaves when the reply arrived.
        self.interval = interval
        self.start_at, self.warm_end, self.end = start, warm_end, end
        self.auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        self.latencies: list[float] = []
        self.done_at: list[float] = []
        self.events = 0
        self.errors = 0

    def body(self, seq: int) -> bytes:
        sent = datetime.now(UTC)
        now = sent.isoformat()
        return orjson.dumps(
            {
                "batch": [
                    {
                        "type": "track",
                        "event": "bench_event" if i % 10 else "bench_signup",
                        "userId": f"user-{(self.n * 7919 + seq * 31 + i) % 50_000}",
                        "messageId": f"c{self.n}-{seq}-{i}",
                        "timestamp": (sent - timedelta(milliseconds=37 * (self.batch - i))).isoformat(),
                        "properties": {"plan": "pro" if i % 3 else "free", "value": i, "path": "/pricing"},
                        "context": {"library": {"name": "bench", "version": "1"}},
                    }
                    for i in range(self.batch)
                ],
                "sentAt": now,
            }
        )

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        seq = 0
        scheduled = self.start_at + (self.interval or 0.0) * (self.n / 16.0)
        while True:
            now = time.monotonic()
            if now >= self.end:
                break
            late = 0.0
            if self.interval is not None:
                wait = scheduled - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                    now = time.monotonic()
                late = max(0.0, now - scheduled)
                scheduled += self.interval
            body = self.body(seq)
            seq += 1
            t0 = time.perf_counter() - late
            try:
                conn.request(
                    "POST",
                    "/v1/batch",
                    body,
                    {"Content-Type": "application/json", "Authorization": self.auth},
                )
                reply = conn.getresponse()
                reply.read()
                ok = reply.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            elapsed = time.perf_counter() - t0
            if now >= self.warm_end:
                if ok:
                    self.latencies.append(elapsed)
                    self.done_at.append(time.monotonic() - self.warm_end)
                    self.events += self.batch
                else:
                    self.errors += 1
        conn.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop: offer this many events/s in total on a fixed schedule (default: closed loop)",
    )
    parser.add_argument(
        "--no-rollups",
        action="store_true",
        help="serve with KPILOT_ROLLUPS=false: no rollup or session upkeep (what the upkeep costs)",
    )
    parser.add_argument(
        "--store-memory-limit", default=None, help="the server's KPILOT_STORE_MEMORY_LIMIT (e.g. 512MB)"
    )
    parser.add_argument(
        "--prepare-workers", type=int, default=None, help="the server's KPILOT_PREPARE_WORKERS"
    )
    parser.add_argument(
        "--commit-max-events", type=int, default=None, help="the server's KPILOT_COMMIT_MAX_EVENTS"
    )
    parser.add_argument(
        "--queue-max-events", type=int, default=None, help="the server's KPILOT_QUEUE_MAX_EVENTS"
    )
    parser.add_argument("--id-index-mb", type=int, default=None, help="the server's KPILOT_ID_INDEX_MB")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ingest_http.json")
    parser.add_argument("--md", type=Path, default=ROOT / "benchmarks/results/ingest_http.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kpilot-bench-") as tmp:
        home = Path(tmp) / "ws"
        with Workspace.init(home) as ws:
            ws.create_project("bench")
            key = create_key(ws.meta, project_by_name(ws.meta, "bench")).key
        env = {k: v for k, v in os.environ.items() if not k.startswith("KPILOT_")}
        env["PYTHONPATH"] = str(ROOT / "src")
        if args.no_rollups:
            env["KPILOT_ROLLUPS"] = "false"
        if args.store_memory_limit:
            env["KPILOT_STORE_MEMORY_LIMIT"] = args.store_memory_limit
        if args.prepare_workers is not None:
            env["KPILOT_PREPARE_WORKERS"] = str(args.prepare_workers)
        if args.commit_max_events is not None:
            env["KPILOT_COMMIT_MAX_EVENTS"] = str(args.commit_max_events)
        if args.queue_max_events is not None:
            env["KPILOT_QUEUE_MAX_EVENTS"] = str(args.queue_max_events)
        if args.id_index_mb is not None:
            env["KPILOT_ID_INDEX_MB"] = str(args.id_index_mb)
        log = (Path(tmp) / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kpilot", "--home", str(home), "serve", "--port", "0"],
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 60
            info = None
            while time.monotonic() < deadline and info is None:
                try:
                    data = json.loads((home / "server.json").read_text())
                    info = data if data["pid"] == proc.pid else None
                except (OSError, ValueError):
                    time.sleep(0.1)
            if info is None:
                raise SystemExit("server did not start")
            port = int(info["port"])
            start = time.monotonic()
            warm_end = start + args.warmup
            end = warm_end + args.duration
            interval = args.clients * args.batch / args.rate if args.rate else None
            clients = [
                Client(n, port, key, args.batch, start, warm_end, end, interval) for n in range(args.clients)
            ]
            memory: list[tuple[float, int]] = []
            memory_tree: list[tuple[float, int]] = []
            load_start = os.getloadavg()
            for c in clients:
                c.start()
            store_memory: list[tuple[float, int]] = []
            id_index: list[tuple[float, int]] = []
            id_index_disk: list[tuple[float, int]] = []
            backlog: list[tuple[float, int]] = []
            stored_at_warm_end: int | None = None
            while time.monotonic() < end:
                t = round(time.monotonic() - start, 1)
                own, total = tree_rss_kib(proc.pid)
                memory.append((t, own))
                memory_tree.append((t, total))
                state = health(port)
                backlog.append((t, int(state["pending_events"])))
                if stored_at_warm_end is None and time.monotonic() >= warm_end:
                    stored_at_warm_end = int(state["writer"]["events_stored"])
                if len(memory) % 10 == 1:
                    store_memory.append((t, int(state.get("store_memory_bytes", 0)) // 1024))
                    id_index.append((t, int(state.get("id_index_bytes", 0)) // 1024))
                    id_index_disk.append((t, int(state.get("id_index_disk_bytes", 0)) // 1024))
                time.sleep(1.0)
            for c in clients:
                c.join()
            load_end = os.getloadavg()
            flush(port, str(info["token"]))
            drained = time.monotonic() - end
            final = health(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            log.close()

    latencies = [lat for c in clients for lat in c.latencies]
    events = sum(c.events for c in clients)
    measured = [m for t, m in memory if t >= args.warmup]
    measured_tree = [m for t, m in memory_tree if t >= args.warmup]
    window = 10.0
    per_window = [0] * max(1, int(args.duration // window))
    for c in clients:
        for t in c.done_at:
            per_window[min(len(per_window) - 1, int(t // window))] += args.batch
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "note": "clients run on the same machine as the server and share its CPUs",
        "load_average_1m": {"start": round(load_start[0], 2), "end": round(load_end[0], 2)},
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "clients": args.clients,
        "offered_events_per_s": args.rate,
        "rollups": not args.no_rollups,
        "store_memory_limit": args.store_memory_limit,
        "batch_size": args.batch,
        "requests": len(latencies),
        "errors": sum(c.errors for c in clients),
        "events": events,
        "events_per_s": round(events / args.duration, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p90": round(percentile(latencies, 0.90) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
            "max": round(max(latencies, default=float("nan")) * 1000, 2),
            "mean": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        },
        "events_per_s_by_10s_window": [round(n / window, 1) for n in per_window],
        "stored_per_s": round(
            (final["writer"]["events_stored"] - (stored_at_warm_end or 0)) / (args.duration + drained), 1
        ),
        "drain_after_load_s": round(drained, 2),
        "backlog_max_events": max((b for _, b in backlog), default=0),
        "backlog_series_s_events": backlog,
        "server_writer": final["writer"],
        "server_rss_mib": {
            "first": round(measured[0] / 1024, 1) if measured else None,
            "last": round(measured[-1] / 1024, 1) if measured else None,
            "max": round(max(measured) / 1024, 1) if measured else None,
            "series_s_kib": memory,
            "with_workers_first": round(measured_tree[0] / 1024, 1) if measured_tree else None,
            "with_workers_last": round(measured_tree[-1] / 1024, 1) if measured_tree else None,
            "with_workers_max": round(max(measured_tree) / 1024, 1) if measured_tree else None,
            "with_workers_series_s_kib": memory_tree,
            "duckdb_buffers_series_s_kib": store_memory,
            "id_index_series_s_kib": id_index,
            "id_index_disk_series_s_kib": id_index_disk,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    rss = result["server_rss_mib"]
    writer = final["writer"]
    args.md.write_text(
        "# Ingestion over HTTP (loopback)\n\n"
        f"Run {result['date']} on {result['machine']['cpus']} CPUs, Python {result['machine']['python']}; "
        f"{args.clients} concurrent clients on the same machine, "
        + (
            f"open loop at {args.rate:,.0f} events/s offered (latency from each batch's scheduled send time), "
            if args.rate
            else "closed loop (each client sends its next batch when the reply arrived), "
        )
        + f"batches of {args.batch} Segment track events "
        f"to `/v1/batch`, {args.duration:g} s measured after {args.warmup:g} s warm-up "
        f"(`benchmarks/ingest_http.py`). The machine was shared: 1-minute load average "
        f"{result['load_average_1m']['start']} at the start, {result['load_average_1m']['end']} at the end.\n\n"
        + (
            "Server settings: "
            + ", ".join(
                f"`{k}={v}`"
                for k, v in (
                    ("KPILOT_ROLLUPS", "false" if args.no_rollups else None),
                    ("KPILOT_STORE_MEMORY_LIMIT", args.store_memory_limit),
                    ("KPILOT_PREPARE_WORKERS", args.prepare_workers),
                    ("KPILOT_COMMIT_MAX_EVENTS", args.commit_max_events),
                    ("KPILOT_QUEUE_MAX_EVENTS", args.queue_max_events),
                    ("KPILOT_ID_INDEX_MB", args.id_index_mb),
                )
                if v is not None
            )
            + ".\n\n"
            if args.no_rollups
            or args.store_memory_limit
            or args.prepare_workers is not None
            or args.commit_max_events is not None
            or args.queue_max_events is not None
            or args.id_index_mb is not None
            else ""
        )
        + "Acknowledged means flushed to the ingestion log; *stored/s* counts events applied to the event "
        "store from the end of the warm-up until the backlog was drained after the load stopped.\n\n"
        "| acknowledged events/s | stored events/s | drain after load s | max backlog events | requests | errors | "
        "p50 ms | p90 ms | p99 ms | max ms | log flushes | store commits | RSS first → last (max) MiB | "
        "with workers MiB |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n"
        f"| {result['events_per_s']:,.0f} | {result['stored_per_s']:,.0f} | {result['drain_after_load_s']} | "
        f"{result['backlog_max_events']:,} | {result['requests']} | {result['errors']} | {lat['p50']} | "
        f"{lat['p90']} | {lat['p99']} | {lat['max']} | {writer['log_flushes']} | {writer['commits']} | "
        f"{rss['first']} → {rss['last']} ({rss['max']}) | "
        f"{rss['with_workers_first']} → {rss['with_workers_last']} ({rss['with_workers_max']}) |\n"
        + memory_table(memory, store_memory, id_index, id_index_disk)
    )
    print(args.md.read_text())


def memory_table(
    rss: list[tuple[float, int]],
    buffers: list[tuple[float, int]],
    index: list[tuple[float, int]],
    disk: list[tuple[float, int]],
) -> str:
    """The server's memory about once a minute: resident, DuckDB's buffers, the id index in memory and the
    id index's run files on disk (MiB)."""
    if not buffers:
        return ""
    rss_at = dict(rss)
    lines = [
        "",
        "Server memory over the run (MiB; the id index's run files are on disk, not in memory):",
        "",
        "| s | resident | DuckDB buffers | id index | resident - buffers - id index | id index files |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    step = max(1, len(buffers) // 12)
    picks = sorted(set(range(0, len(buffers), step)) | {len(buffers) - 1})
    for i in picks:
        t = buffers[i][0]
        res, buf, idx, dsk = (
            rss_at.get(t, 0) / 1024,
            buffers[i][1] / 1024,
            index[i][1] / 1024,
            disk[i][1] / 1024,
        )
        lines.append(f"| {t:g} | {res:.0f} | {buf:.0f} | {idx:.0f} | {res - buf - idx:.0f} | {dsk:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
