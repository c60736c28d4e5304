"""File readers for bulk import: JSONL, CSV and Parquet, each yielding ``(line, row-or-error)``.

Line numbers are 1-based physical lines for JSONL and CSV (the header is line 1), and 1-based row numbers
for Parquet. A row that cannot even be parsed is yielded as a :class:`ParseFailure` so the importer can
report it and go on with the rest of the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "FORMATS",
    "ParseFailure",
    "csv_row",
    "detect_format",
    "jsonl_row",
    "open_binary",
    "parquet_row",
    "read_rows",
]

FORMATS = ("jsonl", "csv", "parquet")
_NESTED = ("properties", "context", "traits", "$set", "$set_once", "integrations")


@dataclass(slots=True)
class ParseFailure:
    reason: str


def detect_format(path: Path, explicit: str | None = None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {explicit!r}")
        return explicit
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if ext == ".csv":
        return "csv"
    if ext in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(
        f"{path}: cannot tell the format from the extension {ext!r}; pass --format jsonl|csv|parquet"
    )


def read_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any] | ParseFailure, int]]:
    """Yield ``(line, row, bytes_consumed_so_far)``."""
    if fmt == "jsonl":
        yield from _jsonl(path)
    elif fmt == "csv":
        yield from _csv(path)
    elif fmt == "parquet":
        yield from _parquet(path)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def open_binary(path: Path) -> Any:
    """The file's bytes (decompressed when it ends in ``.gz``)."""
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, "rb")
    return path.open("rb")


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | ParseFailure, int]]:
    consumed = 0
    with open_binary(path) as fh:
        for line_no, raw in enumerate(fh, start=1):
            consumed += len(raw)
            if not raw.strip():
                continue
            yield line_no, jsonl_row(raw), consumed


def jsonl_row(raw: bytes) -> dict[str, Any] | ParseFailure:
    """One non-blank JSONL line as the row it holds."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return ParseFailure(f"invalid JSON: {exc}")
    if not isinstance(value, dict):
        return ParseFailure(f"expected a JSON object, got {type(value).__name__}")
    return value


def _csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | ParseFailure, int]]:
    import io

    with open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = csv.DictReader(text)
        header = reader.fieldnames or []
        if not header:
            return
        consumed = 0
        for record in reader:
            consumed = raw.tell() if hasattr(raw, "tell") else 0
            yield reader.line_num, csv_row(record), consumed


def csv_row(record: dict[Any, Any]) -> dict[str, Any] | ParseFailure:
    """One :class:`csv.DictReader` record (extra fields under the key None) as the row it holds."""
    if None in record:
        return ParseFailure("row has more fields than the header")
    try:
        return _unflatten(record)
    except ValueError as exc:
        return ParseFailure(str(exc))


def _unflatten(record: dict[str, str | None]) -> dict[str, Any]:
    """CSV columns: top-level fields; ``properties``/``context``/... as JSON text; ``properties.x`` columns."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        if value is None or value == "":
            continue
        if key in _NESTED:
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"column {key} is not valid JSON") from exc
            if isinstance(parsed, dict):
                row.setdefault(key, {}).update(parsed)
            else:
                raise ValueError(f"column {key} must hold a JSON object")
            continue
        head, dot, tail = key.partition(".")
        if dot and head in _NESTED:
            row.setdefault(head, {})[tail] = _scalar(value)
        else:
            row[key] = value
    return row


def _scalar(text: str) -> Any:
    """A CSV cell inside properties: numbers and booleans keep their JSON type, the rest stays text."""
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | ParseFailure, int]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total_rows = max(pf.metadata.num_rows, 1)
    size = path.stat().st_size
    row_no = 0
    for batch in pf.iter_batches(batch_size=65_536):
        for record in batch.to_pylist():
            row_no += 1
            yield row_no, parquet_row(record), int(size * row_no / total_rows)


def parquet_row(record: dict[str, Any]) -> dict[str, Any]:
    """One Parquet record (``to_pylist``) as a row: nulls are absent, map columns become objects."""
    clean = {k: v for k, v in record.items() if v is not None}
    for key in _NESTED:
        if isinstance(clean.get(key), list):  # map columns arrive as key/value pairs
            clean[key] = dict(clean[key])
    return clean
