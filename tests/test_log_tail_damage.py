"""Damage to the newest log segment after a crash: entries that were synced (their writes
returned) are gone from it. Before, a segment cut at a record boundary, or removed, read as
a log that simply ended there, and every acknowledged write after the cut was silently
lost; now the store refuses to open (it knows how far its log was synced)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import replikv

#: Writes 300 entries (never checkpointed into the tables), printing after the 290th and
#: the 300th the newest segment and how many of its bytes are written; then exits without
#: closing, as a crash does (the page cache keeps what was written, as after kill -9).
CHILD = r"""
import os, sys, replikv
store = replikv.Store(sys.argv[1], segment_bytes=65536, checkpoint_entries=1_000_000,
                      checkpoint_seconds=3600.0)
log = os.path.join(sys.argv[1], "log")
for i in range(1, 301):
    store.put("consent", f"user{i}@example.com", {"granted": i % 2 == 0, "pad": "x" * 400})
    if i in (290, 300):
        newest = max(n for n in os.listdir(log) if n.endswith(".seg"))
        with open(os.path.join(log, newest), "rb") as segment:
            written = len(segment.read().rstrip(b"\0"))
        print(store.last_lsn, newest, written, flush=True)
os._exit(0)
"""


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """A store whose writer crashed after 300 returned writes, the newest segment's name,
    and how many bytes of it held the entries up to the 290th."""
    path = tmp_path_factory.mktemp("crash") / "db"
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    at_290, at_300 = (line.split() for line in run.stdout.splitlines())
    assert (at_290[0], at_300[0]) == ("290", "300")
    assert at_290[1] == at_300[1], "the last ten entries are in the newest segment"
    return path, at_300[1], int(at_290[2])


def damaged_copy(crashed: tuple[Path, str, int], tmp_path: Path) -> tuple[Path, Path]:
    path, newest, _ = crashed
    copy = shutil.copytree(path, tmp_path / "db")
    segments = sorted((copy / "log").glob("*.seg"))
    assert len(segments) > 1, "the entries span several segments"
    return copy, copy / "log" / newest


def test_the_crashed_store_itself_reopens_with_every_returned_write(
    crashed: tuple[Path, str, int], tmp_path: Path
) -> None:
    copy, _ = damaged_copy(crashed, tmp_path)
    with replikv.Store(copy) as store:
        assert store.last_lsn == 300
        assert len(store.table("consent")) == 300


@pytest.mark.parametrize("damage", ["removed", "cut at 290 entries", "cut in half"])
def test_a_newest_segment_that_lost_synced_entries_is_a_corruption_error(
    crashed: tuple[Path, str, int], tmp_path: Path, damage: str
) -> None:
    copy, newest = damaged_copy(crashed, tmp_path)
    if damage == "removed":
        newest.unlink()
    else:
        data = newest.read_bytes()
        keep = crashed[2] if damage == "cut at 290 entries" else len(data.rstrip(b"\0")) // 2
        newest.write_bytes(data[:keep])
    with pytest.raises(replikv.CorruptionError, match="synced up to LSN 300"):
        replikv.Store(copy)
