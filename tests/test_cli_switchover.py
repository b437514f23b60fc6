"""replikv switchover and replikv follow against real `replikv primary` and `replikv
replica` processes on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import replikv
from test_cli_replication import ENV, first_line, replikv_status, running


def command(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs a `replikv` command as a user would, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "replikv", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=90,
    )


def member_address(process: subprocess.Popen[str]) -> str:
    """Reads a replica's banner lines; returns the address it answers members at."""
    assert "following" in first_line(process)
    line = first_line(process)
    match = re.search(r"answering other members at (127\.0\.0\.1:\d+)", line)
    assert match, line
    return match.group(1)


def until_streaming(address: str, *names: str) -> str:
    """Waits until `replikv status ADDRESS` shows every replica of `names` streaming."""
    deadline = time.monotonic() + 60
    while True:
        status = replikv_status(address)
        rows = [line for line in status.stdout.splitlines() if "streaming" in line]
        if all(any(line.split()[0] == name for line in rows) for name in names):
            return status.stdout
        assert time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(0.1)


def test_replikv_follow_re_points_a_running_replica(tmp_path: Path) -> None:
    with running("primary", "--data", str(tmp_path / "a"), "--listen", "127.0.0.1:0") as p:
        address = re.search(r"on (127\.0\.0\.1:\d+)", first_line(p)).group(1)  # type: ignore[union-attr]
        lost = ("--primary", "127.0.0.1:1", "--name", "c", "--listen", "127.0.0.1:0")
        with running("replica", "--data", str(tmp_path / "c"), *lost) as c:
            told = command("follow", member_address(c), "--primary", address)
            assert told.returncode == 0, told.stderr
            assert f"follows {address}" in told.stdout
            until_streaming(address, "c")


def test_replikv_follow_at_a_primary_is_refused_and_switches_nothing_over(
    tmp_path: Path,
) -> None:
    """Each operator request goes where it belongs: a follow sent to a primary's port was
    taken for a switchover to a replica named after the request."""
    store = replikv.Store(tmp_path / "a")
    token = ENV["REPLIKV_TOKEN"]
    with (
        replikv.Primary(store, token=token) as primary,
        replikv.Replica(
            tmp_path / "b",
            primary=primary.address,
            name="follow",
            listen="127.0.0.1:0",
            token=token,
        ) as replica,
    ):
        until_streaming(primary.address, "follow")
        told = command("follow", primary.address, "--primary", "127.0.0.1:1")
        assert told.returncode == 1
        assert "this is a primary, which follows nobody" in told.stderr
        assert replica.promoted is None and store.epoch == 1
        assert store.put("t", "k", 1).lsn == 1
        # And a switchover asked at a replica's member address is refused there.
        asked = command("switchover", str(replica.listen_address), "--to", "follow")
        assert asked.returncode == 1
        assert "a switchover is asked at the primary's own address" in asked.stderr
        assert replica.promoted is None and store.epoch == 1


def test_replikv_switchover_hands_the_log_over_and_the_old_primary_follows(
    tmp_path: Path,
) -> None:
    with replikv.Store(tmp_path / "a") as store:
        store.put_many("consent", [(f"user{i}", {"opted_in": True}) for i in range(300)])
        checksum = store.checksum()
    args = ("--listen", "127.0.0.1:0", "--quorum", "1", "--sync-tables", "consent")
    with running("primary", "--data", str(tmp_path / "a"), *args) as a:
        address = re.search(r"on (127\.0\.0\.1:\d+)", first_line(a)).group(1)  # type: ignore[union-attr]
        members = ("--primary", address, "--listen", "127.0.0.1:0", "--status-every", "0")
        with (
            running("replica", "--data", str(tmp_path / "b"), "--name", "b", *members) as b,
            running("replica", "--data", str(tmp_path / "c"), "--name", "c", *members) as c,
        ):
            b_address = member_address(b)
            member_address(c)
            until_streaming(address, "b", "c")

            switched = command("switchover", address, "--to", "b")
            assert switched.returncode == 0, switched.stderr
            assert f"b is the primary now, at {b_address}" in switched.stdout
            assert "promoted by a switchover" in first_line(b)
            assert "handed over to 'b'" in first_line(a)
            # The old primary (now replica "a") and c follow b; the data is all there.
            status = until_streaming(b_address, "a", "c")
            assert "epoch 2," in status, status
    with replikv.Store(tmp_path / "b") as promoted:
        assert promoted.checksum() == checksum
        assert promoted.epoch_history[-1][0] == 2


def test_replikv_switchover_to_a_replica_that_is_not_connected_is_refused_and_the_primary_serves_on(
    tmp_path: Path,
) -> None:
    with running("primary", "--data", str(tmp_path / "a"), "--listen", "127.0.0.1:0") as a:
        address = re.search(r"on (127\.0\.0\.1:\d+)", first_line(a)).group(1)  # type: ignore[union-attr]
        following = ("--primary", address, "--status-every", "0")
        with running("replica", "--data", str(tmp_path / "b"), "--name", "b", *following):
            until_streaming(address, "b")

            refused = command("switchover", address, "--to", "nobody", "--timeout", "10")
            assert refused.returncode == 1, refused.stdout
            assert '"nobody" is not connected' in refused.stderr, refused.stderr
            assert a.poll() is None, "the primary serves on"
            status = until_streaming(address, "b")
            assert "1 refused connection(s)" in status, status
