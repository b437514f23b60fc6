"""Run by test_disk_full.py on a small tmpfs of its own: a load the disk has no room for,
then the same load once there is room; or (``steady``) single puts until the disk is full;
or (``replica``) a replica on the small disk that follows a primary beside it. Prints what
it saw as JSON.

Usage: ``python disk_full_child.py MOUNTPOINT [steady|replica]``
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import replikv

ROWS = 100_000


def free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def rows() -> dict[str, dict[str, object]]:
    """About 25 MB of profiles: the log alone would fit in what the disk has left once the
    ballast is in, the log and the tables' copy would not."""
    return {f"user{i:06d}": {"name": "x" * 200, "i": i} for i in range(ROWS)}


def steady(mount: Path) -> None:
    """Single puts until the disk is full, then the same store reopened once it is not."""
    seen: dict[str, object] = {}
    store = replikv.Store(mount / "store")
    ballast = mount / "ballast"
    with ballast.open("wb") as out:
        out.write(b"\1" * (free(mount) - (24 << 20)))
    acknowledged = 0
    try:
        while True:
            store.put("events", f"e{acknowledged:08d}", {"body": "x" * 300})
            acknowledged += 1
    except replikv.ReplikvError as err:
        seen["refused"] = {"type": type(err).__name__, "message": str(err)}
    seen["acknowledged"] = acknowledged
    seen["closed"] = store.closed
    if not store.closed:
        seen["reads"] = store.get("events", "e00000000") == {"body": "x" * 300}
        ballast.unlink()
        seen["writes_again"] = store.put("events", "after", {"body": "y"}).lsn
    store.close()
    ballast.unlink(missing_ok=True)
    with replikv.Store(mount / "store") as reopened:
        table = reopened.table("events")
        seen["reopened_rows"] = len(table) - ("after" in table)
        seen["all_there"] = all(f"e{i:08d}" in table for i in range(acknowledged))
        seen["refused_there"] = f"e{acknowledged:08d}" in table
    print(json.dumps(seen))


def main(mount: Path) -> None:
    seen: dict[str, object] = {}
    store = replikv.Store(mount / "store")
    store.put("profiles", "before", {"i": -1})
    ballast = mount / "ballast"
    with ballast.open("wb") as out:
        out.write(b"\1" * (free(mount) - (30 << 20)))
    free_before = free(mount)
    try:
        store.put_many("profiles", rows())
    except OSError as err:
        seen["refused"] = {"type": type(err).__name__, "errno": err.errno, "message": str(err)}
    seen["freed"] = free(mount) >= free_before - (1 << 20)
    seen["closed"] = store.closed
    seen["rows_after_refusal"] = len(store.table("profiles"))
    seen["before"] = store.get("profiles", "before")
    seen["small_write_lsn"] = store.put("profiles", "small", {"i": -2}).lsn
    ballast.unlink()
    seen["load_lsn"] = store.put_many("profiles", rows()).lsn
    store.close()
    with replikv.Store(mount / "store") as reopened:
        table = reopened.table("profiles")
        seen["reopened_rows"] = len(table)
        seen["reopened_last_lsn"] = reopened.last_lsn
        seen["reopened_last_row"] = table.get(f"user{ROWS - 1:06d}")
    print(json.dumps(seen))


def replica(mount: Path) -> None:
    """A replica on the small disk follows a primary whose store is not on it, until the
    replica's log has no room for what the primary sends; then the disk is given room."""
    seen: dict[str, object] = {}
    store = replikv.Store(mount.parent / "primary")
    primary = replikv.Primary(store, listen="127.0.0.1:0")
    follower = replikv.Replica(mount / "replica", primary=primary.address, max_backoff=0.2)
    ballast = mount / "ballast"
    with ballast.open("wb") as out:
        out.write(b"\1" * (free(mount) - (40 << 20)))
    deadline = time.monotonic() + 120
    batch = 0
    # Between its tries the replica connects again, so its state is read in the same
    # status() that shows why it is behind.
    while "no room" not in ((status := follower.status()).last_error or ""):
        if time.monotonic() > deadline:
            raise SystemExit(f"the replica's disk never filled: {status!r}")
        rows = {f"b{batch:04d}-{i:05d}": {"body": "x" * 300} for i in range(5000)}
        store.put_many("events", rows)
        batch += 1
        follower.wait_for(store.last_lsn, timeout=0.5)
    seen["state"] = status.state
    seen["last_error"] = status.last_error
    seen["closed"] = follower.store.closed
    seen["behind"] = follower.applied_lsn < store.last_lsn
    seen["reads"] = follower.store.get("events", "b0000-00000") == {"body": "x" * 300}
    ballast.unlink()
    seen["caught_up"] = follower.wait_for(store.last_lsn, timeout=60)
    seen["same"] = follower.store.checksum() == store.checksum()
    follower.close()
    primary.close()
    store.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    modes = {"steady": steady, "replica": replica}
    modes.get(sys.argv[2] if len(sys.argv) > 2 else "", main)(Path(sys.argv[1]))
