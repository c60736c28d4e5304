"""Sorted runs of 64-bit id hashes in files, the on-disk part of the id index (:mod:`kpilot.store.id_index`).

A busy day's ids outgrow any fixed memory budget (8 bytes per event; a day at 50,000 events/s is 35 GB), so
the index keeps only the newest hashes of a day in memory and moves the older ones to files: one file per
sorted run, raw little-endian ``uint64``. A run is looked up through a read-only memory map (numpy's binary
search touches only the pages it needs), and after each lookup the mapped pages are handed back to the
kernel (``MADV_DONTNEED``): they stay in the page cache, shared and reclaimable, but not in the process's
resident memory, which therefore stays flat however large the day grows.

Runs of similar size are merged (as in a log-structured merge tree), streaming in chunks, so a day has
O(log n) runs (up to :data:`MAX_MERGED` hashes each) and a merge never holds more than two chunks in memory.

The files are a cache of committed ids, private to the writing process: they live in a directory beside the
store named after the process (``.kpilot-ids-<pid>-*``), removed when the index is dropped; directories
left by a process that died are removed by the next one.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

__all__ = ["MAX_MERGED", "DiskRun", "SpillDir", "members"]

_CHUNK = 1 << 20
"""Hashes per chunk of a streaming merge (8 MiB)."""
MAX_MERGED = 1 << 27
"""Runs are not merged past this many hashes (1 GiB): a merge runs in the writer's thread, so this bounds
the pause one can cause (about a second); a day past it has one more run per GiB to search instead."""
_PREFIX = ".kpilot-ids-"


def members(run: np.ndarray, sorted_hashes: np.ndarray) -> np.ndarray:
    """Which of ``sorted_hashes`` are in the sorted ``run`` (an array in memory or a mapped file)."""
    at = np.searchsorted(run, sorted_hashes)
    found = at < len(run)
    found[found] = run[at[found]] == sorted_hashes[found]
    return found


class SpillDir:
    """The directory beside a store that holds one writing process's run files, made on first use."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self._path: Path | None = None
        self._serial = 0
        self._finalizer: weakref.finalize[..., SpillDir] | None = None

    def new_file(self) -> Path:
        if self._path is None:
            _remove_orphans(self.parent)
            self._path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=self.parent))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._path, True)
        self._serial += 1
        return self._path / f"{self._serial}.u64"

    @property
    def path(self) -> Path | None:
        return self._path

    def remove(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._path = self._finalizer = None


def _remove_orphans(parent: Path) -> None:
    """Remove run directories of processes that no longer exist (a writer that was killed)."""
    for found in parent.glob(f"{_PREFIX}*"):
        try:
            pid = int(found.name[len(_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(found, ignore_errors=True)
        except PermissionError:  # another user's live process
            continue


class DiskRun:
    """One sorted run of hashes in a file, mapped read-only."""

    __slots__ = ("_map", "n", "path", "values")

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        self.values: np.ndarray = np.frombuffer(self._map, dtype="<u8")
        self.n = len(self.values)

    @classmethod
    def write(cls, path: Path, sorted_hashes: np.ndarray) -> DiskRun:
        """A run holding ``sorted_hashes`` (non-empty, sorted ascending)."""
        with path.open("wb") as f:
            np.ascontiguousarray(sorted_hashes, dtype="<u8").tofile(f)
        return cls(path)

    @classmethod
    def merge(cls, path: Path, a: DiskRun, b: DiskRun) -> DiskRun:
        """One run holding both ``a`` and ``b``, written in chunks; ``a`` and ``b`` are left as they are."""
        big, small = (a.values, b.values) if a.n >= b.n else (b.values, a.values)
        with path.open("wb") as f:
            j = 0
            for i in range(0, len(big), _CHUNK):
                part = big[i : i + _CHUNK]
                # the small run's share of this chunk: up to the chunk's last value (all of it at the end)
                end = len(small) if i + _CHUNK >= len(big) else int(np.searchsorted(small, part[-1], "right"))
                merged = np.concatenate([part, small[j:end]])
                merged.sort(kind="stable")  # two sorted runs: one linear merge
                merged.tofile(f)
                j = end
                a.release()  # keep the pages read so far out of the process's memory
                b.release()
        return cls(path)

    @property
    def nbytes(self) -> int:
        return 8 * self.n

    def contains(self, sorted_hashes: np.ndarray) -> np.ndarray:
        """Which of ``sorted_hashes`` are in the run."""
        return members(self.values, sorted_hashes)

    def release(self) -> None:
        """Hand the mapped pages back to the kernel (they stay in the page cache, not in this process)."""
        self._map.madvise(mmap.MADV_DONTNEED)

    def delete(self) -> None:
        del self.values  # the map cannot close while numpy holds its buffer
        self._map.close()
        self.path.unlink(missing_ok=True)
