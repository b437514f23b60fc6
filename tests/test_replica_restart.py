"""A replica killed with SIGKILL, then reopened while its primary is gone: what it showed
its readers stays shown when its primary never shipped ahead (every entry it holds was
durable there before it arrived), and damage to what it had synced is a corruption error,
never a silent cut of everything after it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import replikv
from children import replica_child

TOKEN = "t0ken"
# More entries than a replica that was shipped entries ahead holds back after a crash.
ENTRIES = 150


def killed_replica(tmp_path: Path, done: Callable[[replikv.Primary, int], bool]) -> str:
    """Writes ENTRIES entries on a primary, follows it with a child process until
    ``done(primary, shown)`` (``shown``: the LSN the replica's readers see), kills the child
    with SIGKILL and closes the primary; returns the primary's former address."""
    with (
        replikv.Store(tmp_path / "primary") as store,
        replikv.Primary(store, token=TOKEN, ship_interval=0) as primary,
    ):
        for i in range(ENTRIES):
            store.put("consent", f"user{i}", {"opted_in": i % 2 == 0})
        with replica_child(tmp_path / "child", primary.address) as child:
            assert child.stdout is not None
            deadline = time.monotonic() + 60
            shown = 0
            while not done(primary, shown):
                assert time.monotonic() < deadline, f"the replica shows {shown}"
                shown = int(child.stdout.readline())
        assert child.returncode == -signal.SIGKILL
        address = primary.address
    return address


def test_a_replica_killed_and_reopened_without_its_primary_shows_what_it_showed(
    tmp_path: Path,
) -> None:
    address = killed_replica(tmp_path, lambda _, shown: shown == ENTRIES)
    # The primary is gone: the replica retries it in the background and reads meanwhile.
    with replikv.Replica(tmp_path / "child", primary=address, token=TOKEN, name="child") as r:
        assert r.applied_lsn == ENTRIES
        assert r.store.get("consent", f"user{ENTRIES - 1}") == {"opted_in": False}
        assert r.status().state != "streaming"


def test_a_byte_flipped_in_what_a_killed_replica_had_synced_is_a_corruption_error(
    tmp_path: Path,
) -> None:
    def acked(primary: replikv.Primary, _: int) -> bool:
        # An ack carries what the replica's log holds durably.
        return any(r.acked_lsn == ENTRIES for r in primary.status().replicas)

    killed_replica(tmp_path, acked)
    [segment] = (tmp_path / "child" / "log").glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[100] ^= 0xFF  # in the second or third of 150 entries, all synced
    segment.write_bytes(bytes(data))
    with pytest.raises(replikv.CorruptionError):
        replikv.Store(tmp_path / "child")
