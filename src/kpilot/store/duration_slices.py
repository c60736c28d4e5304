"""The session durations of each local day, stored in slices by value (docs/queries/sessions.md).

Table ``session_day_durations(project_id, day, bucket, n, durations)``: the durations (seconds, float64) of
the sessions that start on ``day``, cut by value into slices (``bucket``: :func:`value_buckets`, 1/16 of an
octave each). A slice may be held in several rows: a row with ``n > 0`` holds ``n`` durations, one with
``n < 0`` names ``-n`` durations removed from the slice; each row's values are ascending. A slice is the
multiset sum of its positive rows minus its negative rows (:func:`net`).

Why rows of changes: a write adds the sessions it made and removes the ones it replaced, a few per slice,
while a day holds tens of thousands. Rewriting every slice a write touches cost the write about as much as
the day's size (a 200,000-event import batch spanning 27 days rewrote ~540,000 durations); appending rows
costs what the write changed. A slice is folded back into one row (:class:`SliceEdit`) once its change rows
hold as many durations as its largest row, or it would have more than :data:`MAX_ROWS` rows: readers then
read at most about twice a slice's values, and each stored duration is rewritten a bounded number of times.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

__all__ = [
    "MAX_ROWS",
    "SliceEdit",
    "delete_project",
    "duration_slices",
    "fill_durations",
    "insert_days",
    "net",
    "slice_counts",
    "value_buckets",
]

MAX_ROWS = 8
"""A slice held in more rows than this is folded back into one."""

_BUCKET_SHIFT = 48
"""A day's durations are stored in slices by value: the top 16 bits of the double (sign, exponent and 4
mantissa bits, so each slice spans 1/16 of an octave), which order like the values for durations >= 0."""

_EMPTY = np.zeros(0, np.float64)
_NO_KEYS = np.zeros(0, np.int64)
_RANGE = "project_id = $1 AND day BETWEEN DATE '1970-01-01' + $2::INTEGER AND DATE '1970-01-01' + $3::INTEGER"


def value_buckets(values: np.ndarray) -> np.ndarray:
    """The storage slice of each (non-negative) duration; ascending with the value."""
    return np.ascontiguousarray(values, np.float64).view(np.int64) >> _BUCKET_SHIFT


def _key(day: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """One integer per (day, bucket): buckets are the top 16 bits of a non-negative double."""
    return (np.asarray(day, np.int64) << 16) | np.asarray(bucket, np.int64)


def _day_of_key(key: np.ndarray) -> np.ndarray:
    return key >> 16


def _bucket_of_key(key: np.ndarray) -> np.ndarray:
    return key & 0xFFFF


def net(keys: np.ndarray, values: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The multisets that entries (key, value, sign: +1 present, -1 removed) leave: (keys, values), sorted by
    key, then value. Raises AssertionError if some value would be removed more often than present."""
    order = np.lexsort((values, keys))
    k, v, s = keys[order], values[order], signs[order]
    if len(s) == 0 or bool((s > 0).all()):
        return k, v
    start = np.flatnonzero(np.concatenate([[True], (k[1:] != k[:-1]) | (v[1:] != v[:-1])]))
    count = np.add.reduceat(s, start)
    if bool((count < 0).any()):
        raise AssertionError("session day aggregates out of step with the stored sessions")
    return np.repeat(k[start], count), np.repeat(v[start], count)


def _blob_values(blobs: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The float64 values of ``blobs`` (non-null binary values), concatenated in order."""
    arr = blobs.combine_chunks() if isinstance(blobs, pa.ChunkedArray) else blobs
    if len(arr) == 0:
        return _EMPTY
    arr = arr.cast(pa.large_binary())
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    if data is None:
        return _EMPTY
    raw = np.frombuffer(data, np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return raw.view("<f8").astype(np.float64)


def _entries(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (day, bucket, n, durations) as entries (key, value, sign) for :func:`net`."""
    n = np.asarray(table.column("n").to_numpy(zero_copy_only=False), np.int64)
    values = _blob_values(table.column("durations"))
    size = np.abs(n)
    if int(size.sum()) != len(values):
        raise AssertionError("session day aggregates out of step with the stored sessions")
    day = np.asarray(table.column("day").to_numpy(zero_copy_only=False), np.int64)
    bucket = np.asarray(table.column("bucket").to_numpy(zero_copy_only=False), np.int64)
    return np.repeat(_key(day, bucket), size), values, np.repeat(np.sign(n), size)


def _runs(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal (sorted) ``keys`` starts."""
    return np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else _NO_KEYS


def _slices(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (sorted) ``keys`` and how many values each has."""
    starts = _runs(keys)
    return keys[starts], np.diff(np.append(starts, len(keys)))


def _spans(keys: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of equal (sorted) ``keys``."""
    starts = _runs(keys).tolist()
    return list(zip(starts, [*starts[1:], len(keys)], strict=False))


# ---- reading -----------------------------------------------------------------------------------------------
def slice_counts(
    cur: duckdb.DuckDBPyConnection, project_id: int, first: int, last: int
) -> dict[str, np.ndarray]:
    """``day`` (days since 1970-01-01), ``bucket`` and ``n`` of every non-empty slice of days
    ``first``..``last``, by day, then bucket."""
    table = cur.sql(
        f"""SELECT CAST(day - DATE '1970-01-01' AS INTEGER) AS day, bucket, CAST(sum(n) AS BIGINT) AS n
            FROM session_day_durations WHERE {_RANGE}
            GROUP BY day, bucket HAVING sum(n) > 0 ORDER BY day, bucket""",
        params=[project_id, first, last],
    ).to_arrow_table()
    return {name: table.column(name).to_numpy() for name in ("day", "bucket", "n")}


def _rows(cur: duckdb.DuckDBPyConnection, project_id: int, first: int, last: int, buckets: str) -> pa.Table:
    # Constant filters on the small columns: the scan reads the blobs of the matching rows only.
    return cur.sql(
        f"""SELECT CAST(day - DATE '1970-01-01' AS INTEGER) AS day, bucket, n, durations
            FROM session_day_durations WHERE {_RANGE}{buckets}""",
        params=[project_id, first, last],
    ).to_arrow_table()


def duration_slices(
    cur: duckdb.DuckDBPyConnection, project_id: int, wanted: list[tuple[int, int]]
) -> dict[tuple[int, int], np.ndarray]:
    """The stored durations of the slices ``wanted`` (day, bucket), ascending."""
    if not wanted:
        return {}
    buckets = ", ".join(str(int(b)) for b in sorted({b for _, b in wanted}))
    table = _rows(
        cur, project_id, min(d for d, _ in wanted), max(d for d, _ in wanted), f" AND bucket IN ({buckets})"
    )
    keys, values, signs = _entries(table)
    want = _key(np.array([d for d, _ in wanted]), np.array([b for _, b in wanted]))
    keep = np.isin(keys, want)
    keys, values = net(keys[keep], values[keep], signs[keep])
    return {(int(_day_of_key(keys[a])), int(_bucket_of_key(keys[a]))): values[a:b] for a, b in _spans(keys)}


def fill_durations(
    cur: duckdb.DuckDBPyConnection, project_id: int, first: int, last: int, days: dict[int, Any]
) -> None:
    """Set ``durations`` (ascending) of each of ``days`` (day aggregates of days ``first``..``last``)."""
    keys, values = net(*_entries(_rows(cur, project_id, first, last, "")))
    day = _day_of_key(keys)
    for a, b in _spans(day):
        if int(day[a]) in days:
            days[int(day[a])].durations = values[a:b]


# ---- writing -----------------------------------------------------------------------------------------------
def _insert(
    cur: duckdb.DuckDBPyConnection, project_id: int, keys: np.ndarray, n: np.ndarray, values: np.ndarray
) -> None:
    """Insert rows: row i is slice ``keys[i]`` with count ``n[i]`` (signed), holding the next ``|n[i]|`` of
    ``values``."""
    if len(keys) == 0:
        return
    values = np.ascontiguousarray(values, "<f8")
    offsets = np.concatenate([[0], np.cumsum(np.abs(n))]).astype(np.int64) * 8
    blobs = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(keys), [None, pa.py_buffer(offsets), pa.py_buffer(values.tobytes())]
    )
    rows = pa.table(
        {
            "day": pa.array(_day_of_key(keys), pa.int32()),
            "bucket": pa.array(_bucket_of_key(keys), pa.int32()),
            "n": pa.array(n, pa.int64()),
            "durations": blobs,
        }
    )
    cur.register("session_day_slices", rows)
    cur.execute(
        """INSERT INTO session_day_durations
           SELECT ?, DATE '1970-01-01' + day, bucket, n, durations FROM session_day_slices""",
        [project_id],
    )
    cur.unregister("session_day_slices")


def insert_days(
    cur: duckdb.DuckDBPyConnection, project_id: int, days: list[int], durations: list[np.ndarray]
) -> None:
    """Insert the slices of ``days`` (that have none), each with its ``durations`` (ascending)."""
    if not days:
        return
    values = np.concatenate([np.ascontiguousarray(d, np.float64) for d in durations])
    keys = _key(np.repeat(np.asarray(days, np.int64), [len(d) for d in durations]), value_buckets(values))
    _insert(cur, project_id, *_slices(keys), values)


def delete_project(cur: duckdb.DuckDBPyConnection, project_id: int) -> None:
    cur.execute("DELETE FROM session_day_durations WHERE project_id = ?", [project_id])


def _remove_sorted(values: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """``values`` (ascending) without the multiset ``drop`` (ascending, a sub-multiset of ``values``)."""
    if len(drop) == 0:
        return values
    uniq, first, counts = np.unique(drop, return_index=True, return_counts=True)
    pos = np.searchsorted(values, uniq, side="left")
    idx = np.repeat(pos, counts) + (np.arange(len(drop)) - np.repeat(first, counts))
    if idx.max() >= len(values) or not np.array_equal(values[idx], drop):
        raise AssertionError("session day aggregates out of step with the stored sessions")
    return np.delete(values, idx)


def _cancel(added: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``added`` and ``removed`` (ascending) without the durations they share (a session removed and written
    again as it was changes nothing)."""
    if len(added) == 0 or len(removed) == 0:
        return added, removed
    both = np.intersect1d(added, removed)
    if len(both) == 0:
        return added, removed
    shared = np.repeat(both, np.minimum(_counts(added, both), _counts(removed, both)))
    return _remove_sorted(added, shared), _remove_sorted(removed, shared)


class SliceEdit:
    """The changes one write makes to the duration slices of some days: collected per day
    (:meth:`change`), then written in one go (:meth:`write`), appending change rows or folding slices."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, project_id: int, days: list[int]) -> None:
        self._cur = cur
        self._project_id = project_id
        self._first, self._last = (min(days), max(days)) if days else (0, -1)
        stats = cur.sql(
            f"""SELECT CAST(day - DATE '1970-01-01' AS INTEGER) AS day, bucket, count(*) AS rows,
                       CAST(sum(n) AS BIGINT) AS n, max(abs(n)) AS largest, CAST(sum(abs(n)) AS BIGINT) AS size
                FROM session_day_durations WHERE {_RANGE}
                GROUP BY day, bucket ORDER BY day, bucket""",
            params=[project_id, self._first, self._last],
        ).to_arrow_table()

        def col(name: str) -> np.ndarray:
            return np.asarray(stats.column(name).to_numpy(zero_copy_only=False), np.int64)

        self._keys = _key(col("day"), col("bucket"))
        self._rows, self._largest, self._size = col("rows"), col("largest"), col("size")
        day, n = col("day"), col("n")
        starts = _runs(day)
        self._day_total = dict(
            zip(day[starts].tolist(), np.add.reduceat(n, starts).tolist() if len(n) else [], strict=True)
        )
        self._added: list[tuple[int, np.ndarray]] = []
        self._removed: list[tuple[int, np.ndarray]] = []

    def change(self, day: int, added: np.ndarray, removed: np.ndarray) -> int:
        """Add ``added`` to ``day``'s slices and remove ``removed`` (both ascending); returns the number of
        durations the day then holds."""
        added, removed = _cancel(added, removed)
        self._added.append((day, added))
        self._removed.append((day, removed))
        return int(self._day_total.get(day, 0)) + len(added) - len(removed)

    def write(self) -> None:
        add_k, add_v = self._sorted(self._added)
        rem_k, rem_v = self._sorted(self._removed)
        touched = np.union1d(add_k, rem_k)
        if len(touched) == 0:
            return
        # What each touched slice would hold in rows: the stored ones, plus a row of additions and one of
        # removals; those past the limits are folded into one row instead.
        rows, largest, size = (np.zeros(len(touched), np.int64) for _ in range(3))
        if len(self._keys):
            at = np.minimum(np.searchsorted(self._keys, touched), len(self._keys) - 1)
            stored = self._keys[at] == touched
            rows[stored] = self._rows[at[stored]]
            largest[stored] = self._largest[at[stored]]
            size[stored] = self._size[at[stored]]
        n_add = _counts(add_k, touched)
        n_rem = _counts(rem_k, touched)
        rows = rows + (n_add > 0) + (n_rem > 0)
        largest = np.maximum(largest, np.maximum(n_add, n_rem))
        size = size + n_add + n_rem
        fold = (rows > 1) & ((rows > MAX_ROWS) | (size - largest >= largest))
        folded = touched[fold]
        out_k, out_n, out_v = [], [], []
        if len(folded):
            table = _rows(
                self._cur,
                self._project_id,
                int(_day_of_key(folded).min()),
                int(_day_of_key(folded).max()),
                " AND bucket IN (" + ", ".join(str(int(b)) for b in np.unique(_bucket_of_key(folded))) + ")",
            )
            keys, values, signs = _entries(table)
            keep = np.isin(keys, folded)
            a, r = np.isin(add_k, folded), np.isin(rem_k, folded)
            keys, values = net(
                np.concatenate([keys[keep], add_k[a], rem_k[r]]),
                np.concatenate([values[keep], add_v[a], rem_v[r]]),
                np.concatenate(
                    [signs[keep], np.ones(int(a.sum()), np.int64), -np.ones(int(r.sum()), np.int64)]
                ),
            )
            self._delete(folded)
            slice_keys, sizes = _slices(keys)
            out_k.append(slice_keys)
            out_n.append(sizes)
            out_v.append(values)
            add_k, add_v = add_k[~a], add_v[~a]
            rem_k, rem_v = rem_k[~r], rem_v[~r]
        for keys, values, sign in ((add_k, add_v, 1), (rem_k, rem_v, -1)):
            slice_keys, sizes = _slices(keys)
            out_k.append(slice_keys)
            out_n.append(sign * sizes)
            out_v.append(values)
        _insert(
            self._cur, self._project_id, np.concatenate(out_k), np.concatenate(out_n), np.concatenate(out_v)
        )

    @staticmethod
    def _sorted(parts: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Per-day ascending durations as (slice key, value) sorted by key, then value."""
        parts = [(d, v) for d, v in parts if len(v)]
        if not parts:
            return _NO_KEYS, _EMPTY
        parts.sort(key=lambda p: p[0])
        values = np.concatenate([v for _, v in parts])
        days = np.repeat(np.asarray([d for d, _ in parts], np.int64), [len(v) for _, v in parts])
        # within a day ascending values have ascending buckets, so the keys come out sorted
        return _key(days, value_buckets(values)), values

    def _delete(self, keys: np.ndarray) -> None:
        self._cur.register(
            "session_slice_keys",
            pa.table(
                {
                    "day": pa.array(_day_of_key(keys), pa.int32()),
                    "bucket": pa.array(_bucket_of_key(keys), pa.int32()),
                }
            ),
        )
        self._cur.execute(
            """DELETE FROM session_day_durations s USING session_slice_keys k
               WHERE s.project_id = ? AND s.day = DATE '1970-01-01' + k.day AND s.bucket = k.bucket""",
            [self._project_id],
        )
        self._cur.unregister("session_slice_keys")


def _counts(keys: np.ndarray, of: np.ndarray) -> np.ndarray:
    """How often each of ``of`` (sorted, unique) occurs in ``keys`` (sorted)."""
    return np.searchsorted(keys, of, "right") - np.searchsorted(keys, of, "left")
