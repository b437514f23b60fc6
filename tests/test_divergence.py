"""Divergence (DESIGN guarantees 4 and 6): a replica whose history is not its primary's is
never merged; it stops with the loss account, or, only when asked, keeps its local-only
entries in a report file and re-seeds. Real sockets and processes on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import replikv
from polling import eventually

TOKEN = "t0ken"


def resynced(replica: replikv.Replica, lsn: int) -> None:
    """Waits (bounded) until the replica resynced and applied `lsn` of its primary: its own
    store already had an LSN that high before the resync."""
    eventually("the resync", lambda: replica.status().resyncs > 0)
    assert replica.wait_for(lsn, timeout=30)


def diverged_dir(path: Path) -> Path:
    """A store with three entries of its own history (another lineage than any primary)."""
    with replikv.Store(path) as other:
        other.put("subscribers", "ana@example.com", {"opted_in": False})
        other.put("events", 7, b"\x00\xff")
        with other.transaction() as tx:
            tx.put("subscribers", "bob@example.com", {"opted_in": True})
            tx.delete("events", 7)
    return path


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[replikv.Primary]:
    store = replikv.Store(tmp_path / "primary")
    store.put("subscribers", "ana@example.com", {"opted_in": True})
    with replikv.Primary(store, token=TOKEN, ship_interval=0.01) as p:
        yield p
    store.close()


def test_a_diverged_replica_stops_with_the_loss_account_and_merges_nothing(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    path = diverged_dir(tmp_path / "replica")
    with replikv.Replica(path, primary=primary.address, token=TOKEN, name="eu-1") as replica:
        with pytest.raises(replikv.DivergedError) as raised:
            replica.wait_for(primary.store.last_lsn + 5, timeout=30)
        error = raised.value
        assert (error.fork_lsn, error.entries) == (1, 3)
        assert error.tables == {
            "subscribers": ["ana@example.com", "bob@example.com"],
            "events": [7],
        }
        assert "3 local-only entries" in str(error) and "resync" in str(error)
        status = replica.status()
        assert status.state == "failed"
        assert status.diverged == {
            "fork_lsn": 1,
            "last_lsn": 3,
            "entries": 3,
            "tables": error.tables,
        }
        assert replica.store.get("subscribers", "ana@example.com") == {"opted_in": False}


def test_a_diverged_replica_refuses_read_your_writes_even_at_an_lsn_it_holds(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    # The replica holds LSNs 1 to 3 of another history; the primary wrote LSN 1 only.
    path = diverged_dir(tmp_path / "replica")
    with replikv.Replica(path, primary=primary.address, token=TOKEN, name="eu-1") as replica:
        eventually("the fork found", lambda: replica.status().diverged is not None)
        lsn = primary.store.last_lsn
        assert replica.store.last_lsn >= lsn, "the LSN is applied here: in another history"
        for read in (
            lambda: replica.wait_for(lsn, timeout=5),
            lambda: replica.get("subscribers", "ana@example.com", min_lsn=lsn),
            lambda: replica.get("subscribers", "ana@example.com"),
        ):
            with pytest.raises(replikv.DivergedError, match="forks from the primary's") as raised:
                read()
            assert (raised.value.fork_lsn, raised.value.entries) == (1, 3)
            said = str(raised.value)
            assert said.count("forks") == 1, said  # said once, not restated
            assert "3 local-only entries (LSN 1 to 3)" in said, said
        # The store itself still reads what it holds, for a person to look at.
        assert replica.store.get("subscribers", "ana@example.com") == {"opted_in": False}
        # Promoted (forced: no heartbeat said who else holds what), its store is the new
        # primary's, and its reads are what that primary holds.
        new = replica.promote(force=True)
        assert replica.status().state == "promoted"
        assert replica.get("subscribers", "ana@example.com") == {"opted_in": False}
        assert replica.wait_for(lsn, timeout=5)
        new.close()
        new.store.close()


def test_an_lsn_held_before_the_primary_checked_the_history_is_not_the_primarys(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    # Both hold LSNs 1 to 3, of other histories: until the handshake compares them, the
    # replica's LSN 3 is not the primary's, so a read-your-writes wait must not end on it.
    primary.store.put("consent", "ana@example.com", True)
    primary.store.put("consent", "bob@example.com", True)
    path = diverged_dir(tmp_path / "replica")
    with replikv.Replica(path, primary=primary.address, token=TOKEN, name="eu-1") as replica:
        with pytest.raises(replikv.DivergedError):
            replica.wait_for(3, timeout=30)
        with pytest.raises(replikv.DivergedError):
            replica.get("consent", "ana@example.com", min_lsn=3, timeout=30)
    # Nothing to compare at LSN 0: a read without min_lsn does not wait for the primary.
    with replikv.Replica(path, primary="127.0.0.1:9", token=TOKEN, name="eu-1") as away:
        assert away.get("subscribers", "ana@example.com", timeout=0) == {"opted_in": False}
        with pytest.raises(replikv.ReplicationTimeout, match="has not checked its history"):
            away.get("subscribers", "ana@example.com", min_lsn=1, timeout=0.2)


def test_a_resync_keeps_the_local_only_entries_in_a_report_and_re_seeds(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    path = diverged_dir(tmp_path / "replica")
    with replikv.Replica(
        path, primary=primary.address, token=TOKEN, name="eu-1", on_diverge="resync"
    ) as replica:
        resynced(replica, primary.store.last_lsn)
        assert replica.store.checksum() == primary.store.checksum()
        status = replica.status()
        assert status.resyncs == 1 and status.diverged is None
        last = status.last_resync
        assert last is not None
        assert (last["fork_lsn"], last["entries"]) == (1, 3)
        report = replikv.read_diverged(last["report"])
    assert last is not None and Path(last["report"]).parent == path / "diverged"
    assert len(report) == 3 and [c.lsn for c in report] == [1, 2, 3]
    assert report.primary == primary.address and report.fork_lsn == 1
    assert primary.store.epoch_history == [(1, 1)] and primary.store.epoch == 1
    assert report.tables == last["tables"]
    assert "3 entries (LSN 1 to 3)" in repr(report)
    lines = tmp_path / "lost.jsonl"
    assert report.to_json_lines(lines) == 4
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert rows[1]["key"] == 7 and rows[1]["value"] == {"$base64": "AP8="}
    assert rows[3] == {
        "lsn": 3,
        "epoch": 1,
        "timestamp": rows[3]["timestamp"],
        "table": "events",
        "key": 7,
        "op": "delete",
        "value": None,
    }


def test_a_damaged_report_is_refused_whole(primary: replikv.Primary, tmp_path: Path) -> None:
    path = diverged_dir(tmp_path / "replica")
    with replikv.Replica(
        path, primary=primary.address, token=TOKEN, name="eu-1", on_diverge="resync"
    ) as replica:
        resynced(replica, primary.store.last_lsn)
        last = replica.status().last_resync
        assert last is not None
        report = Path(last["report"])
    damaged = bytearray(report.read_bytes())
    damaged[-3] ^= 0x10
    (tmp_path / "damaged.rkvd").write_bytes(bytes(damaged))
    with pytest.raises(replikv.CorruptionError):
        replikv.read_diverged(tmp_path / "damaged.rkvd")
    with pytest.raises(replikv.CorruptionError):
        replikv.read_diverged(__file__)
    with pytest.raises(ValueError, match="on_diverge"):
        replikv.Replica(tmp_path / "r2", primary=primary.address, on_diverge="merge")  # type: ignore[arg-type]


def test_replikv_replica_resync_keeps_the_report_and_follows(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    path = diverged_dir(tmp_path / "replica")
    command = [sys.executable, "-m", "replikv", "replica", "--data", str(path)]
    command += ["--primary", primary.address, "--token", TOKEN, "--resync"]
    child = subprocess.Popen([*command, "--status-every", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert child.stdout is not None
        while not any(line.startswith("resynced:") for line in lines):
            assert time.monotonic() < deadline, lines
            lines.append(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=30)
    resynced = next(line for line in lines if line.startswith("resynced:"))
    assert "3 local-only entries from LSN 1 kept in" in resynced
    report = resynced.rsplit(" kept in ", 1)[1].strip()
    assert len(replikv.read_diverged(report)) == 3
    assert child.returncode == 0
