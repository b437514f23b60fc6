"""Links slower than the timeouts: the time a frame spends on the wire, or a replica spends
installing a snapshot, is not silence. Over a rate-capped proxy on 127.0.0.1, each case
below once dropped the link when its timeout ran out and started the same work over, for
ever."""

from __future__ import annotations

from pathlib import Path

import replikv
from log_cuts import cut_behind_the_bulk, writes_going_on
from polling import eventually
from proxy import Proxy

TOKEN = "t0ken"
MiB = 1 << 20


def test_an_entry_that_takes_longer_than_the_idle_timeouts_to_arrive_still_arrives(
    tmp_path: Path,
) -> None:
    """16 MiB through a 2.5 MiB/s link: over 6 s on the wire, longer than the replica's
    5 s idle timeout and than the primary's 3 s stall timeout plus its 2 s allowance for
    16 MiB. Both sides saw bytes move the whole time; each took the wait for silence,
    dropped the link and started over, forever."""
    store = replikv.Store(tmp_path / "primary")
    with (
        replikv.Primary(store, token=TOKEN, ship_interval=0) as primary,
        Proxy(primary.address) as proxy,
        replikv.Replica(tmp_path / "r", primary=proxy.address, token=TOKEN) as replica,
    ):
        assert replica.wait_for(store.put("t", "first", 0).lsn, timeout=30)
        proxy.rate = 2.5 * MiB
        load = store.put_many("t", [(i, bytes([i]) * MiB) for i in range(16)])
        assert replica.wait_for(load.lsn, timeout=90)
        assert replica.store.get("t", 15) == bytes([15]) * MiB
        assert replica.status().connections == 1, replica.status().last_error
    store.close()


def test_a_snapshot_whose_tail_and_install_outlast_the_stall_timeout_is_installed_once(
    tmp_path: Path,
) -> None:
    """The primary has written the whole snapshot into its socket and waits for the
    replica's first ack, which the replica sends once the last rows have crossed a slow link
    and the snapshot is installed. With writes going on and a byte cap on the log, each drop
    there unpinned the log the replica needed, and the next connection took a new snapshot:
    a replica of a large store never finished joining."""
    store = replikv.Store(tmp_path / "primary", segment_bytes=4096)
    store.put_many("bulk", [(i, bytes([i % 256]) * 4096) for i in range(512)])
    with replikv.Primary(store, token=TOKEN, retain_bytes=8192, heartbeat_interval=0.05) as primary:
        cut_behind_the_bulk(store, primary)
        with (
            writes_going_on(store, pause=0.005) as stop_writing,
            Proxy(primary.address) as proxy,
            replikv.Replica(tmp_path / "r", primary=proxy.address, token=TOKEN) as replica,
        ):
            proxy.rate = 0.5 * MiB
            eventually("the snapshot", lambda: replica.status().snapshots >= 1, timeout=60)
            proxy.rate = 0
            stop_writing()
            assert replica.wait_for(store.last_lsn, timeout=30)
            assert replica.store.checksum() == store.checksum()
            status = replica.status()
            assert (status.snapshots, status.connections) == (1, 1), status.last_error
    store.close()


def delivered_then_lost(tmp_path: Path, attempt: int) -> bool:
    """A replica whose stalled link delivers a backlog at once, then ends: the primary is
    gone. Whether the backlog crossed (a closing socket may reset the link first); if it
    did, waits for what the replica applied to be durable."""
    store = replikv.Store(tmp_path / f"primary{attempt}")
    # The longest heartbeat interval, and so stall timeout (9 s): the burst must be in the
    # sockets before the primary drops the stalled link.
    primary = replikv.Primary(store, token=TOKEN, ship_interval=0, heartbeat_interval=2)
    with (
        Proxy(primary.address) as proxy,
        replikv.Replica(tmp_path / f"r{attempt}", primary=proxy.address, token=TOKEN) as replica,
    ):
        assert replica.wait_for(store.put("t", "first", 0).lsn, timeout=30)
        # The replica's acks meet a closed primary: its entries still arrive, then EOF.
        proxy.drain = True
        proxy.stalled = True
        # 120 entries of 25 rows: as many single puts took longer than the stall timeout
        # on a loaded machine, one fsync each.
        for start in range(0, 3000, 25):
            store.put_many("t", [(i, {"n": i, "pad": "x" * 256}) for i in range(start, start + 25)])
        # Shipped into the sockets before the primary goes: the stalled link holds it.
        eventually(
            "the backlog shipped",
            lambda: primary.status().replicas[0].sent_lsn == store.last_lsn,
            timeout=30,
        )
        primary.close()
        proxy.stalled = False
        eventually(
            "the replica to lose its primary",
            lambda: replica.status().state in ("connecting", "disconnected"),
            timeout=30,
        )
        delivered = replica.status().applied_lsn > 1
        if delivered:
            eventually(
                f"attempt {attempt}: what it applied to be durable",
                lambda: replica.status().flushed_lsn == replica.status().applied_lsn,
                timeout=10,
            )
    store.close()
    return delivered


def test_what_a_replica_applied_before_its_primary_vanished_becomes_durable(
    tmp_path: Path,
) -> None:
    """The replica applies the burst with its syncs running beside the appends, and its
    last appends came after its last sync began. Its flushed LSN stayed behind its applied
    one for good, as nothing synced them: the next session's sync never came."""
    delivered = sum(delivered_then_lost(tmp_path, attempt) for attempt in range(8))
    assert delivered >= 2, f"the backlog reached the replica in {delivered} attempts of 8"


def test_a_snapshot_cut_off_midway_no_longer_shows_as_arriving(tmp_path: Path) -> None:
    """A link lost while a snapshot arrived left `snapshot_progress` at its last figure,
    as if rows still came, for as long as the replica stayed disconnected."""
    store = replikv.Store(tmp_path / "primary", segment_bytes=4096)
    store.put_many("bulk", [(i, bytes([i % 256]) * 4096) for i in range(512)])
    with replikv.Primary(store, token=TOKEN, retain_bytes=8192) as primary:
        cut_behind_the_bulk(store, primary)
        with (
            Proxy(primary.address) as proxy,
            replikv.Replica(tmp_path / "r", primary=proxy.address, token=TOKEN) as replica,
        ):
            proxy.rate = 0.25 * MiB
            eventually(
                "rows arriving",
                lambda: (replica.status().snapshot_progress or (0, 0))[0] > 0,
                timeout=60,
            )
            proxy.cut()
            eventually(
                "the link lost",
                lambda: replica.status().state in ("connecting", "disconnected"),
                timeout=30,
            )
            assert replica.status().snapshot_progress is None
            assert replica.status().snapshots == 0
    store.close()
