"""The ingestion log: where an accepted request is made durable before the server acknowledges it.

A request's messages are appended to the log and flushed to disk (``fdatasync``) before the reply; the events
reach the event store later, when the applier (:mod:`kpilot.server.writer`) stores them in large
transactions. A crash between the two loses nothing: on start the server replays every record the store
has not taken yet.

Layout: ``<workspace>/ingest-log/<position>.log`` segment files, each named by the log position of its first
byte (20 digits, so names sort by position). A record is ``length (u32 LE) | crc32 (u32 LE) | payload``;
its *position* is the log offset just past it, so positions grow strictly and one integer says "everything
up to here". A segment is closed when it passes ``segment_bytes`` and deleted once every record in it has
been applied.

A crash in the middle of an append leaves a torn record at the end of the newest segment. It was never
acknowledged (the reply waits for the flush), so :meth:`IngestLog.open` cuts the newest segment at its first
bad record. A bad record in an older segment means the file was damaged after the fact: reading it raises
:class:`LogCorrupt` rather than skipping data.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["IngestLog", "LogCorrupt"]

_HEADER = struct.Struct("<II")
_SUFFIX = ".log"


class LogCorrupt(RuntimeError):
    """A log segment is damaged somewhere other than a torn tail."""


def _segment_name(base: int) -> str:
    return f"{base:020d}{_SUFFIX}"


class IngestLog:
    """Append-only segments of length-prefixed, checksummed records. Not thread-safe: one appender."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._segments: list[int] = []  # base positions, oldest first
        self._file: int | None = None  # descriptor of the newest segment, open for appending
        self._end = 0  # log position just past the last record

    # ---- opening and reading -----------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, *, at_least: int = 0, segment_bytes: int = 64 * 1024 * 1024) -> IngestLog:
        """Open (or create) the log in ``directory``, cutting off a torn tail.

        ``at_least``: the highest position anything was ever applied at. Positions must never go back below
        it (a replay skips records at or below a project's applied position), so when the log was emptied
        the next segment starts there.
        """
        log = cls(directory, segment_bytes=segment_bytes)
        directory.mkdir(parents=True, exist_ok=True)
        bases = sorted(
            int(p.name[: -len(_SUFFIX)]) for p in directory.glob(f"*{_SUFFIX}") if p.stem.isdigit()
        )
        log._segments = bases
        if bases:
            last = bases[-1]
            path = directory / _segment_name(last)
            valid = _valid_length(path.read_bytes())
            if valid < path.stat().st_size:
                with path.open("r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            log._end = last + valid
        if log._end < at_least:
            log._end = at_least
        log._open_segment_for_append()
        return log

    @property
    def end(self) -> int:
        """The position just past the last record."""
        return self._end

    def records(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """``(position, payload)`` of every record whose position is greater than ``after``, oldest first."""
        for base in list(self._segments):
            path = self.directory / _segment_name(base)
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # deleted meanwhile: everything in it was applied
                continue
            if base + len(data) <= after:
                continue
            offset = 0
            for offset, payload in _frames(data):
                if base + offset > after:
                    yield base + offset, payload
            if offset < len(data):
                raise LogCorrupt(f"{path}: damaged record at byte {offset}")

    # ---- appending -------------------------------------------------------------------------------
    def append(self, payloads: Sequence[bytes]) -> list[int]:
        """Append ``payloads`` as records, flush them to disk, and return their positions.

        On an error nothing is appended: the segment is cut back to where it was.
        """
        if self._file is None:
            raise RuntimeError("the ingestion log is closed")
        parts: list[bytes] = []
        positions: list[int] = []
        end = self._end
        for payload in payloads:
            parts.append(_HEADER.pack(len(payload), zlib.crc32(payload)))
            parts.append(payload)
            end += _HEADER.size + len(payload)
            positions.append(end)
        data = b"".join(parts)
        base = self._segments[-1]
        before = self._end - base
        try:
            written = 0
            while written < len(data):
                written += os.write(self._file, data[written:])
            os.fdatasync(self._file)
        except BaseException:
            try:
                os.ftruncate(self._file, before)
                os.lseek(self._file, before, os.SEEK_SET)
            except OSError:
                pass
            raise
        self._end = end
        if end - base >= self.segment_bytes:
            os.close(self._file)
            self._file = None
            self._open_segment_for_append()
        return positions

    def _open_segment_for_append(self) -> None:
        last = self._segments[-1] if self._segments else None
        if last is None or last + self._size(last) != self._end or self._end - last >= self.segment_bytes:
            # A fresh segment at the end: first open, a full segment, or a start moved up to `at_least`.
            self._segments.append(self._end)
            path = self.directory / _segment_name(self._end)
            self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            _fsync_dir(self.directory)
        else:
            self._file = os.open(self.directory / _segment_name(last), os.O_WRONLY | os.O_APPEND)

    def _size(self, base: int) -> int:
        try:
            return (self.directory / _segment_name(base)).stat().st_size
        except FileNotFoundError:
            return -1

    # ---- cleaning up -----------------------------------------------------------------------------
    def discard_through(self, position: int) -> int:
        """Delete closed segments whose records all lie at or below ``position``; returns how many."""
        removed = 0
        while len(self._segments) > 1 and self._segments[1] <= position:
            base = self._segments.pop(0)
            (self.directory / _segment_name(base)).unlink(missing_ok=True)
            removed += 1
        return removed

    def segment_count(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None


def _frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(end offset, payload)`` of the whole, intact records at the start of a segment's bytes; stops at
    the first truncated or damaged one."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        offset = start + length
        yield offset, payload


def _valid_length(data: bytes) -> int:
    """How many leading bytes of a segment hold whole, intact records."""
    return max((end for end, _ in _frames(data)), default=0)  # ends only grow


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
