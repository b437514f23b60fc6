"""``replikv changes --follow`` on a store that another process holds and writes: every
committed entry is printed once, in LSN order, and nothing past the last commit (a
transaction left pending writes nothing to the log; the records the reader withholds until
they are whole and valid are tested in src/log/tail_tests.rs)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from children import ctrl_c_as_from_a_terminal

TIMEOUT = 60
WORKERS = 4
PUTS_PER_WORKER = 40
#: Big enough that the writes fill the first 1 MiB segment and the log rolls meanwhile.
VALUE_BYTES = 8 * 1024
FOLLOW = ("--since", "0", "--follow", "--poll", "0.05")

WRITER = """
import json, sys, threading, time, replikv
store = replikv.Store(sys.argv[1])
workers, puts, size = map(int, sys.argv[2:5])
store.put("events", "first", {"worker": -1})
print("ready", flush=True)
sys.stdin.readline()
committed = {}
lock = threading.Lock()
def write(worker):
    for index in range(puts):
        key = f"{worker}-{index}"
        receipt = store.put("events", key, {"worker": worker, "pad": "x" * size})
        with lock:
            committed[receipt.lsn] = key
threads = [threading.Thread(target=write, args=(w,)) for w in range(workers)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(committed), flush=True)
with store.transaction() as transaction:
    transaction.put("events", "never-committed", {"worker": -2})
    print("pending", flush=True)
    time.sleep(120)
"""


class Lines:
    """The lines a process writes to ``stream``, gathered by a thread so that waiting for
    one is bounded in time."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self.queue.put(line)
        self.queue.put(None)

    def next(self) -> str:
        """The next line; fails if the process ends first or none comes in time."""
        line = self.queue.get(timeout=TIMEOUT)
        assert line is not None, "the process ended early"
        return line

    def rest(self) -> list[str]:
        """Every line up to the end of the stream (once its process has ended)."""
        self.thread.join(timeout=TIMEOUT)
        lines = []
        while (line := self.queue.get(timeout=TIMEOUT)) is not None:
            lines.append(line)
        return lines

    def close(self) -> None:
        """Closes the stream once its process has ended and the thread has read it all."""
        self.thread.join(timeout=TIMEOUT)
        self.stream.close()


def test_follow_prints_every_committed_entry_of_a_held_store_once_in_order(
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "store"
    sizes = (WORKERS, PUTS_PER_WORKER, VALUE_BYTES)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store_dir), *map(str, sizes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    written = Lines(writer.stdout)
    follower: subprocess.Popen[str] | None = None
    printed_lines: Lines | None = None
    try:
        assert written.next() == "ready\n"
        follower = subprocess.Popen(
            [sys.executable, "-m", "replikv", "changes", str(store_dir), *FOLLOW],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=ctrl_c_as_from_a_terminal,
        )
        assert follower.stdout is not None
        printed_lines = Lines(follower.stdout)
        printed: list[dict[str, Any]] = [json.loads(printed_lines.next())]
        assert printed[0]["lsn"] == 1, "the follower runs before the writes start"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        committed = {int(lsn): key for lsn, key in json.loads(written.next()).items()}
        assert written.next() == "pending\n"
        last = max(committed)
        while printed[-1]["lsn"] < last:
            printed.append(json.loads(printed_lines.next()))
        # Some more polls while a transaction is pending: it is not in the log, so they
        # must print nothing.
        time.sleep(0.3)
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=TIMEOUT) == 0, "Ctrl-C ends --follow cleanly"
        printed += [json.loads(line) for line in printed_lines.rest()]
    finally:
        for process in (writer, follower):
            if process is not None:
                process.kill()
                process.wait(timeout=TIMEOUT)
        writer.stdin.close()
        for lines in (written, printed_lines):
            if lines is not None:
                lines.close()
    assert len(list((store_dir / "log").glob("*.seg"))) > 1, "the log rolled while followed"
    assert [entry["lsn"] for entry in printed] == list(range(1, last + 1))
    assert len(committed) == WORKERS * PUTS_PER_WORKER
    assert {entry["lsn"]: entry["ops"][0]["key"] for entry in printed[1:]} == committed
    assert all(entry["ops"][0]["key"] != "never-committed" for entry in printed)
