"""Ctrl-C during put_many: before the commit point it aborts with nothing written; after
it, the rows are stored and the exception says so and carries the receipt."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import replikv

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import replikv

    store = replikv.Store(sys.argv[1])
    profile = {"name": "x" * 40, "n": 7, "tags": ["a", "b"], "opted_in": True}

    rows = [(f"user{i}@example.com", profile) for i in range(int(sys.argv[2]))]
    said = []

    def progress(encoded):
        # Said from inside put_many, as it encodes (the signal cannot land before its
        # try), once chunks have gone into the open transaction.
        if not said and encoded >= 65536:
            said.append(encoded)
            print("encoding", flush=True)

    started = time.monotonic()
    outcome = {}
    try:
        outcome["receipt"] = store.put_many("subscribers", rows, progress=progress).lsn
    except KeyboardInterrupt as interrupt:
        outcome["interrupted"] = True
        receipt = getattr(interrupt, "receipt", None)
        outcome["receipt_on_exception"] = receipt.lsn if receipt else None
    outcome["seconds"] = time.monotonic() - started
    outcome["last_lsn"] = store.last_lsn
    store.close()
    print(json.dumps(outcome), flush=True)
    """
)


def test_ctrl_c_while_put_many_encodes_aborts_with_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "db"
    # Enough rows that encoding the rest takes seconds after "encoding" (so the signal
    # lands while they encode), and few enough to stay under max_transaction_bytes (a
    # missed signal then shows as a receipt).
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "2500000"],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "encoding"
            child.send_signal(signal.SIGINT)
            outcome = json.loads(child.stdout.readline())
            assert child.wait(timeout=60) == 0
        finally:
            child.kill()
    assert outcome["interrupted"], outcome
    # Nothing was committed: no receipt anywhere, no LSN taken, nothing on disk.
    assert outcome["receipt_on_exception"] is None
    assert outcome["last_lsn"] == 0
    with replikv.Store(path) as reopened:
        assert reopened.last_lsn == 0
        assert reopened.count("subscribers") == 0
