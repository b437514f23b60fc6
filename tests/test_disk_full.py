"""A full disk, for real: a store on a 64 MiB tmpfs mounted in a private mount namespace
(``unshare``), so the mount goes away with the child whatever happens to it.

A load the log has no room for is refused with ``ENOSPC`` before anything is written; the
store stays open, reads and smaller writes go on, and once space is freed the same load
goes in with the next LSN. Single puts on a filling disk stop where a
quarter of it (up to 64 MiB) is left for the tables, with the same refusal. A replica on such
a disk stays open and catches up by itself once space is freed. The Rust tests
(``log::room_tests``, ``store::no_room_tests``) cover the same rules over an in-memory log,
including segments that shrink to fit and many writers refused at once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("disk_full_child.py")
ROWS = 100_000


def namespace_command() -> list[str]:
    """``unshare`` with a mount namespace of its own (and a user namespace when not root)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux's unshare is not installed: no private tmpfs to fill")
    command = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        command[1:1] = ["--user", "--map-root-user"]
    return command


def run_on_small_disk(tmp_path: Path, *mode: str) -> dict[str, object]:
    mount = tmp_path / "disk"
    mount.mkdir()
    script = 'mount -t tmpfs -o size=64m tmpfs "$1" || exit 77; shift; exec "$@"'
    command: list[str | Path] = [*namespace_command(), "sh", "-c", script, "sh", mount]
    done = subprocess.run(
        [*command, sys.executable, CHILD, mount, *mode],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode == 77 or "unshare failed" in done.stderr:
        pytest.skip(f"this machine cannot mount a private tmpfs: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_load_the_disk_has_no_room_for_is_refused_and_the_store_goes_on(
    tmp_path: Path,
) -> None:
    seen = run_on_small_disk(tmp_path)
    refused = seen["refused"]
    assert isinstance(refused, dict), seen
    assert refused["type"] == "ReplikvOSError"
    assert refused["errno"] == errno.ENOSPC
    assert "nothing was written" in refused["message"]
    assert "stays open" in refused["message"]
    # Nothing of the load is on disk or in the table, and its reserved space was given back.
    assert seen["freed"] is True
    assert seen["closed"] is False
    assert seen["rows_after_refusal"] == 1
    assert seen["before"] == {"i": -1}
    # The next write takes the next LSN: the refused load took none.
    assert seen["small_write_lsn"] == 2
    assert seen["load_lsn"] == 3
    assert seen["reopened_rows"] == ROWS + 2
    assert seen["reopened_last_lsn"] == 3
    assert seen["reopened_last_row"] == {"name": "x" * 200, "i": ROWS - 1}


def test_a_disk_filled_by_single_puts_refuses_them_with_room_left_for_the_tables(
    tmp_path: Path,
) -> None:
    """The log stops taking writes where the disk still has a quarter of itself (up to
    64 MiB) free: the tables take what the log holds in the background, and their engine
    would stop the store at its first failed write. The refused write changes nothing, the
    store stays open, reads go on, writes go in again on the same store once space is
    freed, and a reopen holds every acknowledged write and not the refused one."""
    seen = run_on_small_disk(tmp_path, "steady")
    refused = seen["refused"]
    assert isinstance(refused, dict), seen
    assert refused["type"] == "ReplikvOSError", refused
    assert "free for its tables" in refused["message"]
    assert "nothing was written" in refused["message"]
    assert seen["closed"] is False
    assert seen["reads"] is True
    acknowledged = seen["acknowledged"]
    assert isinstance(acknowledged, int) and acknowledged > 1000
    assert seen["writes_again"] == acknowledged + 1
    assert seen["reopened_rows"] == acknowledged
    assert seen["all_there"] is True
    assert seen["refused_there"] is False


def test_a_replica_whose_disk_is_full_stays_open_and_catches_up_once_there_is_room(
    tmp_path: Path,
) -> None:
    """The replica's log refuses what its primary sends, with nothing written: the replica
    keeps its store open for readers, says why it is behind, asks its primary again after
    a wait, and once space is freed it takes the entries it lacked, ending equal to its
    primary."""
    seen = run_on_small_disk(tmp_path, "replica")
    # Waiting to ask again, or asking: either way not taking entries.
    assert seen["state"] in ("disconnected", "connecting"), seen
    last_error = seen["last_error"]
    assert isinstance(last_error, str) and "no room on this replica's disk" in last_error
    assert "retrying" in last_error
    assert seen["closed"] is False
    assert seen["behind"] is True
    assert seen["reads"] is True
    assert seen["caught_up"] is True
    assert seen["same"] is True
