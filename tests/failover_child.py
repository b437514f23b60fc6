"""Child process of the failover tests: a primary that takes sync consent writes and async
events until it is killed, printing each write as its call returns."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import replikv


def main(path: Path, token: str) -> None:
    store = replikv.Store(path)
    primary = replikv.Primary(
        store,
        token=token,
        quorum=1,
        sync_timeout=60,
        table_modes={"consent": "sync"},
        ship_interval=5.0,  # async events lag: a kill loses some of them
        heartbeat_interval=0.05,
    )
    print(f"listening {primary.address}", flush=True)
    while primary.sync_state != "ok":
        time.sleep(0.01)
    i = 0
    while True:
        store.put("consent", f"c{i}", {"opted_in": i % 2 == 0})
        print(f"acked c{i}", flush=True)
        store.put("events", i, {"type": "open"})
        print(f"async {i}", flush=True)
        i += 1


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
