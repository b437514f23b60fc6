"""Reads a store's change feed in a fresh process and prints how far its peak resident
memory rose (MiB) while it did: ``python feed_memory_child.py STORE iterate|arrow``.

``iterate`` walks every op of every change in Python, one at a time; ``arrow`` reads the
feed's Arrow batches one at a time (pyarrow's RecordBatchReader). Run by
tests/test_changes_feed.py, which writes the store first, so that the write's own peak is
not counted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import replikv


def peak_mib() -> float:
    """VmHWM: the peak resident set of this process so far."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    path, how = sys.argv[1], sys.argv[2]
    with replikv.Store(path) as store:
        before = peak_mib()
        ops = 0
        if how == "iterate":
            for change in store.changes():
                for _op in change.ops:
                    ops += 1
        else:
            import pyarrow as pa

            reader = pa.RecordBatchReader.from_stream(store.changes().to_arrow_batches())
            for batch in reader:
                ops += batch.num_rows
        print(ops, peak_mib() - before)


if __name__ == "__main__":
    main()
