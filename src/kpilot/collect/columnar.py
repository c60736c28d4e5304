"""The columnar fast path of bulk import: whole batches of simple rows normalised with Arrow, numpy and DuckDB.

A file is read in chunks of rows (Parquet record batches, blocks of JSONL lines, runs of CSV records). For each
chunk every field that :func:`kpilot.collect.normalize.normalize` looks at becomes a column (a *kind* per row:
absent, null, string, integer, float, object, timestamp or other, plus its text), and :func:`plan_chunk` decides,
row by row with vectorised tests, whether the row is *simple*:

* PostHog shape: a clean ``distinct_id`` (string or integer), a clean ``uuid``, an event name other than
  ``$identify``/``$create_alias``/``$merge_dangerously``, a timestamp in a form parsed here exactly as
  :func:`kpilot.collect.timestamps.parse_timestamp` does, properties without ``$set``/``$set_once``, and no
  (or empty) top-level ``$set``/``$set_once``;
* Segment shape: ``type`` track/page/screen, a clean ``messageId``, ``userId``/``anonymousId`` that do not
  merge two ids, a timestamp as above (``timestamp``, else ``originalTimestamp``).

Simple rows get their canonical columns here; properties are built per distinct value (or combination of values)
with normalize's own helpers, so their JSON text is exactly ``Normalized.properties_json()``. Every other row
(identity calls, person properties, rows without an id, unusual types or text, anything invalid) is handed back,
as the very row the reader would have produced, for the per-row path: rejections keep their file/line/reason and
identity semantics stay those of ``normalize``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from kpilot.collect.normalize import RowError, _flatten_context, _obj
from kpilot.collect.readers import (
    _NESTED,
    ParseFailure,
    _unflatten,
    csv_row,
    jsonl_row,
    open_binary,
    parquet_row,
)

__all__ = [
    "ABSENT",
    "FIELDS",
    "Chunk",
    "Column",
    "Plan",
    "iso_micros",
    "plan_chunk",
    "read_chunks",
]

Row = dict[str, Any] | ParseFailure
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]

# The kind of a field's value in one row.
ABSENT, NULL, STR, INT, FLOAT, OBJ, TS, OTHER = range(8)

SCALARS = (
    "uuid",
    "event",
    "distinct_id",
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "name",
    "timestamp",
    "originalTimestamp",
)
NESTED_FIELDS = ("properties", "context", "$set", "$set_once")
FIELDS = SCALARS + NESTED_FIELDS
"""Every field normalize reads when it is not given a receive time (the import case)."""

IDENTITY_EVENTS = frozenset({"$identify", "$create_alias", "$merge_dangerously"})
MAX_ID = 400

# Characters Python's str.strip() removes (str.isspace), as an RE2 class; a test checks it against Python.
PY_SPACE = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
)
_EDGE_SPACE = f"^[{PY_SPACE}]|[{PY_SPACE}]$"
_ISO = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_JSON_INT = r"^(?:0|-?[1-9][0-9]{0,17})$"
# JSONL lines DuckDB's JSON reader accepts but orjson rejects (NaN/Infinity, trailing commas, numbers that
# overflow a double), or that orjson's depth limit may reject: such lines take the per-row path.
_LENIENT = r"[:,\[][ \t\n\r]*-?(?i:nan|inf)|,[ \t\n\r]*[\]}]|[0-9]{200}|[eE][+-]?[0-9]{3}"
_OBJECT_START = r"^[ \t\n\r]*\{"
_MAX_BRACKETS = 1000

MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00
MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999
_BAD = object()
"""A value normalize would reject (or that is not worth reproducing here): its rows take the per-row path."""


# ---- chunks ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Column:
    """One field over the rows of a chunk."""

    kind: npt.NDArray[np.int8]
    text: pa.LargeStringArray
    """STR: the string; INT/FLOAT: the number as text; OBJ: the object as JSON; null otherwise."""
    micros: Ints | None = None
    """TS rows: microseconds since the epoch (UTC)."""

    @classmethod
    def absent(cls, n: int) -> Column:
        return cls(np.zeros(n, np.int8), pa.nulls(n, pa.large_string()))


@dataclass(slots=True)
class Nested:
    """An object-valued field: per row an index into ``values``, the Python value normalize would see."""

    codes: Ints
    values: list[Any]


@dataclass(slots=True)
class Chunk:
    lines: Ints
    """Line (JSONL, CSV) or row number (Parquet) of each row, as the per-row reader reports it."""
    eligible: Bools
    """False where the format alone already sends the row to the per-row path."""
    columns: dict[str, Column]
    nested: dict[str, Nested]
    slow_rows: Callable[[Ints], list[Row]]
    """The rows at the given positions exactly as :func:`kpilot.collect.readers.read_rows` yields them."""
    done_bytes: int

    @property
    def n(self) -> int:
        return len(self.lines)


@dataclass(slots=True)
class Plan:
    fast: Bools
    table: pa.Table
    """uuid, event, distinct_id, timestamp, properties of the fast rows, in row order."""


def read_chunks(path: Path, fmt: str) -> Iterator[Chunk]:
    if fmt == "parquet":
        yield from _parquet_chunks(path)
    elif fmt == "jsonl":
        yield from _jsonl_chunks(path)
    elif fmt == "csv":
        yield from _csv_chunks(path)
    else:
        raise ValueError(f"unknown format {fmt!r}")


# ---- helpers -----------------------------------------------------------------------------------------------
def _np(arr: pa.Array | pa.ChunkedArray, fill: Any = False) -> Any:
    """An Arrow array as numpy, nulls replaced by ``fill``."""
    return pc.fill_null(arr, fill).to_numpy(zero_copy_only=False)


def _large(arr: pa.Array) -> pa.LargeStringArray:
    return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())


def _mask_text(text: pa.Array, keep: Bools) -> pa.LargeStringArray:
    return _large(pc.if_else(pa.array(keep), text, pa.scalar(None, text.type)))


def _dumps(props: dict[str, Any]) -> str:
    return orjson.dumps(props, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def _groups(*codes: Ints) -> tuple[Ints, Ints]:
    """Group rows by several small non-negative codes: (a row of each group, group of each row)."""
    n = len(codes[0])
    key = np.zeros(n, np.int64)
    for c in codes:
        width = int(c.max()) + 1 if n else 1
        if n and int(key.max()) >= (1 << 62) // width:  # keep the combined key within int64
            key = np.unique(key, return_inverse=True)[1].reshape(-1).astype(np.int64)
        key = key * width + c
    top = int(key.max()) + 1 if n else 0
    if top <= 4 * n + 1024:  # dense keys: no sort needed
        present = np.zeros(top, np.bool_)
        present[key] = True
        inverse = (np.cumsum(present) - 1)[key]
        rep = np.empty(int(present.sum()), np.int64)
        rep[inverse] = np.arange(n)
        return rep, inverse.astype(np.int64)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first.astype(np.int64), inverse.reshape(-1).astype(np.int64)


def nested_from_column(col: Column) -> Nested:
    """The Python values of an object-valued field: strings as they are, objects parsed (as normalize sees
    them: orjson's reading of the same JSON), anything else ``_BAD``."""
    n = len(col.kind)
    if n == 0:
        return Nested(np.zeros(0, np.int64), [])
    enc = pc.dictionary_encode(col.text)
    idx = _np(enc.indices, -1).astype(np.int64) + 1
    first, inverse = _groups(idx, col.kind.astype(np.int64))
    dictionary = enc.dictionary.to_pylist()
    values: list[Any] = []
    for row in first:
        kind = int(col.kind[row])
        text = dictionary[idx[row] - 1] if idx[row] else None
        if kind in (ABSENT, NULL):
            values.append(None)
        elif kind == STR:
            values.append(text)
        elif kind == OBJ and text is not None:
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                value = _BAD
            values.append(value if isinstance(value, dict) else _BAD)
        else:
            values.append(_BAD)
    return Nested(inverse, values)


# ---- field tests ------------------------------------------------------------------------------------------
NONE, OK, SLOW = 0, 1, 2


_PLAIN_EDGE = np.zeros(256, np.bool_)
_PLAIN_EDGE[0x21:0x7F] = True  # printable ASCII other than space: cannot be part of a whitespace character


def _ids(col: Column) -> tuple[pa.LargeStringArray, npt.NDArray[np.int8]]:
    """Ids as ``_id`` reads them: NONE (absent, null or ""), OK (text as is) or SLOW (anything else)."""
    kind = col.kind
    is_str = kind == STR
    none = (kind == ABSENT) | (kind == NULL)
    ok = kind == INT
    if is_str.any():
        offsets, data = _offsets(col.text)
        starts, stops = offsets[:-1], offsets[1:]
        size = np.where(is_str, stops - starts, 0)
        top = len(data) - 1
        plain = (
            _PLAIN_EDGE[data[np.clip(starts, 0, top)]]
            & _PLAIN_EDGE[data[np.clip(stops - 1, 0, top)]]
            & (size <= MAX_ID)
        )
        none |= is_str & (size == 0)
        good = is_str & (size > 0) & plain
        check = np.flatnonzero(is_str & (size > 0) & ~plain)
        if len(check):  # non-ASCII at an end, or long: the exact tests
            sub = col.text.take(pa.array(check))
            good[check] = ~_np(pc.match_substring_regex(sub, _EDGE_SPACE), True) & (
                _np(pc.utf8_length(sub), MAX_ID + 1) <= MAX_ID
            )
        ok |= good
    state = np.where(none, NONE, np.where(ok, OK, SLOW)).astype(np.int8)
    return col.text, state


def _events(col: Column, mask: Bools, *, posthog: bool) -> tuple[pa.LargeStringArray, Bools]:
    """Event names (of the string rows in ``mask``) as normalize makes them: stripped, at most 400 characters;
    False where it would not take the name (or a PostHog event has identity semantics)."""
    text = _mask_text(col.text, mask & (col.kind == STR))
    enc = pc.dictionary_encode(text)
    names: list[str | None] = []
    for value in enc.dictionary.to_pylist():
        name = value.strip()
        names.append(name[:400] if name and not (posthog and name in IDENTITY_EVENTS) else None)
    out = pa.array(names, pa.large_string()).take(enc.indices)
    return out, _np(pc.is_valid(out))


def _days_from_civil(y: Ints, m: Ints, d: Ints) -> Ints:
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days: Ints = era * 146_097 + doe - 719_468
    return days


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def iso_micros(text: pa.Array) -> tuple[Ints, Bools]:
    """ISO 8601 text as ``parse_timestamp`` reads it, for the forms ``YYYY-MM-DD`` and
    ``YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}][Z|±HH:MM]``: microseconds since the epoch (UTC) and whether the text
    is such a form and a valid time in datetime's range. Other text is left to the per-row path."""
    text = _large(text)
    n = len(text)
    micros = np.zeros(n, np.int64)
    ok = _np(pc.match_substring_regex(text, _ISO))
    rows = np.flatnonzero(ok)
    if not len(rows):
        return micros, ok
    bufs = text.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[text.offset : text.offset + n + 1]
    data = np.frombuffer(bufs[2], np.uint8)
    start = offsets[rows]
    length = offsets[rows + 1] - start

    def char(pos: Ints | int) -> Ints:
        out: Ints = data.take(start + pos, mode="clip").astype(np.int64)
        return out

    def num(pos: Ints | int, width: int) -> Ints:
        value = np.zeros(len(rows), np.int64)
        for k in range(width):
            value = value * 10 + char(pos + k) - 48
        return value

    year, month, day = num(0, 4), num(5, 2), num(8, 2)
    timed = length > 10
    hour = np.where(timed, num(11, 2), 0)
    minute = np.where(timed, num(14, 2), 0)
    second = np.where(timed, num(17, 2), 0)
    last = char(length - 1)
    zulu = timed & ((last == ord("Z")) | (last == ord("z")))
    sign_char = char(length - 6)
    has_offset = timed & (length >= 25) & ((sign_char == ord("+")) | (sign_char == ord("-")))
    tz_len = np.where(zulu, 1, np.where(has_offset, 6, 0))
    dot = timed & (length > 19) & (char(19) == ord("."))
    frac_len = np.where(dot, length - 20 - tz_len, 0)
    frac = np.zeros(len(rows), np.int64)
    for k in range(6):
        frac += np.where(k < frac_len, char(20 + k) - 48, 0) * 10 ** (5 - k)
    off_h = np.where(has_offset, num(length - 5, 2), 0)
    off_m = np.where(has_offset, num(length - 2, 2), 0)
    sign = np.where(sign_char == ord("-"), -1, 1)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    dim = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + ((month == 2) & leap)
    valid = (
        (year >= 1)
        & (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= dim)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
        & (off_h * 60 + off_m < 24 * 60)  # datetime checks only the whole offset (so +00:90 is 1h30)
    )
    days = _days_from_civil(year, np.clip(month, 1, 12), day)
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second - sign * (off_h * 60 + off_m) * 60
    us = seconds * 1_000_000 + frac
    valid &= (us >= MIN_US) & (us <= MAX_US)
    micros[rows] = np.where(valid, us, 0)
    ok[rows] = valid
    return micros, ok


def epoch_micros(value: npt.NDArray[Any]) -> tuple[Ints, Bools]:
    """Epoch seconds or milliseconds (``abs > 1e11``) as ``parse_timestamp`` converts them: the float value
    rounded to microseconds half-to-even (CPython's ``datetime.fromtimestamp``)."""
    big = np.abs(value) > 100_000_000_000  # exact for integers and floats alike
    as_float = value.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        seconds = np.where(big, as_float / 1000.0, as_float)
        finite = np.isfinite(seconds) & (np.abs(seconds) < 1e12)
        seconds = np.where(finite, seconds, 0.0)
        frac, whole = np.modf(seconds)
        frac = np.rint(frac * 1e6)
    carry = frac >= 1e6
    borrow = frac < 0
    frac = np.where(carry, frac - 1e6, np.where(borrow, frac + 1e6, frac))
    whole = np.where(carry, whole + 1.0, np.where(borrow, whole - 1.0, whole))
    us = whole.astype(np.int64) * 1_000_000 + frac.astype(np.int64)
    ok = finite & (us >= MIN_US) & (us <= MAX_US)
    return np.where(ok, us, 0), ok


def _times(col: Column) -> tuple[Ints, Bools]:
    """Timestamps of STR/INT/FLOAT/TS rows, and whether this module converts them (exactly)."""
    kind = col.kind
    micros = np.zeros(len(kind), np.int64)
    ok = np.zeros(len(kind), np.bool_)
    is_str = kind == STR
    if is_str.any():
        m, o = iso_micros(_mask_text(col.text, is_str))
        micros = np.where(is_str, m, micros)
        ok |= is_str & o
    for k, target in ((INT, pa.int64()), (FLOAT, pa.float64())):
        sel = kind == k
        if sel.any():
            rows = np.flatnonzero(sel)
            values = col.text.take(pa.array(rows)).cast(target).to_numpy(zero_copy_only=False)
            m, o = epoch_micros(values)
            micros[rows] = m
            ok[rows] = o
    if col.micros is not None:
        sel = kind == TS
        inside = sel & (col.micros >= MIN_US) & (col.micros <= MAX_US)
        micros = np.where(inside, col.micros, micros)
        ok |= inside
    return micros, ok


def _per_group(fn: Callable[..., str | None], mask: Bools, *args: tuple[Ints, list[Any]]) -> pa.Array:
    """``fn`` of each distinct combination of argument values among the rows in ``mask`` (an argument: per row
    a code into its list of values), as a column; null outside ``mask`` and where ``fn`` declines (None,
    RowError) or an argument is ``_BAD``."""
    n = len(mask)
    rows = np.flatnonzero(mask)
    if not len(rows):
        return pa.nulls(n, pa.large_string())
    first, inverse = _groups(*(codes[rows] for codes, _ in args))
    results: list[str | None] = []
    for row in rows[first]:
        values = [table[codes[row]] for codes, table in args]
        if any(v is _BAD for v in values):
            results.append(None)
            continue
        try:
            results.append(fn(*values))
        except (
            RowError,
            TypeError,
            ValueError,
        ):  # TypeError: orjson cannot write it; the per-row path decides
            results.append(None)
    where = np.full(n, -1, np.int64)
    where[rows] = inverse
    return pa.array(results, pa.large_string()).take(pa.array(where, mask=where < 0))


def _posthog_props(props_value: Any) -> str | None:
    props = dict(_obj(props_value, "properties"))
    if "$set" in props or "$set_once" in props:
        return None  # person properties: the per-row path
    return _dumps(props)


def _segment_props(page: bool, props_value: Any, context_value: Any, name: Any) -> str | None:
    context = _obj(context_value, "context")
    props = dict(_obj(props_value, "properties"))
    if page and name:
        props.setdefault("name", name)
    _flatten_context(context, props)
    return _dumps(props)


_ADDED_KEYS = frozenset(
    {"name", "$current_url", "$referrer", "$pathname", "$lib", "$os"}
    | {f"utm_{k}" for k in ("source", "medium", "campaign", "term", "content")}
)
"""Keys a Segment call adds to its properties (``name`` of page/screen calls, the context's fields)."""


def _properties_part(props_value: Any) -> str | None:
    """A Segment call's properties as JSON without the braces, unless they hold a key the call may add."""
    props = _obj(props_value, "properties")
    return None if _ADDED_KEYS.intersection(props) else _dumps(props)[1:-1]


def _context_part(context_value: Any) -> str | None:
    added: dict[str, Any] = {}
    _flatten_context(_obj(context_value, "context"), added)
    return _dumps(added)[1:-1]


def _name_part(name: Any) -> str | None:
    return _dumps({"name": name})[1:-1] if name else ""


def _empty_object(value: Any) -> str | None:
    return "" if _obj(value, "$set") == {} else None


def _is(arr: pa.Array, value: str) -> Bools:
    return _np(pc.equal(arr, value))  # type: ignore[no-any-return]


# ---- the plan ---------------------------------------------------------------------------------------------
def plan_chunk(chunk: Chunk) -> Plan:
    """Which rows of ``chunk`` are simple, and their canonical columns."""
    cols = chunk.columns
    nested = {f: (v.codes, v.values) for f, v in chunk.nested.items()}
    eligible = chunk.eligible

    uuid, uuid_s = _ids(cols["uuid"])
    distinct, distinct_s = _ids(cols["distinct_id"])
    message, message_s = _ids(cols["messageId"])
    user, user_s = _ids(cols["userId"])
    anon, anon_s = _ids(cols["anonymousId"])
    type_col = cols["type"]
    typed = type_col.kind == STR
    is_track = typed & _is(type_col.text, "track")
    is_pageview = typed & _is(type_col.text, "page")
    is_page = is_pageview | (typed & _is(type_col.text, "screen"))
    ts, ts_ok = _times(cols["timestamp"])

    # PostHog rows: distinct_id present (so the PostHog shape), no person properties, no identity event.
    posthog = eligible & (distinct_s == OK) & (uuid_s == OK) & ts_ok
    ph_event, ph_event_ok = _events(cols["event"], posthog & (cols["event"].kind == STR), posthog=True)
    posthog &= ph_event_ok
    for key in ("$set", "$set_once"):
        posthog &= _np(pc.is_valid(_per_group(_empty_object, posthog, nested[key])))
    ph_props = _per_group(_posthog_props, posthog, nested["properties"])
    ph_fast = posthog & _np(pc.is_valid(ph_props))

    # Segment track/page/screen rows (no distinct_id field at all, else the row has the PostHog shape).
    segment = eligible & (cols["distinct_id"].kind == ABSENT) & (is_track | is_page) & (message_s == OK)
    has_user = user_s == OK
    has_anon = anon_s == OK
    same = _np(pc.equal(user, anon))
    segment &= (user_s != SLOW) & (anon_s != SLOW) & (has_user | has_anon) & (~(has_user & has_anon) | same)
    ts_col = cols["timestamp"]
    use_original = (
        (ts_col.kind == ABSENT) | (ts_col.kind == NULL) | ((ts_col.kind == STR) & _is(ts_col.text, ""))
    )
    orig, orig_ok = _times(cols["originalTimestamp"])
    seg_ts = np.where(use_original, orig, ts)
    segment &= np.where(use_original, orig_ok, ts_ok)
    seg_event, seg_event_ok = _events(cols["event"], segment & is_track, posthog=False)
    segment &= seg_event_ok | is_page
    name_col = cols["name"]
    name_kind = name_col.kind
    segment &= is_track | (name_kind == ABSENT) | (name_kind == NULL) | (name_kind == STR)
    name_enc = pc.dictionary_encode(_mask_text(name_col.text, segment & is_page & (name_kind == STR)))
    name_codes = _np(name_enc.indices, -1).astype(np.int64) + 1
    names = [None, *name_enc.dictionary.to_pylist()]
    # Properties, then the page name, then the context's fields, each added only when absent: when the
    # properties have none of the added keys, the JSON text is the three parts' texts joined.
    props_part = _per_group(_properties_part, segment, nested["properties"])
    joinable = segment & _np(pc.is_valid(props_part))
    context_part = _per_group(_context_part, joinable, nested["context"])
    name_part = _per_group(_name_part, joinable & is_page, (name_codes, names))
    text = pa.large_string()
    body = pc.fill_null(props_part, "")
    for part in (name_part, context_part):
        part = pc.fill_null(part, "")
        comma = pc.if_else(pc.and_(pc.not_equal(body, ""), pc.not_equal(part, "")), ",", "").cast(text)
        body = pc.binary_join_element_wise(body, comma, part, pa.scalar("", text))
    joined = pc.binary_join_element_wise(
        pa.scalar("{", text), body, pa.scalar("}", text), pa.scalar("", text)
    )
    joined = pc.if_else(
        pa.array(joinable & _np(pc.is_valid(context_part))), joined, pa.scalar(None, pa.large_string())
    )
    rest = segment & ~joinable  # properties holding one of the added keys: merged per combination
    merged = _per_group(
        _segment_props,
        rest,
        (is_page.astype(np.int64), [False, True]),
        nested["properties"],
        nested["context"],
        (name_codes, names),
    )
    seg_props = pc.if_else(pa.array(rest), merged, joined)
    seg_fast = segment & _np(pc.is_valid(seg_props))

    fast = ph_fast | seg_fast
    rows = pa.array(np.flatnonzero(fast))
    ph = pa.array(ph_fast)
    page_events = pc.if_else(pa.array(is_pageview), "$pageview", "$screen").cast(pa.large_string())
    seg_events = pc.if_else(pa.array(is_page), page_events, seg_event)

    def pick(a: pa.Array, b: pa.Array) -> pa.Array:
        return pc.if_else(ph, a, b).take(rows).cast(pa.string())

    table = pa.table(
        {
            "uuid": pick(uuid, message),
            "event": pick(ph_event, seg_events),
            "distinct_id": pick(distinct, pc.if_else(pa.array(has_user), user, anon)),
            "timestamp": pa.array(np.where(ph_fast, ts, seg_ts)[fast].astype("datetime64[us]")),
            "properties": pick(ph_props, seg_props),
        }
    )
    return Plan(fast, table)


# ---- Parquet -----------------------------------------------------------------------------------------------
PARQUET_BATCH_ROWS = 65_536
JSONL_BLOCK_BYTES = 1 << 24
CSV_CHUNK_ROWS = 65_536
"""Chunk sizes (tests make them small to cross chunk boundaries)."""

_TS_FACTOR = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _arrow_column(arr: pa.Array, field: str) -> Column:
    n = len(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    valid = _np(pc.is_valid(arr)) if n else np.zeros(0, np.bool_)
    t = arr.type
    if pa.types.is_null(t):
        return Column.absent(n)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return Column(np.where(valid, STR, ABSENT).astype(np.int8), _large(arr))
    if pa.types.is_integer(t):
        small = _np(pc.less_equal(pc.abs_checked(arr.cast(pa.float64())), 1e17))
        keep = valid & small
        kind = np.where(keep, INT, np.where(valid, OTHER, ABSENT)).astype(np.int8)
        return Column(kind, _mask_text(arr.cast(pa.large_string()), keep))
    if pa.types.is_timestamp(t) and field in ("timestamp", "originalTimestamp") and t.unit in _TS_FACTOR:
        raw = _np(arr.cast(pa.int64()), 0).astype(np.int64)
        factor = _TS_FACTOR[t.unit]
        inside = valid & (np.abs(raw) <= MAX_US // factor)
        kind = np.where(inside, TS, np.where(valid, OTHER, ABSENT)).astype(np.int8)
        return Column(kind, pa.nulls(n, pa.large_string()), np.where(inside, raw, 0) * factor)
    return Column(np.where(valid, OTHER, ABSENT).astype(np.int8), pa.nulls(n, pa.large_string()))


def _parquet_chunks(path: Path) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total_rows = max(pf.metadata.num_rows, 1)
    size = path.stat().st_size
    row_no = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        n = batch.num_rows
        names = batch.schema.names
        duplicated = len(set(names)) != len(names)
        columns = {
            f: _arrow_column(batch.column(f), f) if f in names and not duplicated else Column.absent(n)
            for f in FIELDS
        }

        def slow_rows(idx: Ints, batch: pa.RecordBatch = batch) -> list[Row]:
            return [parquet_row(r) for r in batch.take(pa.array(idx, pa.int64())).to_pylist()]

        yield Chunk(
            lines=np.arange(row_no + 1, row_no + n + 1, dtype=np.int64),
            eligible=np.full(n, not duplicated, np.bool_),
            columns=columns,
            nested={f: nested_from_column(columns[f]) for f in NESTED_FIELDS},
            slow_rows=slow_rows,
            done_bytes=int(size * (row_no + n) / total_rows),
        )
        row_no += n


# ---- JSONL -------------------------------------------------------------------------------------------------
def _jsonl_chunks(path: Path) -> Iterator[Chunk]:
    import duckdb

    block_size = JSONL_BLOCK_BYTES
    con = duckdb.connect()
    try:
        line_base = 0
        consumed = 0
        carry = b""
        with open_binary(path) as fh:
            while True:
                data = fh.read(block_size)
                consumed += len(data)
                buf = carry + data if carry else data
                if data:
                    cut = buf.rfind(b"\n") + 1
                    if cut == 0:
                        carry = buf
                        continue
                    body, carry = buf[:cut], buf[cut:]
                else:
                    body, carry = buf, b""
                if body:
                    chunk, lines = _jsonl_block(con, body, line_base, consumed)
                    line_base += lines
                    if chunk.n:
                        yield chunk
                if not data:
                    break
    finally:
        con.close()


def _lut(chars: bytes) -> npt.NDArray[np.bool_]:
    table = np.zeros(256, np.bool_)
    table[list(chars)] = True
    return table


_STRIP_BYTES = _lut(b" \t\n\r\x0b\x0c")  # bytes.strip(): the JSONL reader skips lines of only these


def _jsonl_block(con: Any, body: bytes, line_base: int, consumed: int) -> tuple[Chunk, int]:
    buf = np.frombuffer(body, np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    if not body.endswith(b"\n"):
        ends = np.append(ends, len(body))
    count = len(ends)
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    starts = offsets[:-1]  # every line has at least one byte (its newline, or it is the unterminated last)
    first = buf[starts]
    blank = np.zeros(count, np.bool_)
    for i in np.flatnonzero(_STRIP_BYTES[first]):
        blank[i] = not body[offsets[i] : offsets[i + 1]].strip()
    brackets = np.zeros(count, np.int64)
    for i in np.flatnonzero(ends - starts >= _MAX_BRACKETS):
        line = body[offsets[i] : offsets[i + 1]]
        brackets[i] = line.count(b"{") + line.count(b"[")
    raw = pa.Array.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(body)]
    )
    utf8_ok = np.ones(count, np.bool_)
    try:
        text = raw.cast(pa.large_string())
    except pa.ArrowInvalid:  # invalid UTF-8 somewhere: those lines go per row (orjson rejects them)
        pieces: list[str] = []
        for k in range(count):
            try:
                pieces.append(body[offsets[k] : offsets[k + 1]].decode("utf-8"))
            except UnicodeDecodeError:
                utf8_ok[k] = False
                pieces.append("x")
        text = pa.array(pieces, pa.large_string())
    eligible = utf8_ok & (brackets < _MAX_BRACKETS) & (first == ord("{"))
    other = np.flatnonzero(utf8_ok & (brackets < _MAX_BRACKETS) & (first != ord("{")) & ~blank)
    if len(other):  # leading whitespace
        eligible[other] = _np(pc.match_substring_regex(text.take(pa.array(other)), _OBJECT_START))
    if blank.any():
        kept = np.flatnonzero(~blank)
        text = text.take(pa.array(kept))
        eligible = eligible[kept]
    else:
        kept = np.arange(count)
    n = len(kept)
    eligible &= ~_np(pc.match_substring_regex(text, _LENIENT), True)
    columns: dict[str, Column] = {f: Column.absent(n) for f in FIELDS}
    candidates = np.flatnonzero(eligible)
    if len(candidates):
        columns, parsed = _jsonl_fields(con, text, candidates, n)
        eligible &= parsed

    def slow_rows(idx: Ints) -> list[Row]:
        return [jsonl_row(body[offsets[kept[i]] : offsets[kept[i] + 1]]) for i in idx]

    chunk = Chunk(
        lines=(line_base + 1 + kept).astype(np.int64),
        eligible=eligible,
        columns=columns,
        nested={f: nested_from_column(columns[f]) for f in NESTED_FIELDS},
        slow_rows=slow_rows,
        done_bytes=consumed,
    )
    return chunk, count


def _json_path(key: str) -> str:
    return "'$.\"" + key.replace("'", "''") + "\"'"


_FIELD_PATHS = "[" + ", ".join(_json_path(f) for f in FIELDS) + "]"


def _jsonl_fields(con: Any, text: pa.Array, candidates: Ints, n: int) -> tuple[dict[str, Column], Bools]:
    """Parse the candidate lines with DuckDB: each field's JSON text, and whether the line is valid JSON
    without a duplicated field name (orjson keeps the last duplicate, DuckDB's path lookups the first)."""
    every = len(candidates) == n
    table = pa.table(
        {"i": pa.array(candidates, pa.int64()), "text": text if every else text.take(pa.array(candidates))}
    )
    con.register("jsonl_block", table)
    try:  # invalid JSON makes both NULL
        result = con.sql(
            f"SELECT i, try(json_extract(text, {_FIELD_PATHS})) AS v, try(json_keys(text)) AS k FROM jsonl_block"
        ).to_arrow_table()
    finally:
        con.unregister("jsonl_block")
    got = result.column("i").to_numpy()
    if len(got) > 1 and not np.all(got[1:] > got[:-1]):
        order = np.argsort(got, kind="stable")
        result = result.take(pa.array(order))
        got = got[order]
    keys = result.column("k").combine_chunks()
    values = result.column("v").combine_chunks()
    parsed = np.zeros(n, np.bool_)
    parsed[got] = _np(pc.and_(pc.is_valid(keys), pc.is_valid(values)))
    # The fields normalize reads: present in which rows, and duplicated in any?
    flat = pc.list_flatten(keys)
    parents = pc.list_parent_indices(keys).to_numpy(zero_copy_only=False)
    which = _np(pc.index_in(flat, value_set=pa.array(FIELDS)), -1)
    hit = which >= 0
    width = len(FIELDS)
    counts = np.bincount(parents[hit] * width + which[hit], minlength=len(got) * width).reshape(-1, width)
    parsed[got[counts.max(axis=1, initial=0) > 1]] = False
    present = counts.sum(axis=0)
    # The per-field JSON texts, scattered back to the chunk's rows.
    index = None
    if not (every and len(got) == n):
        position = np.full(n, -1, np.int64)
        position[got] = np.arange(len(got))
        index = pa.array(position, mask=position < 0)
    columns = {}
    for j, f in enumerate(FIELDS):
        if not present[j]:
            columns[f] = Column.absent(n)
            continue
        field = pc.list_element(values, j)
        columns[f] = _json_column(field if index is None else field.take(index))
    return columns, parsed


def _offsets(arr: pa.LargeStringArray) -> tuple[Ints, npt.NDArray[np.uint8]]:
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(1, np.uint8)
    return offsets, data


def _first_bytes(arr: pa.LargeStringArray) -> npt.NDArray[np.uint8]:
    """The first byte of each string (0 for null and empty strings)."""
    offsets, data = _offsets(arr)
    starts = offsets[:-1]
    present = (offsets[1:] > starts) & _np(pc.is_valid(arr))
    return np.where(present, data[np.clip(starts, 0, len(data) - 1)], 0).astype(np.uint8)


def _json_column(raw: pa.Array) -> Column:
    """A field from its JSON text (null when absent)."""
    n = len(raw)
    raw = _large(raw)
    if raw.null_count == n:
        return Column.absent(n)
    first = _first_bytes(raw)
    kind = np.full(n, OTHER, np.int8)
    kind[_np(pc.is_null(raw), True)] = ABSENT
    kind[first == ord("n")] = NULL
    kind[first == ord('"')] = STR
    kind[first == ord("{")] = OBJ
    numeric = np.flatnonzero((first == ord("-")) | ((first >= ord("0")) & (first <= ord("9"))))
    if len(numeric):
        is_int = _np(pc.match_substring_regex(raw.take(pa.array(numeric)), _JSON_INT))
        kind[numeric] = np.where(is_int, INT, FLOAT)
    is_str = kind == STR
    text = pc.if_else(
        pa.array((kind == OBJ) | (kind == INT) | (kind == FLOAT)), raw, pa.scalar(None, raw.type)
    )
    if is_str.any():
        unquoted = pc.utf8_slice_codeunits(raw, 1, -1)
        escaped = is_str & _np(pc.match_substring(raw, "\\"))
        if escaped.any():
            decoded: list[str | None] = [None] * n
            for i in np.flatnonzero(escaped):
                decoded[i] = orjson.loads(raw[int(i)].as_py())
            unquoted = pc.if_else(pa.array(escaped), pa.array(decoded, pa.large_string()), unquoted)
        text = pc.if_else(pa.array(is_str), unquoted, text)
    return Column(kind, _large(text))


# ---- CSV ---------------------------------------------------------------------------------------------------
def _csv_chunks(path: Path) -> Iterator[Chunk]:
    chunk_rows = CSV_CHUNK_ROWS
    with open_binary(path) as raw:
        stream = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = csv.reader(stream)
        try:
            header = next(reader)
        except StopIteration:
            return
        if not header:
            return
        lines: list[int] = []
        records: list[list[str]] = []
        while True:
            try:
                row = next(reader)
                while row == []:  # csv.DictReader skips blank rows
                    row = next(reader)
                line = reader.line_num
            except StopIteration:
                break
            except BaseException:
                if records:
                    yield _csv_chunk(header, lines, records, raw.tell())
                raise
            lines.append(line)
            records.append(row)
            if len(records) >= chunk_rows:
                yield _csv_chunk(header, lines, records, raw.tell())
                lines, records = [], []
        if records:
            yield _csv_chunk(header, lines, records, raw.tell())


def _dict_record(header: list[str], row: list[str]) -> dict[Any, Any]:
    """What csv.DictReader makes of ``row`` (restkey and restval None)."""
    record: dict[Any, Any] = dict(zip(header, row, strict=False))
    if len(header) < len(row):
        record[None] = row[len(header) :]
    elif len(header) > len(row):
        for key in header[len(row) :]:
            record[key] = None
    return record


def _csv_chunk(header: list[str], lines: list[int], records: list[list[str]], done: int) -> Chunk:
    n = len(records)
    width = len(header)
    eligible = np.array([len(r) <= width for r in records], np.bool_)
    if len(set(header)) != width:
        eligible[:] = False
    padded = [r if len(r) == width else (r + [""] * (width - len(r)))[:width] for r in records]
    columns: dict[str, Column] = {}
    position = {name: j for j, name in enumerate(header)}
    for f in SCALARS:
        j = position.get(f)
        if j is None:
            columns[f] = Column.absent(n)
            continue
        cells = pa.array([r[j] for r in padded], pa.large_string())
        present = _np(pc.not_equal(cells, ""))
        columns[f] = Column(np.where(present, STR, ABSENT).astype(np.int8), _mask_text(cells, present))
    nested_cols = [
        j
        for j, name in enumerate(header)
        if name in _NESTED or (name.partition(".")[1] and name.partition(".")[0] in _NESTED)
    ]
    groups: dict[tuple[str, ...], int] = {}
    codes = np.zeros(n, np.int64)
    for i, r in enumerate(padded):
        key = tuple(r[j] for j in nested_cols)
        codes[i] = groups.setdefault(key, len(groups))
    per_field: dict[str, list[Any]] = {f: [] for f in NESTED_FIELDS}
    bad_group = np.zeros(len(groups), np.bool_)
    for g, key in enumerate(groups):
        try:
            sub = _unflatten({header[j]: cell for j, cell in zip(nested_cols, key, strict=True)})
        except ValueError:
            bad_group[g] = True
            sub = {}
        for f in NESTED_FIELDS:
            per_field[f].append(sub.get(f))
    if len(groups):
        eligible &= ~bad_group[codes]

    def slow_rows(idx: Ints) -> list[Row]:
        return [csv_row(_dict_record(header, records[i])) for i in idx]

    return Chunk(
        lines=np.array(lines, np.int64),
        eligible=eligible,
        columns=columns,
        nested={f: Nested(codes, per_field[f]) for f in NESTED_FIELDS},
        slow_rows=slow_rows,
        done_bytes=done,
    )
