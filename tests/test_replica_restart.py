"""A replica killed with SIGKILL and reopened while its primary is gone: what it showed its
readers stays shown when its primary never shipped ahead (every entry it holds was durable
there before it arrived)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import replikv

TOKEN = "t0ken"
CHILD = Path(__file__).with_name("replica_child.py")
# More entries than a replica that was shipped entries ahead holds back after a crash.
ENTRIES = 150


def test_a_replica_killed_and_reopened_without_its_primary_shows_what_it_showed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "child"
    with (
        replikv.Store(tmp_path / "primary") as store,
        replikv.Primary(store, token=TOKEN, ship_interval=0) as primary,
    ):
        for i in range(ENTRIES):
            store.put("consent", f"user{i}", {"opted_in": i % 2 == 0})
        last = store.last_lsn
        with subprocess.Popen(
            [sys.executable, str(CHILD), str(path), primary.address],
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            try:
                assert child.stdout is not None
                assert child.stdout.readline().startswith("ready")
                deadline = time.monotonic() + 60
                shown = 0
                while shown < last:
                    assert time.monotonic() < deadline, f"the replica shows {shown} of {last}"
                    shown = int(child.stdout.readline())
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
            assert child.returncode == -signal.SIGKILL
        address = primary.address
    # The primary is gone: the replica retries it in the background and reads meanwhile.
    with replikv.Replica(path, primary=address, token=TOKEN, name="child") as replica:
        assert replica.applied_lsn == last
        assert replica.store.get("consent", f"user{ENTRIES - 1}") == {"opted_in": False}
        assert replica.status().state != "streaming"
