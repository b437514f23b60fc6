"""Child process of the checkpoint crash test: loads bulk batches (each one makes a
background checkpoint due at once) between single puts, and reports each write that
returned on stdout (``bulk <k>`` or ``single <i>``) until it is killed."""

from __future__ import annotations

import sys

import replikv

SINGLES_PER_BULK = 10


def main(path: str, round_: int, rows: int) -> None:
    store = replikv.Store(path)
    print("ready", flush=True)
    i = 0
    for k in range(1_000_000):
        bulk = [(f"r{round_}-{k}-{j}", {"j": j, "pad": "x" * 1000}) for j in range(rows)]
        store.put_many("bulk", bulk)
        print("bulk", k, flush=True)
        for _ in range(SINGLES_PER_BULK):
            store.put("single", f"r{round_}-{i}", {"i": i})
            print("single", i, flush=True)
            i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
