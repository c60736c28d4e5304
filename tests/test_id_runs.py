"""The id index's on-disk runs: merges, lookups, log-many runs per day, and clean-up of dead writers' files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpilot.store import id_index, id_runs
from kpilot.store.id_index import IdIndex, _Day
from kpilot.store.id_runs import DiskRun, SpillDir

_hashes = st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(a=_hashes, b=_hashes, chunk=st.sampled_from([1, 2, 7, 1 << 20]))
def test_merge_is_the_sorted_union_with_repeats(
    tmp_path_factory: pytest.TempPathFactory, a: list[int], b: list[int], chunk: int
) -> None:
    spill = SpillDir(tmp_path_factory.mktemp("runs"))
    old = id_runs._CHUNK
    id_runs._CHUNK = chunk  # chunk boundaries at every position, not only at 8 MiB
    try:
        one = DiskRun.write(spill.new_file(), np.sort(np.array(a, dtype=np.uint64)))
        two = DiskRun.write(spill.new_file(), np.sort(np.array(b, dtype=np.uint64)))
        merged = DiskRun.merge(spill.new_file(), one, two)
        assert merged.values.tolist() == sorted(a + b)
        probe = np.sort(np.array(a[:5] + [h ^ 1 for h in b[:5]], dtype=np.uint64))
        assert merged.contains(probe).tolist() == [int(h) in set(a) | set(b) for h in probe]
        for run in (one, two, merged):
            run.delete()
            assert not run.path.exists()
    finally:
        id_runs._CHUNK = old
        spill.remove()


@pytest.mark.parametrize(("cap", "runs"), [(id_runs.MAX_MERGED, range(1, 8)), (4000, range(16, 33))])
def test_a_day_keeps_log_many_runs_and_finds_every_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int, runs: range
) -> None:
    """Without a cap, log2(64) + 1 runs at most; with one, no run passes it and runs stop merging once two
    of them would (at least 64,000 / cap runs, at most twice that)."""
    monkeypatch.setattr(id_index, "MAX_MERGED", cap)
    rng = np.random.default_rng(7)
    spill = SpillDir(tmp_path)
    day = _Day(np.array([], dtype=np.uint64))
    seen = []
    for _ in range(64):  # 64 spills of 1,000 hashes each
        batch = rng.integers(0, 2**63, 1000, dtype=np.uint64)
        seen.append(batch)
        day.add(batch)
        day.spill(spill)
    assert day.nbytes == 0 and day.disk_bytes == 64_000 * 8
    assert len(day.cold) in runs and all(run.n <= cap for run in day.cold)
    every = np.concatenate(seen)
    probe = np.sort(np.concatenate([every[::97], rng.integers(2**63, 2**64 - 1, 500, dtype=np.uint64)]))
    assert day.contains(probe).tolist() == np.isin(probe, every).tolist()
    files = {run.path for run in day.cold}
    assert set(spill.path.iterdir()) == files  # merged-away runs' files are deleted  # type: ignore[union-attr]
    day.drop()
    assert not any(spill.path.iterdir())  # type: ignore[union-attr]
    spill.remove()


def test_days_outside_the_write_go_before_its_own_days_move_to_disk(tmp_path: Path) -> None:
    class Cur:  # a store with nothing in it: loading gives empty days
        def execute(self, _sql: str, _params: list[object]) -> Cur:
            return self

        def fetchnumpy(self) -> dict[str, np.ndarray]:
            return {"day": np.array([], dtype=np.int64), "uuid_hash": np.array([], dtype=np.uint64)}

    index = IdIndex(budget_bytes=4 * 8, spill_to=tmp_path)
    old = np.array([1, 2, 3], dtype=np.uint64)
    index.candidates(Cur(), 1, old, np.array([10, 10, 10]))  # type: ignore[arg-type]
    index.add(1, old, np.array([10, 10, 10]))
    new = np.array([4, 5, 6], dtype=np.uint64)
    index.candidates(Cur(), 1, new, np.array([20, 20, 20]))  # type: ignore[arg-type]
    index.add(1, new, np.array([20, 20, 20]))  # 48 bytes: day 10 (not this write's) goes, nothing spills
    assert index.loaded(1) == [11, 19, 20, 21] and index.disk_bytes == 0 and index.nbytes == 24
    more = np.array([7, 8], dtype=np.uint64)
    index.candidates(Cur(), 1, more, np.array([20, 20]))  # type: ignore[arg-type]
    index.add(1, more, np.array([20, 20]))  # 40 bytes, all of this write's days: day 20 moves to disk
    assert index.nbytes == 0 and index.disk_bytes == 40
    probe = np.array([1, 4, 8, 9], dtype=np.uint64)
    hit = index.candidates(Cur(), 1, probe, np.array([20, 20, 20, 20]))  # type: ignore[arg-type]
    assert hit.tolist() == [False, True, True, False]
    assert index.loads == 2  # days 9-11 and 19-21; day 20 was never read again
    index.close()
    assert not list(tmp_path.iterdir())


def test_dead_writers_run_files_are_removed_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = tmp_path / f".kpilot-ids-{int(dead.stdout)}-abc"
    orphan.mkdir()
    (orphan / "1.u64").write_bytes(b"\0" * 8)
    alive = tmp_path / f".kpilot-ids-{os.getppid()}-def"
    alive.mkdir()
    unrelated = tmp_path / ".kpilot-ids-notapid"
    unrelated.mkdir()
    spill = SpillDir(tmp_path)
    spill.new_file()
    assert not orphan.exists() and alive.exists() and unrelated.exists()
    assert spill.path is not None and spill.path.name.startswith(f".kpilot-ids-{os.getpid()}-")
    spill.remove()
    assert spill.path is None and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, unrelated.name]
    )
