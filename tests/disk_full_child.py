"""Run by test_disk_full.py on a small tmpfs of its own: a load the disk has no room for,
then the same load once there is room. Prints what it saw as JSON.

Usage: ``python disk_full_child.py MOUNTPOINT``
"""

from __future__ import annotations

import json
import os
import sys
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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
