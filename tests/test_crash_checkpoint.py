"""A writer killed with SIGKILL while the background checkpointer is writing redb loses no
write it reported as returned, and no bulk batch is half there after the reopen."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import replikv
from children import rest_of_output

WRITER = Path(__file__).with_name("checkpoint_writer.py")
ROUNDS = 8
BULK_ROWS = 5_000
THREAD = "replikv-checkpo"  # the checkpointer's name, as /proc shows it (15 characters)


def checkpointer_busy(pid: int) -> bool:
    """Whether the child's checkpoint thread is running or in disk I/O (state R or D) or
    used CPU time over the last 50 ms: it is writing redb, not waiting for work."""

    def sample() -> tuple[str, int] | None:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                if (task / "comm").read_text().strip() != THREAD:
                    continue
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            return fields[0], int(fields[11]) + int(fields[12])  # state, utime + stime
        return None

    first = sample()
    time.sleep(0.05)
    second = sample()
    if first is None or second is None:
        return False
    return first[0] in "RD" or second[0] in "RD" or second[1] > first[1]


def run_until_killed(
    path: Path, round_: int, rng: random.Random
) -> tuple[dict[str, list[int]], bool]:
    """Runs the writer until its first bulk batch returned, then kills it: in even rounds
    after a random pause, in odd ones as soon as its checkpointer is seen at work."""
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(round_), str(BULK_ROWS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first == "ready\n", child.stderr.read() if child.stderr else first
        # Progress first (a loaded disk may take a while over one batch), then the kill.
        while not lines or not lines[-1].startswith("bulk"):
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "the writer ended"
            lines.append(line)
        if round_ % 2:
            deadline = time.monotonic() + 10
            busy = False
            while not busy and time.monotonic() < deadline:
                busy = checkpointer_busy(child.pid)
        else:
            time.sleep(rng.uniform(0.0, 0.7))
            busy = checkpointer_busy(child.pid)
        child.send_signal(signal.SIGKILL)
        out, err = rest_of_output(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, err
    returned: dict[str, list[int]] = {"bulk": [], "single": []}
    for line in lines + out.splitlines(keepends=True):
        # The last line may be cut by the kill: only lines that ended were reported.
        if line.endswith("\n"):
            kind, number = line.split()
            returned[kind].append(int(number))
    return returned, busy


@pytest.mark.timeout(300)
def test_kill_9_during_a_background_checkpoint_loses_no_returned_write(tmp_path: Path) -> None:
    rng = random.Random(10)
    path = tmp_path / "db"
    returned: dict[int, dict[str, list[int]]] = {}
    busy_kills = 0
    for round_ in range(ROUNDS):
        returned[round_], busy = run_until_killed(path, round_, rng)
        busy_kills += busy
        assert returned[round_]["bulk"], "the writer must have made progress"
        with replikv.Store(path) as store:
            bulk = store.table("bulk")
            for done, writes in returned.items():
                last = writes["bulk"][-1]
                for k in range(last + 2):
                    rows = len(list(bulk.keys(prefix=f"r{done}-{k}-")))
                    # Returned: whole. The one in flight at the kill: whole or absent.
                    whole = (BULK_ROWS,) if k <= last else (0, BULK_ROWS)
                    assert rows in whole, (done, k, rows)
                for i in writes["single"]:
                    assert store.get("single", f"r{done}-{i}") == {"i": i}, (done, i)
    # The promise in the name needs kills that hit the checkpointer at work.
    assert busy_kills > 0, "no kill landed while the checkpointer was writing"
