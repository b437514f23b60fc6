"""Child process of the crash tests: writes transactions in a loop and reports each one that
returned, as ``<lsn> <i>`` on stdout, until it is killed.

Arguments: the store's path, the first ``i``, and optionally the store's options as JSON
(by default the whole log is kept, for tests that replay it).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import replikv


def main(path: str, start: int, options: dict[str, Any]) -> None:
    store = replikv.Store(path, checkpoint_entries=50, **options)
    print("ready", store.last_lsn, flush=True)
    i = start
    while True:
        if i % 7 == 0:
            # Every other bulk write is large enough to stream (its rows reach the tables
            # while later ones are encoded): a kill must leave it whole or absent too.
            rows = 5000 if i % 14 == 0 else 200
            receipt = store.put_many("bulk", [(f"b{i}-{j}", {"i": i, "j": j}) for j in range(rows)])
        else:
            with store.transaction() as tx:
                # Two keys that must always agree: a transaction is all or nothing.
                tx.put("pairs", f"a{i}", {"i": i, "pad": "x" * (i % 300)})
                tx.put("pairs", f"b{i}", {"i": i})
                if i % 5 == 0:
                    tx.delete("pairs", f"a{i - 5}")
                    tx.delete("pairs", f"b{i - 5}")
            receipt = tx.receipt  # type: ignore[assignment]
        assert receipt is not None
        print(receipt.lsn, i, flush=True)
        i += 1


if __name__ == "__main__":
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {"retain_bytes": None}
    main(sys.argv[1], int(sys.argv[2]), options)
