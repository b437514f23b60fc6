"""Child process of the replication tests: collects a Primary while its notifier pauses for
ship_interval (600 s), then checks that its port is released. Prints what it saw."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import replikv

TOKEN = "t0ken"


def port_free(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as probe:
        # As servers bind (the primary too): TIME_WAIT connections do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return False
        return True


def main(path: Path) -> None:
    store = replikv.Store(path / "primary")
    holder = [replikv.Primary(store, token=TOKEN, ship_interval=600)]
    address = holder[0].address
    with replikv.Replica(path / "r", primary=address, token=TOKEN) as replica:
        assert replica.wait_for(store.put("t", 1, 1).lsn, timeout=30)
        time.sleep(0.5)  # the notifier (polling every 50 ms) has seen the commit: it pauses
        holder.pop()  # the last reference: the primary is dropped here, with the GIL held
        print("collected", flush=True)
        deadline = time.monotonic() + 30
        while not port_free(address):
            assert time.monotonic() < deadline, "the port stayed bound"
            time.sleep(0.01)
        print("port-free", flush=True)
    store.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
