"""The failover act of ``replikv demo``: a primary in a child process takes sync consent
writes and async open events; it is killed (SIGKILL) mid-stream; its replica is promoted;
then the account: acknowledged sync writes lost (none), and the async entries lost, read
from the dead primary's directory when it tries to follow the new primary.

Run as ``python -m replikv._demo_failover DIR [--ship-ahead]`` it is that child: the
primary (``--ship-ahead``: ``Primary(ship_ahead=True)``)."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ._core import Primary, Replica, Store
from .exceptions import DivergedError, ReplikvError

#: How long the child writes before it is killed.
RUN_SECONDS = 1.0
#: Async events wait this long to ship: the kill loses the ones not shipped yet.
EVENTS_SHIP_INTERVAL = 0.5
#: Consent changes are rarer than opens.
CONSENT_EVERY = 0.02


def serve_until_killed(path: Path, ship_ahead: bool = False) -> None:
    """The child: a primary whose consent writes are sync and whose open events are async
    (a steady stream from a thread); it prints each sync write as its call returns, until
    it is killed."""
    store = Store(path)
    primary = Primary(
        store,
        quorum=1,
        sync_timeout=60,
        table_modes={"consent": "sync"},
        ship_interval=EVENTS_SHIP_INTERVAL,
        heartbeat_interval=0.05,
        ship_ahead=ship_ahead,
    )
    print(f"listening {primary.address}", flush=True)
    while primary.sync_state != "ok":
        time.sleep(0.01)

    def opens() -> None:
        for event in itertools.count():
            store.put("events", event, {"type": "open", "campaign": "black-friday"})

    threading.Thread(target=opens, daemon=True).start()
    for i in itertools.count():
        store.put("consent", f"user{i}@example.com", {"opted_in": i % 3 != 0})
        print(f"sync user{i}@example.com", flush=True)
        time.sleep(CONSENT_EVERY)


def follow_until_killed(
    old: Path, replica_dirs: Sequence[Path], run_for: float, ship_ahead: bool = False
) -> tuple[list[str], list[Replica]]:
    """Starts the primary child on `old` (shipping ahead if `ship_ahead`), follows it with
    a replica in each of `replica_dirs` (each answering other members on a port of its
    own, so that a promotion can ask them), and kills the child with SIGKILL after
    `run_for` seconds of writes (once every replica has heard of all the members). Returns
    the consent keys whose sync write returned, and the replicas (open, their primary
    gone)."""
    flags = ["--ship-ahead"] if ship_ahead else []
    child = subprocess.Popen(
        [sys.executable, "-m", "replikv._demo_failover", str(old), *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    replicas: list[Replica] = []
    try:
        address = child.stdout.readline().split()[-1]
        reader = threading.Thread(target=lambda: lines.extend(child.stdout or []), daemon=True)
        for directory in replica_dirs:
            replicas.append(
                Replica(directory, primary=address, name=directory.name, listen="127.0.0.1:0")
            )
        reader.start()
        deadline = time.monotonic() + 30
        members = len(replicas)
        while not lines or any(len(r.status().primary_peers) != members for r in replicas):
            if time.monotonic() > deadline:
                states = [r.status() for r in replicas]
                raise ReplikvError(f"the failover primary never got going: {states}")
            time.sleep(0.01)
        time.sleep(run_for)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    reader.join(timeout=30)
    child.stdout.close()
    return [line.split()[1] for line in lines if line.startswith("sync ")], replicas


def act(
    workdir: Path,
    say: Callable[[str], None],
    code: Callable[[str], None],
) -> tuple[int, int]:
    """Runs the act in `workdir`; returns (acknowledged sync writes, async entries lost)."""
    old = workdir / "primary"
    acked, (eu1, us1) = follow_until_killed(old, [workdir / "eu-1", workdir / "us-1"], RUN_SECONDS)
    say("  a primary in a child process took sync consent writes and async events;")
    say("  replicas eu-1 and us-1 followed it with quorum 1: either may hold the last")
    say("  acknowledged write, so a promotion must reach both (members - quorum + 1 = 2)")
    say(f"  killed it with SIGKILL after {len(acked):,} sync writes returned")

    code("new_primary = replica.promote()")
    new = eu1.promote()
    say(f"  {new.promotion!r}")
    say("  (us-1 granted the new epoch and now follows eu-1; possible_loss is what eu-1")
    say("  had heard, and the dead primary's directory tells exactly)")
    store = new.store
    lost_sync = [key for key in acked if store.get("consent", key) is None]
    try:
        with Store(old) as dead:
            dead_last = dead.last_lsn
        say(f"  acknowledged sync writes lost: {len(lost_sync)}")
        lost = dead_last - store.last_lsn
        if lost > 0:
            # The dead primary's directory tries to follow the new primary: refused, with
            # the account of what only it holds.
            code("replikv.Replica(old_primary_dir, primary=new_primary.address).wait_for(...)")
            with Replica(old, primary=new.address, name="old-primary") as rejoining:
                try:
                    rejoining.wait_for(dead_last + 1, timeout=30)
                    raise ReplikvError("the dead primary's directory followed without a fork")
                except DivergedError as account:
                    keys = ", ".join(f"{t}: {len(k)} keys" for t, k in account.tables.items())
                    say(
                        f"  DivergedError: async entries lost: {account.entries} (LSN "
                        f"{account.fork_lsn} to {dead_last}; {keys})"
                    )
        else:
            say("  async entries lost: 0 (the replica had every entry)")
        code('new_primary.store.put("consent", "after@example.com", {"opted_in": True})')
        receipt = store.put("consent", "after@example.com", {"opted_in": True})
        say(f"  {receipt!r}")
        say("  (the new primary serves with the old one's settings: consent writes stay sync)")
    finally:
        eu1.close()
        us1.close()
        new.close()
        store.close()
    if lost_sync:
        raise ReplikvError(f"acknowledged sync writes were lost: {lost_sync}")
    return len(acked), max(lost, 0)


if __name__ == "__main__":
    serve_until_killed(Path(sys.argv[1]), ship_ahead="--ship-ahead" in sys.argv[2:])
