"""The columnar fast path of bulk import stores exactly what the per-row path stores.

Property tests import random files (simple and complex rows, bad rows, duplicates; JSONL, CSV and Parquet)
into two projects of one workspace, once through the fast path and once forcing the per-row path, and compare
everything that is stored or reported. Unit properties check the vectorised timestamp parsers against
``parse_timestamp``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpilot.collect import columnar
from kpilot.collect.importer import COLUMNAR_ENV, ImportReport, import_events
from kpilot.collect.normalize import RowError, normalize
from kpilot.collect.timestamps import parse_timestamp
from kpilot.meta.models import ImportRejection, ImportRun
from kpilot.workspace import ProjectInfo, Workspace

EPOCH = datetime(1970, 1, 1)
_names = count()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path_factory.mktemp("columnar") / "ws")
    yield workspace
    workspace.close()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few rows, so that files cross chunk boundaries (and batch boundaries differ from them)."""
    monkeypatch.setattr(columnar, "PARQUET_BATCH_ROWS", 5)
    monkeypatch.setattr(columnar, "JSONL_BLOCK_BYTES", 700)
    monkeypatch.setattr(columnar, "CSV_CHUNK_ROWS", 6)


# ---- what an import leaves behind -----------------------------------------------------------------------------
def snapshot(ws: Workspace, project: ProjectInfo, report: ImportReport) -> dict[str, Any]:
    pid = project.id
    st_ = ws.store
    with ws.meta.session() as s:
        runs = [r.id for r in s.query(ImportRun).filter(ImportRun.project_id == pid).order_by(ImportRun.id)]
        rejections = [
            (r.file, r.line, r.reason, r.event, r.day)
            for r in s.query(ImportRejection)
            .filter(ImportRejection.run_id.in_(runs))
            .order_by(ImportRejection.id)
        ]
        run_counts = [
            (r.status, r.rows_read, r.rows_imported, r.rows_deduplicated, r.rows_rejected)
            for r in s.query(ImportRun).filter(ImportRun.project_id == pid).order_by(ImportRun.id)
        ]
    return {
        "report": (
            report.rows_read,
            report.imported,
            report.deduplicated,
            report.rejected,
            [(r.file, r.line, r.reason) for r in report.rejections],
        ),
        "events": st_.fetchall(
            "SELECT uuid, event, distinct_id, timestamp, properties FROM events WHERE project_id = ? ORDER BY ALL",
            [pid],
        ),
        "persons": st_.fetchall(
            "SELECT distinct_id, person_id FROM person_distinct_ids WHERE project_id = ? ORDER BY ALL", [pid]
        ),
        "person_properties": st_.fetchall(
            """SELECT distinct_id, key, value, ts, set_once FROM person_property_writes
               WHERE project_id = ? ORDER BY ALL""",
            [pid],
        ),
        "merges": st_.fetchall(
            "SELECT from_person, into_person FROM person_merges WHERE project_id = ? ORDER BY ALL", [pid]
        ),
        "stats": st_.fetchall(
            "SELECT day, event, accepted, deduplicated FROM ingest_stats WHERE project_id = ? ORDER BY ALL",
            [pid],
        ),
        "rejections": rejections,
        "runs": run_counts,
    }


def both_paths(ws: Workspace, paths: list[Path], batch_rows: int, fmt: str | None = None) -> dict[str, Any]:
    """Import ``paths`` through the fast path and the per-row path (two new projects); assert the same
    outcome and return the fast path's snapshot."""
    n = next(_names)
    fast_project = ws.create_project(f"fast{n}", "UTC")
    slow_project = ws.create_project(f"slow{n}", "UTC")
    fast = import_events(ws, fast_project, paths, batch_rows=batch_rows, columnar=True, fmt=fmt)
    slow = import_events(ws, slow_project, paths, batch_rows=batch_rows, columnar=False, fmt=fmt)
    got, want = snapshot(ws, fast_project, fast), snapshot(ws, slow_project, slow)
    for key in want:
        assert got[key] == want[key], f"{key} differs:\nfast: {got[key]}\nslow: {want[key]}"
    return got


# ---- random rows ---------------------------------------------------------------------------------------------
ID_POOL = ["u1", "u2", "a1", "a2", "d1", " u1", "u2 ", "", "  ", "\u00a0u1", "x" * 401, "é"]
ids = st.one_of(st.sampled_from(ID_POOL), st.integers(-3, 3), st.none())
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["", "0", "ünï", "a\nb", "\u2028", "\x00", "/p/1"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
prop_keys = st.sampled_from(
    ["plan", "n", "name", "$lib", "$current_url", "distinct_id", "utm_source", "é", ""]
)
props = st.dictionaries(prop_keys | st.sampled_from(["$set", "$set_once"]), json_values, max_size=4)
flat_props = st.dictionaries(prop_keys, json_scalars, max_size=4)


@st.composite
def iso_texts(draw: st.DrawFn) -> str:
    year = draw(st.sampled_from([1, 2, 1969, 1970, 2000, 2023, 2024, 2100, 9999]))
    month = draw(st.integers(0, 13))
    day = draw(st.sampled_from([0, 1, 9, 28, 29, 30, 31, 32]))
    text = f"{year:04d}-{month:02d}-{day:02d}"
    if draw(st.integers(0, 5)):
        hms = (draw(st.integers(0, 24)), draw(st.integers(0, 60)), draw(st.integers(0, 60)))
        text += draw(st.sampled_from(["T", "t", " ", "X"])) + "{:02d}:{:02d}:{:02d}".format(*hms)
        digits = draw(st.integers(0, 8))
        if digits:
            text += draw(st.sampled_from([".", ","])) + "".join(
                str(draw(st.integers(0, 9))) for _ in range(digits)
            )
        tz = draw(st.integers(0, 5))
        if tz == 1:
            text += draw(st.sampled_from(["Z", "z"]))
        elif tz >= 2:
            sign = draw(st.sampled_from("+-"))
            oh, om = draw(st.integers(0, 24)), draw(st.integers(0, 60))
            text += f"{sign}{oh:02d}:{om:02d}" if tz != 5 else f"{sign}{oh:02d}{om:02d}"
    pad = draw(st.sampled_from(["", "", "", " ", "\t"]))
    return pad + text


def safe_time(value: Any) -> Any:
    """Keep times at the very edges of datetime's range out of the random files (dedicated tests cover them:
    test_iso_parsing_matches_parse_timestamp here, and the calendar-ends test in test_import.py)."""
    try:
        year = parse_timestamp(value).year
    except OverflowError:
        return "2024-05-01T00:00:00Z"
    except ValueError:
        return value
    return value if 1 < year < 9999 else "2024-05-01T00:00:00Z"


timestamps = st.one_of(
    iso_texts(),
    iso_texts(),
    st.sampled_from(["", "yesterday", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123456+02:00"]),
    st.integers(-(10**13), 10**13),
    st.floats(-1e13, 1e13),
    st.booleans(),
    st.none(),
).map(safe_time)

EVENTS = [
    "$pageview",
    " signup ",
    "signup",
    "",
    "  ",
    "$identify",
    "$create_alias",
    "$merge_dangerously",
    "e" * 401,
]


@st.composite
def posthog_rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        row["event"] = draw(st.sampled_from(EVENTS) | st.integers(0, 3))
    if draw(st.integers(0, 9)):
        row["distinct_id"] = draw(ids)
    if draw(st.integers(0, 4)):
        row["uuid"] = draw(st.sampled_from(["p1", "p2", "p3", " p4", "", "p" * 401]) | st.integers(0, 3))
    if draw(st.integers(0, 9)):
        row["timestamp"] = draw(timestamps)
    choice = draw(st.integers(0, 6))
    if choice in (1, 2, 3):
        p = draw(props)
        if row.get("event") == "$identify" and draw(st.booleans()):
            p["$anon_distinct_id"] = draw(ids)
        if row.get("event") in ("$create_alias", "$merge_dangerously") and draw(st.booleans()):
            p["alias"] = draw(ids)
        row["properties"] = p
    elif choice == 4:
        row["properties"] = draw(st.sampled_from(['{"a": 1}', "", "  ", "{bad", "[1]", '"x"']))
    elif choice == 5:
        row["properties"] = draw(json_scalars | st.lists(json_scalars, max_size=2))
    if not draw(st.integers(0, 5)):
        row["$set"] = draw(st.sampled_from([{}, {"plan": "pro"}, None, "", "{}", '{"k": 2}', "bad", 3]))
    if not draw(st.integers(0, 7)):
        row["$set_once"] = draw(st.sampled_from([{}, {"first": True}, None]))
    if not draw(st.integers(0, 9)):
        row["type"] = draw(st.sampled_from(["track", "page", None]))
    return row


CONTEXTS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "page": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "url": st.sampled_from(["https://x/a", "", None, 0, 1]),
                        "referrer": st.sampled_from(["https://r", ""]),
                        "path": st.sampled_from(["/a", ""]),
                    },
                ),
                st.just("not a dict"),
            ),
            "campaign": st.fixed_dictionaries(
                {},
                optional={
                    k: st.sampled_from(["g", "", None, 5])
                    for k in ("source", "medium", "name", "term", "content")
                },
            ),
            "library": st.fixed_dictionaries({}, optional={"name": st.sampled_from(["analytics.js", ""])}),
            "os": st.fixed_dictionaries({}, optional={"name": st.sampled_from(["iOS", None])}),
            "traits": st.fixed_dictionaries({}, optional={"email": st.just("a@x")}),
            "ip": st.just("1.2.3.4"),
        },
    ),
    st.sampled_from(["{bad", '{"page": {"url": "https://s"}}', ""]),
)


@st.composite
def segment_rows(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["track", "track", "page", "screen", "identify", "alias", "group", "bogus", None])
    )
    row: dict[str, Any] = {}
    if kind is not None:
        row["type"] = kind
    for key in ("userId", "anonymousId"):
        if draw(st.integers(0, 2)):
            row[key] = draw(ids)
    if draw(st.integers(0, 5)):
        row["messageId"] = draw(st.sampled_from(["m1", "m2", "m3", " m4", ""]) | st.integers(0, 3))
    if kind in ("track", None) and draw(st.integers(0, 7)):
        row["event"] = draw(st.sampled_from(EVENTS))
    if draw(st.booleans()):
        row["name"] = draw(st.sampled_from(["Home", "", None, 3, "Pricing"]))
    if draw(st.integers(0, 5)):
        row["timestamp"] = draw(timestamps)
    if not draw(st.integers(0, 3)):
        row["originalTimestamp"] = draw(timestamps)
    if draw(st.booleans()):
        row["properties"] = draw(props)
    if draw(st.booleans()):
        row["context"] = draw(CONTEXTS)
    if kind in ("identify", "group") and draw(st.booleans()):
        row["traits"] = {"email": "x@y"}
    if kind == "alias":
        row["previousId"] = draw(ids)
    if kind == "group":
        row["groupId"] = draw(st.sampled_from(["g1", 7]))
    return row


@st.composite
def good_times(draw: st.DrawFn) -> Any:
    """Valid times in the forms the fast path reads (and epoch numbers)."""
    dt = draw(st.datetimes(datetime(1950, 1, 1), datetime(2090, 1, 1)))
    form = draw(st.integers(0, 9))
    if form == 0:
        return draw(st.sampled_from([1714557600, 1714557600123, 1714557600.5, 1714557600123.7]))
    if form == 1:
        return dt.strftime("%Y-%m-%d")
    text = dt.strftime("%Y-%m-%d") + draw(st.sampled_from(["T", " ", "t"])) + dt.strftime("%H:%M:%S")
    digits = draw(st.sampled_from([0, 1, 3, 6]))
    if digits:
        text += "." + f"{dt.microsecond:06d}"[:digits]
    return text + draw(st.sampled_from(["", "Z", "z", "+02:00", "-05:30", "+00:00"]))


@st.composite
def simple_rows(draw: st.DrawFn) -> dict[str, Any]:
    """Rows the fast path is meant for, with the details varied."""
    segment = draw(st.booleans())
    row: dict[str, Any] = {"timestamp": draw(good_times())}
    p = draw(st.one_of(flat_props, st.dictionaries(prop_keys, json_values, max_size=3)))
    if segment:
        row["type"] = draw(st.sampled_from(["track", "page", "screen"]))
        user, anon = draw(st.sampled_from([("u1", None), (None, "a1"), ("u2", "u2"), ("u1", ""), (7, None)]))
        if user is not None:
            row["userId"] = user
        if anon is not None:
            row["anonymousId"] = anon
        row["messageId"] = draw(st.sampled_from(["m1", "m2", "m3", "m4", "m5"]))
        if row["type"] == "track":
            row["event"] = draw(st.sampled_from(["signup", " padded ", "$identify", "é"]))
        elif draw(st.booleans()):
            row["name"] = draw(st.sampled_from(["Home", "", "Pricing"]))
        if draw(st.booleans()):
            row["context"] = draw(CONTEXTS.filter(lambda c: isinstance(c, dict)))
        if draw(st.booleans()):
            row["originalTimestamp"] = row.pop("timestamp")
    else:
        row["event"] = draw(st.sampled_from(["$pageview", "signup", " padded ", "e" * 401]))
        row["distinct_id"] = draw(st.sampled_from(["u1", "u2", "a1", "é", 7]))
        row["uuid"] = draw(st.sampled_from(["p1", "p2", "p3", "p4", "p5", "p6"]))
        if draw(st.integers(0, 3)) == 0:
            row["$set"] = {}
    if draw(st.integers(0, 4)):
        row["properties"] = p if draw(st.integers(0, 3)) else json.dumps(p)
    return row


rows_strategy = st.lists(
    st.one_of(simple_rows(), simple_rows(), posthog_rows(), segment_rows()), min_size=1, max_size=14
)


def distinct_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give the rows different event ids (keeping each id's shape: blank, padded, long, integer).

    Two different events with the same id and the same timestamp are a tie the store breaks arbitrarily
    (``row_number() OVER (PARTITION BY uuid ORDER BY timestamp)``), so they could not be compared; duplicates
    come from :func:`with_duplicates`, as copies of whole rows.
    """
    out = []
    for i, row in enumerate(rows):
        row = dict(row)
        for key in ("uuid", "messageId"):
            value = row.get(key)
            if isinstance(value, str) and value.strip():
                row[key] = f"{value}~{i}" if not value.endswith(" ") else f"{value.rstrip()}~{i} "
            elif isinstance(value, int) and not isinstance(value, bool):
                row[key] = value + 100 * i
        out.append(row)
    return out


def with_duplicates(rows: list[dict[str, Any]], picks: list[int]) -> list[dict[str, Any]]:
    """Re-send some rows (same id), sometimes a few hours later."""
    rows = distinct_ids(rows)
    out = list(rows)
    for p in picks:
        row = dict(rows[p % len(rows)])
        if p % 3 == 0 and isinstance(row.get("timestamp"), str) and row["timestamp"].startswith("2024-05-01"):
            row["timestamp"] = "2024-05-01T23:30:00Z"
        out.append(row)
    return out


# ---- writers ----------------------------------------------------------------------------------------------------
JUNK_LINES = [
    b"{not json",
    b"[1, 2]",
    b'"just a string"',
    b"42",
    b"null",
    b"   ",
    b"",
    b"\x0b",
    b'{"event": "e", "distinct_id": "u1", "uuid": "j1", "timestamp": "2024-05-01T10:00:00Z", "x": NaN}',
    b'{"event": "e", "distinct_id": "u1", "uuid": "j2", "timestamp": "2024-05-01T10:00:00Z", "x": [1,]}',
    b'{"event": "e", "distinct_id": "u1", "uuid": "j3", "timestamp": "2024-05-01T10:00:00Z",}',
    b'{"event": "e", "distinct_id": "u1", "uuid": "j4", "timestamp": "2024-05-01T10:00:00Z", "x": 1e400}',
    b'{"event": "e", "distinct_id": "u1", "uuid": "j5", "timestamp": "2024-05-01T10:00:00Z", "x": -Infinity}',
    b'{"event": "a", "event": "b", "distinct_id": "u1", "uuid": "j6", "timestamp": "2024-05-01T10:00:00Z"}',
    b'{"event": "e", "distinct_id": "u1", "distinct_id": "u2", "uuid": "j7", "timestamp": "2024-05-01T10:00:00Z"}',
    b'{"\\u0065vent": "esc", "distinct_id": "u\\u0031", "uuid": "j8", "timestamp": "2024-05-01T10:00:00Z"}',
    b'{"event": "e", "distinct_id": "u1", "uuid": "j9", "timestamp": "2024-05-01T10:00:00Z", "x": "\\ud800"}',
    b'{"event": "e\xff", "distinct_id": "u1", "uuid": "j10", "timestamp": "2024-05-01T10:00:00Z"}',
    b'\xef\xbb\xbf{"event": "bom", "distinct_id": "u1", "uuid": "j11", "timestamp": "2024-05-01T10:00:00Z"}',
    b'{"event": "deep", "distinct_id": "u1", "uuid": "j12", "timestamp": "2024-05-01T10:00:00Z", "x": '
    + b"[" * 1100
    + b"]" * 1100
    + b"}",
    b'{"event": "e", "distinct_id": 18446744073709551616, "uuid": "j13", "timestamp": "2024-05-01T10:00:00Z"}',
    b'{"event": "e", "distinct_id": -0, "uuid": "j14", "timestamp": 1714557600123}',
    b'{"event": "e", "distinct_id": "u1", "uuid": "j15", "timestamp": 1.7145576001235e12}',
    b'{"event": "e", "distinct_id": "u1", "uuid": "j16", "timestamp": "2024-05-01T10:00:00Z", '
    b'"properties": {"a": 1, "a": 2, "b": {"c": 1, "c": [3]}, "d": 1.0, "e": 1E2, "f": 123456789012345678901}}',
    b' \t{"event": "ws", "distinct_id": "u1", "uuid": "j17", "timestamp": "2024-05-01T10:00:00Z"} \r',
    b'{"event":"info","distinct_id":"u1","uuid":"j18","timestamp":"2024-05-01T10:00:00Z","properties":'
    b'{"k":"inf, nan: [Infinity]","$pathname":"/info"}}',
]


def dump_json(row: dict[str, Any], style: int) -> bytes:
    if style == 0:
        try:
            return orjson.dumps(row)
        except TypeError:  # an integer beyond 64 bits
            pass
    return json.dumps(row, ensure_ascii=style == 1, indent=None, separators=(", ", ": ")).encode()


def write_jsonl(path: Path, rows: list[dict[str, Any]], junk: list[int], style: int) -> Path:
    lines = [dump_json(r, style) for r in rows]
    for j in junk:
        lines.insert(j % (len(lines) + 1), JUNK_LINES[j % len(JUNK_LINES)])
    path.write_bytes(b"\n".join(lines) + (b"\n" if style != 2 else b""))
    return path


CSV_COLUMNS = [
    "type",
    "event",
    "distinct_id",
    "uuid",
    "userId",
    "anonymousId",
    "messageId",
    "name",
    "timestamp",
    "originalTimestamp",
    "properties",
    "context",
    "$set",
    "traits",
    "properties.plan",
    "properties.n",
    "context.os",
]


def csv_cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in ("properties", "context", "$set", "traits"):
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return str(value)


def write_csv(path: Path, rows: list[dict[str, Any]], extras: list[int]) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i, row in enumerate(rows):
        cells = [csv_cell(c, row.get(c)) for c in CSV_COLUMNS]
        h = zlib.crc32(repr(sorted(row.items(), key=str)).encode())  # copies of a row stay copies
        props_ = row.get("properties") if isinstance(row.get("properties"), dict) else {}
        cells[CSV_COLUMNS.index("properties.plan")] = csv_cell("x", props_.get("plan")) if h % 2 else ""
        cells[CSV_COLUMNS.index("properties.n")] = str(h % 4) if h % 3 else ""
        if h % 5 == 4:
            cells[CSV_COLUMNS.index("context.os")] = "linux"
        if h % 6 == 5:
            cells[CSV_COLUMNS.index("name")] = "two\nlines"
        if i in extras:
            cells.append("extra")
        if i % 4 == 3:
            out.write("\n")  # a blank line (csv.DictReader skips it)
        writer.writerow(cells)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def parquet_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "string":
        if isinstance(value, dict | list):
            return json.dumps(value)
        return value if isinstance(value, str) else None
    if kind == "int":
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**62 else None
        )
    if kind in ("ts", "ts_tz"):
        try:
            dt = parse_timestamp(value)
        except (ValueError, OverflowError):
            return None
        return dt.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=2))) if kind == "ts_tz" else dt
    raise AssertionError(kind)


def write_parquet(path: Path, rows: list[dict[str, Any]], layout: dict[str, str]) -> Path:
    types = {
        "string": pa.string(),
        "int": pa.int64(),
        "ts": pa.timestamp("us"),
        "ts_tz": pa.timestamp("ms", tz="Europe/Paris"),
    }
    columns = {}
    for key, kind in layout.items():
        values = [parquet_value(r.get(key), kind) for r in rows]
        if kind == "ts_tz":
            values = [
                None if v is None else v.replace(microsecond=v.microsecond // 1000 * 1000) for v in values
            ]
        columns[key] = pa.array(values, types[kind])
    pq.write_table(pa.table(columns), path, row_group_size=7)
    return path


PARQUET_LAYOUTS = st.fixed_dictionaries(
    {
        "type": st.just("string"),
        "event": st.just("string"),
        "distinct_id": st.sampled_from(["string", "int"]),
        "uuid": st.sampled_from(["string", "string", "int"]),
        "userId": st.sampled_from(["string", "int"]),
        "anonymousId": st.just("string"),
        "messageId": st.just("string"),
        "name": st.just("string"),
        "timestamp": st.sampled_from(["string", "ts", "ts_tz", "int"]),
        "originalTimestamp": st.sampled_from(["string", "ts"]),
        "properties": st.just("string"),
        "context": st.just("string"),
        "$set": st.just("string"),
    }
)

SETTINGS = settings(
    max_examples=int(os.environ.get("KPILOT_COLUMNAR_EXAMPLES", "25")),  # more for a longer hunt
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---- the equivalence properties --------------------------------------------------------------------------------
@SETTINGS
@given(
    rows=rows_strategy,
    dups=st.lists(st.integers(0, 50), max_size=4),
    junk=st.lists(st.integers(0, 200), max_size=5),
    style=st.integers(0, 2),
    batch_rows=st.sampled_from([1, 2, 3, 7, 1000]),
)
def test_jsonl_fast_path_stores_exactly_what_the_row_path_stores(
    ws: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, Any]],
    dups: list[int],
    junk: list[int],
    style: int,
    batch_rows: int,
) -> None:
    path = write_jsonl(tmp_path_factory.mktemp("j") / "e.jsonl", with_duplicates(rows, dups), junk, style)
    both_paths(ws, [path], batch_rows)


@SETTINGS
@given(
    rows=rows_strategy,
    dups=st.lists(st.integers(0, 50), max_size=3),
    extras=st.lists(st.integers(0, 20), max_size=2),
    batch_rows=st.sampled_from([1, 3, 1000]),
)
def test_csv_fast_path_stores_exactly_what_the_row_path_stores(
    ws: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, Any]],
    dups: list[int],
    extras: list[int],
    batch_rows: int,
) -> None:
    path = write_csv(tmp_path_factory.mktemp("c") / "e.csv", with_duplicates(rows, dups), extras)
    both_paths(ws, [path], batch_rows)


@SETTINGS
@given(
    rows=rows_strategy,
    dups=st.lists(st.integers(0, 50), max_size=3),
    layout=PARQUET_LAYOUTS,
    batch_rows=st.sampled_from([1, 4, 1000]),
)
def test_parquet_fast_path_stores_exactly_what_the_row_path_stores(
    ws: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, Any]],
    dups: list[int],
    layout: dict[str, str],
    batch_rows: int,
) -> None:
    path = write_parquet(tmp_path_factory.mktemp("p") / "e.parquet", with_duplicates(rows, dups), layout)
    both_paths(ws, [path], batch_rows)


# ---- timestamps ------------------------------------------------------------------------------------------------
def micros_of(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


NARROW_ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(iso_texts(), min_size=1, max_size=20))
def test_iso_parsing_matches_parse_timestamp(texts: list[str]) -> None:
    micros, ok = columnar.iso_micros(pa.array(texts))
    for text, us, good in zip(texts, micros.tolist(), ok.tolist(), strict=True):
        try:
            want: int | None = micros_of(parse_timestamp(text))
        except (ValueError, OverflowError):
            want = None
        if good:
            assert us == want, text
        elif want is not None:  # declined: only texts outside the forms the fast path reads
            assert not NARROW_ISO.fullmatch(text), text


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.integers(-(10**13), 10**13),
            st.integers(-(2**63), 2**63 - 1),
            st.sampled_from([100_000_000_000, 100_000_000_001, -100_000_000_001, 253_402_300_799, 2**53 + 1]),
        ),
        min_size=1,
        max_size=20,
    ),
    floats=st.lists(
        st.one_of(st.floats(-1e13, 1e13), st.floats(allow_nan=True, allow_infinity=True)), max_size=20
    ),
)
def test_epoch_conversion_matches_parse_timestamp(values: list[int], floats: list[float]) -> None:
    for batch in (np.array(values, np.int64), np.array(floats, np.float64)):
        micros, ok = columnar.epoch_micros(batch)
        for value, us, good in zip(batch.tolist(), micros.tolist(), ok.tolist(), strict=True):
            try:
                want: int | None = micros_of(parse_timestamp(value))
            except ValueError:
                want = None
            assert (us if good else None) == want, value


def test_python_whitespace_class_is_exactly_str_isspace() -> None:
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    # RE2's \x{85} is Python's \u0085
    pattern = re.compile(
        "["
        + re.sub(r"\\x\{([0-9a-f]+)\}", lambda m: f"\\u{int(m.group(1), 16):04x}", columnar.PY_SPACE)
        + "]"
    )
    assert [c for c in map(chr, range(0x3100)) if pattern.fullmatch(c)] == [
        c for c in spaces if ord(c) < 0x3100
    ]
    assert max(map(ord, spaces)) < 0x3100


# ---- hand-written cases ----------------------------------------------------------------------------------------
def rows_jsonl(tmp: Path, rows: list[Any], name: str = "e.jsonl") -> Path:
    path = tmp / name
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows))
    return path


def plan_file(path: Path, fmt: str) -> columnar.Plan:
    plans = [columnar.plan_chunk(chunk) for chunk in columnar.read_chunks(path, fmt)]
    return columnar.Plan(np.concatenate([p.fast for p in plans]), pa.concat_tables([p.table for p in plans]))


def test_simple_rows_take_the_fast_path_and_complex_rows_the_row_path(ws: Workspace, tmp_path: Path) -> None:
    rows: list[Any] = [
        {
            "event": "a",
            "distinct_id": "u1",
            "uuid": "1",
            "timestamp": "2024-05-01T10:00:00Z",
            "properties": {},
        },
        {
            "event": "$identify",
            "distinct_id": "u1",
            "uuid": "2",
            "timestamp": "2024-05-01T10:00:00Z",
            "properties": {"$anon_distinct_id": "a1"},
        },
        {
            "event": "b",
            "distinct_id": "u1",
            "uuid": "3",
            "timestamp": "2024-05-01T10:00:00Z",
            "properties": {"$set": {"plan": "pro"}},
        },
        {"event": "c", "distinct_id": "u1", "timestamp": "2024-05-01T10:00:00Z"},  # no uuid: derived per row
        {
            "type": "page",
            "userId": "u1",
            "messageId": "4",
            "name": "Home",
            "timestamp": "2024-05-01T10:00:00Z",
            "context": {"page": {"url": "https://x/a"}, "library": {"name": "analytics.js"}},
        },
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "a2",
            "messageId": "5",
            "timestamp": "2024-05-01T10:00:00Z",
            "traits": {"email": "a@x"},
        },
    ]
    path = rows_jsonl(tmp_path, rows)
    plan = plan_file(path, "jsonl")
    assert plan.fast.tolist() == [True, False, False, False, True, False]
    assert plan.table.column("properties").to_pylist() == [
        "{}",
        '{"name":"Home","$current_url":"https://x/a","$lib":"analytics.js"}',
    ]
    snap = both_paths(ws, [path], 1000)
    assert len(snap["events"]) == 6
    assert len({person for _, person in snap["persons"]}) == 1  # a1, a2 and u1 are one person
    assert {r[:3] for r in snap["person_properties"]} == {("u1", "plan", "pro"), ("u1", "email", "a@x")}


def test_rejections_keep_line_and_reason_with_the_fast_path(ws: Workspace, tmp_path: Path) -> None:
    rows: list[Any] = [
        {"event": "ok", "distinct_id": "a", "uuid": "1", "timestamp": "2024-05-01T10:00:00Z"},
        b"",
        b"{not json",
        {"event": "", "distinct_id": "a", "uuid": "2", "timestamp": "2024-05-01T10:00:00Z"},
        {"event": "x", "distinct_id": "a", "uuid": "3", "timestamp": "2024-02-30T10:00:00Z"},
        {"event": "ok", "distinct_id": "b", "uuid": "4", "timestamp": "2024-05-01T11:00:00Z"},
    ]
    snap = both_paths(ws, [rows_jsonl(tmp_path, rows)], 1)
    assert [(line, reason.split(":")[0]) for _, line, reason in snap["report"][4]] == [
        (3, "invalid JSON"),
        (4, "event name is missing"),
        (5, "timestamp '2024-02-30T10"),
    ]
    assert len(snap["events"]) == 2


def test_properties_text_is_byte_for_byte_properties_json(ws: Workspace, tmp_path: Path) -> None:
    props_ = {
        "z": 1,
        "a": [1.5, {"k": None}],
        "big": 2**64,
        "neg": -(2**63) - 1,
        "f": 1e-7,
        "u": "é\u2028",
        "dup": 1,
    }
    line = (
        json.dumps(
            {
                "event": "e",
                "distinct_id": "u",
                "uuid": "p1",
                "timestamp": "2024-05-01T10:00:00.5+02:00",
                "properties": props_,
            }
        )
        .encode()
        .replace(b'"dup": 1', b'"dup": 1, "dup": 2')
    )
    path = rows_jsonl(tmp_path, [line])
    plan = plan_file(path, "jsonl")
    assert plan.fast.tolist() == [True]
    expected = normalize(orjson.loads(line))
    assert plan.table.column("properties").to_pylist() == [expected.properties_json()]
    assert plan.table.column("timestamp").to_pylist() == [expected.timestamp]
    both_paths(ws, [path], 10)


def test_parquet_typed_columns_and_unsupported_types(ws: Workspace, tmp_path: Path) -> None:
    table = pa.table(
        {
            "event": ["a", "b", "c", "d"],
            "distinct_id": pa.array([1, 2, None, 4], pa.int64()),
            "uuid": ["1", "2", "3", "4"],
            "timestamp": pa.array(
                [datetime(2024, 5, 1, 12), datetime(2024, 5, 1, 13), None, datetime(2024, 5, 1, 14)],
                pa.timestamp("s", tz="America/New_York"),
            ),
            "properties": pa.array([[("k", "v")], None, [("k", "w")], []], pa.map_(pa.string(), pa.string())),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    plan = plan_file(path, "parquet")
    assert plan.fast.tolist() == [False, True, False, False]  # map properties go per row; no id: rejected
    snap = both_paths(ws, [path], 2)
    assert snap["report"][3] == 1


def test_csv_line_numbers_with_blank_lines_and_quoted_newlines(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(
        "event,distinct_id,uuid,timestamp,properties.plan,name\n"
        "a,u1,1,2024-05-01T10:00:00Z,pro,\n"
        "\n"
        'b,,2,2024-05-01T10:00:00Z,free,"two\nlines"\n'
        "c,u2,3,2024-05-01T10:00:00Z,3,\n"
        "d,u3,4,2024-05-01T10:00:00Z,1,x,extra\n"
    )
    snap = both_paths(ws, [path], 1000)
    assert [(line, reason) for _, line, reason in snap["report"][4]] == [
        (5, "distinct_id is missing"),  # the line a record ends on, as csv.DictReader counts
        (7, "row has more fields than the header"),
    ]
    assert [e[4] for e in snap["events"]] == ['{"plan":"pro"}', '{"plan":3}']


def test_reimport_and_batches_behave_as_before(ws: Workspace, tmp_path: Path) -> None:
    rows = [
        {"event": "e", "distinct_id": f"u{i % 3}", "uuid": f"id{i}", "timestamp": "2024-05-01T10:00:00Z"}
        for i in range(10)
    ]
    path = rows_jsonl(tmp_path, rows)
    project = ws.create_project(f"again{next(_names)}", "UTC")
    first = import_events(ws, project, [path], batch_rows=3)
    again = import_events(ws, project, [path], batch_rows=3)
    assert (first.imported, again.imported, again.deduplicated) == (10, 0, 10)


def test_interrupted_fast_import_keeps_whole_batches(ws: Workspace, tmp_path: Path) -> None:
    rows = [
        {"event": "e", "distinct_id": f"u{i}", "uuid": f"id{i}", "timestamp": "2024-05-01T10:00:00Z"}
        for i in range(10)
    ]
    path = rows_jsonl(tmp_path, rows)
    project = ws.create_project(f"stop{next(_names)}", "UTC")
    calls = {"n": 0}

    def progress(_path: Path, _done: int, _total: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_events(ws, project, [path], batch_rows=3, progress=progress, columnar=True)
    stored = ws.store.fetchall("SELECT count(*) FROM events WHERE project_id = ?", [project.id])[0][0]
    assert stored == 6
    with ws.meta.session() as s:
        assert s.query(ImportRun).filter(ImportRun.project_id == project.id).one().status == "interrupted"


def test_environment_switch_forces_the_row_path(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = rows_jsonl(tmp_path, [{"event": "e", "distinct_id": "u", "uuid": "1", "timestamp": "2024-05-01"}])
    calls: list[int] = []
    real = columnar.plan_chunk

    def spy(chunk: columnar.Chunk) -> columnar.Plan:
        calls.append(chunk.n)
        return real(chunk)

    monkeypatch.setattr(columnar, "plan_chunk", spy)
    monkeypatch.setenv(COLUMNAR_ENV, "0")
    import_events(ws, ws.create_project(f"env{next(_names)}", "UTC"), [path])
    assert calls == []
    monkeypatch.delenv(COLUMNAR_ENV)
    import_events(ws, ws.create_project(f"env{next(_names)}", "UTC"), [path])
    assert calls == [1]


def test_timestamps_out_of_datetime_range_are_rejected_alike(ws: Workspace, tmp_path: Path) -> None:
    path = rows_jsonl(
        tmp_path, [{"event": "e", "distinct_id": "u", "uuid": "1", "timestamp": "0001-01-01T00:00:00+01:00"}]
    )
    for fast in (True, False):
        report = import_events(ws, ws.create_project(f"of{next(_names)}", "UTC"), [path], columnar=fast)
        assert report.rejected == 1 and "out of range" in report.rejections[0].reason


def test_rejected_segment_and_posthog_reasons_match_normalize(tmp_path: Path) -> None:
    """Rows the fast path declines are exactly those normalize would treat specially or reject."""
    rows = [
        {
            "type": "track",
            "userId": "u",
            "anonymousId": "a",
            "messageId": "m",
            "event": "e",
            "timestamp": "2024-05-01T10:00:00Z",
        },
        {
            "type": "track",
            "userId": "u",
            "anonymousId": "u",
            "messageId": "m2",
            "event": "e",
            "timestamp": "2024-05-01T10:00:00Z",
        },
        {
            "type": "track",
            "userId": "",
            "anonymousId": "a",
            "messageId": "m3",
            "event": " e ",
            "originalTimestamp": "2024-05-01T10:00:00Z",
            "timestamp": "",
        },
    ]
    plan = plan_file(rows_jsonl(tmp_path, rows), "jsonl")
    assert plan.fast.tolist() == [False, True, True]
    for i, row in enumerate(rows[1:]):
        n = normalize(row)
        assert plan.table.column("event")[i].as_py() == n.event
        assert plan.table.column("distinct_id")[i].as_py() == n.distinct_id
        assert plan.table.column("timestamp")[i].as_py() == n.timestamp
    with pytest.raises(RowError):
        normalize({"type": "track", "messageId": "m"})


def test_gzipped_jsonl_and_csv(ws: Workspace, tmp_path: Path) -> None:
    import gzip

    rows = [
        {
            "event": "e",
            "distinct_id": f"u{i % 3}",
            "uuid": f"g{i}",
            "timestamp": f"2024-05-0{1 + i % 3}T10:00:00Z",
        }
        for i in range(20)
    ]
    jsonl = tmp_path / "e.jsonl.gz"
    jsonl.write_bytes(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in rows) + b"{bad\n"))
    csv_path = tmp_path / "e.csv.gz"
    csv_path.write_bytes(
        gzip.compress(
            (
                "event,distinct_id,uuid,timestamp\n" + "".join(f"c,u{i},c{i},2024-05-01\n" for i in range(9))
            ).encode()
        )
    )
    snap = both_paths(ws, [jsonl, csv_path], 4)
    assert snap["report"][:4] == (30, 29, 0, 1)


def test_a_reader_failure_stops_the_import_after_the_rows_before_it(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"event": "e", "distinct_id": "u", "uuid": f"r{i}", "timestamp": "2024-05-01T10:00:00Z"}
        for i in range(30)
    ]
    path = rows_jsonl(tmp_path, rows)
    real = columnar.read_chunks

    def failing(path: Path, fmt: str) -> Iterator[columnar.Chunk]:
        for i, chunk in enumerate(real(path, fmt)):
            if i == 2:
                raise OSError("disk went away")
            yield chunk

    monkeypatch.setattr(columnar, "read_chunks", failing)
    project = ws.create_project(f"fail{next(_names)}", "UTC")
    with pytest.raises(OSError, match="disk went away"):
        import_events(ws, project, [path], batch_rows=2, columnar=True)
    stored = ws.store.fetchall("SELECT count(*) FROM events WHERE project_id = ?", [project.id])[0][0]
    assert stored > 0 and stored % 2 == 0  # whole batches of the chunks read before the failure
    with ws.meta.session() as s:
        assert s.query(ImportRun).filter(ImportRun.project_id == project.id).one().status == "interrupted"
