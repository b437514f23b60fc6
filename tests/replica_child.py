"""Child process of the replication tests: follows a primary until it is killed."""

from __future__ import annotations

import sys
import time

import replikv


def main(path: str, primary: str, name: str = "child") -> None:
    replica = replikv.Replica(path, primary=primary, name=name, token="t0ken")
    print("ready", flush=True)
    while True:
        time.sleep(0.01)
        print(replica.applied_lsn, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
